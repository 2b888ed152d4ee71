"""The per-worker runtime: both stages, the timers' bodies, dead letters, health, lifecycle.

    packets (raw, by source) --ingest.IngestStage--> stage 1 windows (table `src-records`)
      --close--> `<app id>-scorer-flows` (internal, by destination)
      --collect.CollectStage--> stage 2 windows (table `dst-chunks`)
      --close--> one batched model call --> verdicts
    models (compacted, every record, no group) --modelfeed.ModelFeed--> which model scores
      which window (rollout.ModelSchedule); shadow reports back to `models`

`Scorer` is a mode Service started and stopped with the faust worker (app.create_app wires it
to the agents and timers). It owns no window logic: it routes records to the stages, runs the
two timers' passes (skipped while partitions are about to move), forgets revoked partitions,
and keeps a timer that races the worker's stop from crashing it.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass

import faust
import mode

from services.common.settings import CommonSettings
from services.wire.codec import encode_deadletter

from . import faust_internals
from .collect import CollectStage
from .ingest import IngestStage
from .metrics import ScorerHealth, ScorerMetrics
from .modelfeed import ModelFeed
from .rollout import ModelSchedule
from .scoring import VerdictPolicy
from .settings import ScorerSettings
from .tables import DestChunks, SourceRecords

log = logging.getLogger("xdpguard.scorer")


def tune_collector(young: int) -> None:
    """Set up the cyclic garbage collector for a worker, once, after start-up (imports, model
    and app made): collect, then `gc.freeze()` what is alive (modules, the model: never
    traversed again), and collect the young generation every `young` net new container objects
    instead of 700 (older generations keep Python's ratios, 10 and 10; `young` 0 keeps Python's
    thresholds). With Python's 700, a window's hundred thousand flow states (a list each) made
    the collector traverse the windows again and again while they filled: 0.7-0.9 CPU s of a
    4.6 s pass of bench/pipeline_bench.py (docs/benchmarks.md, issue 17 fifth change). Garbage
    cycles still go, at most `young` objects later; objects freed by reference counting (nearly
    all here) never wait for the collector."""
    gc.collect()
    gc.freeze()
    if young > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young, older, oldest)


@dataclass(frozen=True)
class ScorerTopics:
    """The faust topics and tables of one app (built by app.create_app)."""
    packets: faust.TopicT
    flows: faust.TopicT      # `<app id>-scorer-flows`, internal, by destination
    verdicts: faust.TopicT
    dead: faust.TopicT
    models: faust.TopicT     # the compacted `models` topic (shadow reports are written to it)
    src_table: faust.Table   # `src-records`
    dst_table: faust.Table   # `dst-chunks`


class Scorer(mode.Service):
    """One worker's runtime around the two stage adapters (`ingest`, `collect`)."""

    def __init__(self, app: faust.App, topics: ScorerTopics, s: ScorerSettings,
                 common: CommonSettings, detector, policy: VerdictPolicy, **kwargs) -> None:
        super().__init__(**kwargs)
        self.app, self.topics, self.s = app, topics, s
        n = common.packets_partitions
        self.metrics = ScorerMetrics()
        self.models = ModelFeed(common, ModelSchedule(detector, int(s.window_s * 1e9)),
                                str(app.conf.broker_client_id), s.model_lead_s, self.metrics,
                                lambda: self.collect.scored_upto, self.dead_letter,
                                self._send_report)
        self.ingest = IngestStage(app, s, n, detector, topics.packets, topics.flows,
                                  SourceRecords(topics.src_table), self.metrics, self.dead_letter)
        self.collect = CollectStage(s, n, self.models, policy, topics.flows, topics.verdicts,
                                    DestChunks(topics.dst_table), self.metrics, self.dead_letter)
        self.health = ScorerHealth(app, s, self.metrics, self.ingest, self.collect)
        self.fetch_wait_set = False  # SCORER_FETCH_WAIT_S applied to the running consumer
        app.on_partitions_revoked.connect(self._on_revoked)

    # --- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        await self.health.start()
        await self.models.start()

    async def on_stop(self) -> None:
        await self.models.stop()
        await self.health.stop()

    async def _send_report(self, key: bytes, value: bytes) -> None:
        await self.topics.models.send(key=key, value=value)

    def stopping(self) -> bool:
        """True once the worker is shutting down (app, this service or the producer)."""
        return bool(self.app.should_stop or self.should_stop
                    or faust_internals.producer_stopping(self.app))

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        # The next owner restores these from the changelog; our copy would go stale.
        for tp in revoked:
            if tp.topic == self.ingest.topic_name:
                self.ingest.revoke(tp.partition)
            elif tp.topic == self.collect.topic_name:
                self.collect.revoke(tp.partition)

    # --- timers ------------------------------------------------------------------------------
    async def tick_safely(self) -> None:
        await self._safely(self.tick)

    async def marks_safely(self) -> None:
        await self._safely(self.repeat_marks)

    async def _safely(self, body) -> None:
        """A timer's body. A tick racing the worker's stop used to hit the stopped producer
        (NotReady): faust marked the app crashed and the worker exited 1 on a plain SIGTERM.
        Errors during shutdown end the tick quietly; other errors still crash the worker."""
        if self.stopping():
            return
        try:
            await body()
        except Exception as exc:
            if not self.stopping():
                raise
            log.info("%s cut short by shutdown (%s: %s)", body.__name__, type(exc).__name__, exc)

    async def repeat_marks(self) -> None:
        """Re-announce every owned packets partition's progress. Its own timer, because stage 2
        takes a source partition silent for SCORER_CLOSE_WAIT_S for orphaned: when only the
        closing timer repeated the marks of quiet partitions, one slow tick (a 1.4 s model call
        on a loaded machine) made live partitions look dead and their windows closed early."""
        if faust_internals.settling(self.app):
            return
        await self.ingest.repeat_marks()
        await self.collect.repeat_marks()

    async def tick(self) -> None:
        """The close-windows pass: restore owned partitions that get no traffic (so their
        windows close too), close both stages' due windows, refresh the gauges."""
        if not self.fetch_wait_set:
            self.fetch_wait_set = faust_internals.fetch_wait(self.app, self.s.fetch_wait_s)
        if faust_internals.settling(self.app):
            return
        for tp in faust_internals.assigned_actives(self.app):
            if tp.topic == self.ingest.topic_name and tp.partition not in self.ingest.sources:
                self.ingest.restore(tp.partition)
            elif tp.topic == self.collect.topic_name and tp.partition not in self.collect.dests:
                self.collect.partition(tp.partition)
        await self.ingest.close_all()
        await self.collect.close()
        self.health.refresh_gauges()

    # --- dead letters ------------------------------------------------------------------------
    async def dead_letter(self, topic: str, partition: int, offset: int, reason: str,
                          raw: bytes) -> asyncio.Future:
        """Count and log an undecodable record and send it, with `reason`, to the dead-letter
        topic (docs/events.md). Returns the send (delivery.delivered)."""
        log.warning("%s[%d]@%d: %s -> dead letter", topic, partition, offset, reason)
        self.metrics.decode_errors.labels(topic).inc()
        return await self.topics.dead.send(value=encode_deadletter(topic, partition, offset,
                                                                   reason, raw, "scorer"))
