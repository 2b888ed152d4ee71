"""Adapter: the `models` topic -> this worker's ModelSchedule (rollout.py), and its shadow
report back to the topic.

Every worker reads the whole topic (one partition, no consumer group: each worker needs every
record) from the beginning, and again and again to its end: `known_until_ns` is the wall clock
at which it last found nothing unread, which stage 2 needs before it scores a window
(rollout.may_score). A record is decoded and its hash verified (wire/modelrec.py), its model
unpickled and sanity-checked in a thread (detection/model.load_model_bytes) and checked against
the schedule (rollout.ModelSchedule.check); a record failing any of these is refused: counted,
logged, dead-lettered with the reason, and the worker keeps the models it has.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.errors import DecodeError, ModelError
from services.common.settings import CommonSettings
from services.detection.model import load_model_bytes
from services.wire.kafka import client_options, stop_quietly
from services.wire.modelrec import (CANDIDATE, ShadowReport, decode_model_record, is_report_key)
from services.wire.topics import MODELS, MODELS_MAX_MESSAGE_BYTES

from .metrics import ScorerMetrics
from .rollout import ModelSchedule, RolloutRefused, may_score

log = logging.getLogger("xdpguard.scorer")
POLL_S = 0.25          # how often the topic is read to its end
REPORT_EVERY_S = 1.0   # a changed shadow report is published at most this often


class ModelFeed:
    """The models topic of one worker. `schedule`: what it builds; `scored_upto()`: the newest
    window start stage 2 has scored (-1: none); `dead(topic, partition, offset, reason, raw)`
    dead-letters a refused record; `send_report(key, value)` writes to the models topic;
    `lead_s`: SCORER_MODEL_LEAD_S (may_score)."""

    def __init__(self, common: CommonSettings, schedule: ModelSchedule, worker: str,
                 lead_s: float, metrics: ScorerMetrics, scored_upto: Callable[[], int],
                 dead: Callable[[str, int, int, str, bytes], Awaitable[None]],
                 send_report: Callable[[bytes, bytes], Awaitable[None]]) -> None:
        self.common, self.schedule, self.metrics, self.lead_s = common, schedule, metrics, lead_s
        self.topic = common.topic(MODELS)
        self.scored_upto, self.dead, self.send_report = scored_upto, dead, send_report
        self.report = ShadowReport(worker)
        self.known_until_ns = 0          # 0: not read to its end yet
        self._sent: bytes = b""
        self._sent_at = 0.0
        self._shown: dict[str, str] = {}   # role -> model_id on the model gauge
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._show(schedule.base, "active")

    def may_score(self, window_ns: int) -> bool:
        """Whether stage 2 may score window `window_ns` now (rollout.may_score)."""
        return may_score(window_ns, self.known_until_ns, self.lead_s)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **client_options(self.common), enable_auto_commit=False, group_id=None,
            max_partition_fetch_bytes=MODELS_MAX_MESSAGE_BYTES,
            fetch_max_bytes=MODELS_MAX_MESSAGE_BYTES)
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        self._task = asyncio.create_task(self._run(tp), name="models-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._consumer is not None:
            await stop_quietly(self._consumer)
            self._consumer = None

    async def _run(self, tp: TopicPartition) -> None:
        c = self._consumer
        assert c is not None
        while True:
            try:
                t0 = time.time_ns()
                end = (await c.end_offsets([tp]))[tp]
                while await c.position(tp) < end:
                    for records in (await c.getmany(tp, timeout_ms=500)).values():
                        for r in records:
                            await self.on_record(r.offset, r.key, r.value)
                self.known_until_ns = t0
                await self._publish_report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away for a while: windows wait, we retry
                log.warning("models topic: %s: %s (retrying)", type(exc).__name__, exc)
            await asyncio.sleep(POLL_S)

    async def on_record(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Apply one models record, or refuse it (see the module docstring)."""
        if is_report_key(key):
            return
        try:
            rec = decode_model_record(key, value)
            if rec is None:
                self.schedule.remove(key.decode())
                self._show(None, key.decode())
                return
            # Read at start-up, a record is history: others scored its windows with it already.
            self.schedule.check(rec, self.scored_upto() if self.known_until_ns else -1)
            det = None
            if rec.model is not None:
                det = await asyncio.get_running_loop().run_in_executor(
                    None, load_model_bytes, rec.model, rec.meta, f"{rec.role} record @{offset}")
                base = self.schedule.base
                if det.horizon_windows != base.horizon_windows:
                    raise RolloutRefused(f"model {rec.model_id} was trained with a horizon of "
                                         f"{det.horizon_windows} windows, the running stage 1 "
                                         f"builds rows with {base.horizon_windows}: restart the "
                                         "workers with it")
                if det.outage_memory_s != base.outage_memory_s:
                    raise RolloutRefused(f"model {rec.model_id} was trained with an outage memory "
                                         f"of {det.outage_memory_s:g} s, the running stages keep "
                                         f"{base.outage_memory_s:g} s: restart the workers with it")
        except (DecodeError, ModelError, RolloutRefused) as exc:
            await self._refuse(offset, key, value, str(exc))
            return
        self.schedule.apply(rec, det)
        self.metrics.model_records.labels("applied").inc()
        if rec.role == CANDIDATE and self.report.sha256 != rec.sha256:
            self.report = ShadowReport(self.report.worker, rec.sha256, rec.model_id,
                                       refused=self.report.refused,
                                       last_refusal=self.report.last_refusal)
        self._show(det or self.schedule.base, rec.role)
        log.info("models: %s %s from window %d", rec.role, rec.model_id, rec.from_ns)

    async def _refuse(self, offset: int, key: bytes | None, value: bytes | None,
                      reason: str) -> None:
        log.error("models topic offset %d (key %r) refused, the models in use stay: %s",
                  offset, key, reason)
        self.metrics.model_records.labels("refused").inc()
        self.report.refused += 1
        self.report.last_refusal = reason
        await self.dead(self.topic, 0, offset, f"model record refused: {reason}", value or b"")

    def _show(self, det, role: str) -> None:
        """Set the model gauge of `role` (cleared for a tombstone: det None)."""
        g = self.metrics.model_info
        if role in self._shown:
            g.remove(role, self._shown.pop(role))
        if det is not None:
            g.labels(role, det.model_id).set(1)
            self._shown[role] = det.model_id

    async def _publish_report(self) -> None:
        """Write this worker's report to the models topic when it changed (at most every
        REPORT_EVERY_S)."""
        if not (self.report.windows or self.report.refused):
            return
        value = self.report.encode()
        if value != self._sent and time.monotonic() - self._sent_at >= REPORT_EVERY_S:
            await self.send_report(self.report.key(), value)
            self._sent, self._sent_at = value, time.monotonic()
