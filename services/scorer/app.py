"""The faust adapter: topics, tables, agents and the closing timer around the pure stages.

    packets (raw, by source) --ingest--> stage 1 windows (table `src-records`: the raw records
        of open windows, keyed partition/offset, so a new owner replays them)
      --close--> `<app id>-scorer-flows` (internal, by destination) --collect--> stage 2 windows
        (table `dst-chunks`) --close--> one batched model call --> verdicts

Both tables are faust Tables with changelog topics; the adapter writes them through
`table.data` + an awaited send to `table.changelog_topic` (pinned partition) because windows close in a timer (outside
any stream event) and each key is pinned to the partition it belongs to. Restore is lazy: a
partition is rebuilt from its table the first time the worker touches it after an assignment.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import faust
import mode
import msgpack
from faust.types import TP

from services.wire.codec import decode_packet_columns, encode_deadletter, encode_verdict
from services.common.errors import ConfigError, DecodeError
from services.detection.features import SourceHorizon
from services.common.health import HealthServer
from services.common.settings import CommonSettings
from services.wire.topics import (DEADLETTER, PACKETS, VERDICTS, TopicSpec, ensure_topics,
                                    topic_specs)

from .metrics import ScorerMetrics
from .scoring import Policy, score_windows, verdicts_for
from .settings import ScorerSettings
from .windows import DstPartition, FlowChunk, SourcePartition

log = logging.getLogger("xdpguard.scorer")
RAW = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
TABLE_RAW = dict(key_type=bytes, value_type=bytes)  # bytes types make faust use the raw codec
# Closed windows leave tombstones: let compaction drop them quickly so restores stay short.
MARK_REPEAT_S = 0.5  # progress marks repeat: stage 2 tells a busy partition from an orphaned one
CHANGELOG_CONFIG = {"segment.ms": "60000", "min.cleanable.dirty.ratio": "0.05",
                    "delete.retention.ms": "60000"}


class ScorerWorker(faust.Worker):
    """faust's worker with the scorer's signal contract: the first SIGTERM/SIGINT is a clean
    stop (exit 0), a second one while stopping exits at once (status 1). faust/mode ignore
    repeated signals, so a stop stuck on the broker could only be ended with SIGKILL."""

    def _force_if_repeated(self) -> None:
        if self._signal_stop_time:
            log.warning("second stop signal while stopping: exiting now")
            logging.shutdown()
            os._exit(1)

    def _on_sigterm(self) -> None:
        self._force_if_repeated()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._force_if_repeated()
        super()._on_sigint()


def faust_settings(s: ScorerSettings, common: CommonSettings) -> dict:
    opts = dict(
        Worker=ScorerWorker,
        broker=[f"kafka://{h.strip()}" for h in common.kafka_bootstrap.split(",") if h.strip()],
        store="memory://", topic_partitions=common.packets_partitions,
        topic_replication_factor=common.replication_factor,
        table_standby_replicas=s.standby_replicas,
        # DESIGN/issue 5: faust's 60 s defaults made every join take ~30 s (docs/scorer.md).
        broker_session_timeout=s.session_timeout_s, broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_heartbeat_interval=s.heartbeat_s,
        consumer_auto_offset_reset=s.offset_reset, web_enabled=s.web_port > 0,
        producer_acks=-1, key_serializer="raw", value_serializer="raw",
        # Waiting for stream buffers to drain at a rebalance stalled workers under a backlog
        # (bench/scorer_bench.py); our state does not need it: every record is idempotent by
        # offset and the new owner restores from the tables.
        stream_wait_empty=False)
    if s.web_port > 0:
        opts["web_port"] = s.web_port
    if s.datadir:
        opts["datadir"] = s.datadir
    creds = _credentials(common)
    if creds is not None:
        opts["broker_credentials"] = creds
    return opts


def _credentials(common: CommonSettings):
    if common.security_protocol == "PLAINTEXT":
        return None
    from services.wire.kafka import client_options
    ssl_context = client_options(common).get("ssl_context")
    if common.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=common.sasl_username, password=common.sasl_password,
                                     mechanism=common.sasl_mechanism or "PLAIN",
                                     ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


class Scorer(mode.Service):
    """Per-worker runtime: stage states, closing, scoring, publishing, metrics."""

    def __init__(self, app: faust.App, s: ScorerSettings, common: CommonSettings, detector,
                 policy: Policy, **kwargs) -> None:
        super().__init__(**kwargs)
        self.app, self.s, self.common, self.detector, self.policy = app, s, common, detector, policy
        self.n = common.packets_partitions
        self.width_ns = int(s.window_s * 1e9)
        self.metrics = ScorerMetrics()
        self.packets_topic = app.topic(common.topic(PACKETS), partitions=self.n, **RAW)
        self.flows_topic = app.topic(f"{app.conf.id}-scorer-flows", partitions=self.n,
                                     internal=True, **RAW)
        self.verdicts_topic = app.topic(common.topic(VERDICTS), **RAW)
        self.dead_topic = app.topic(common.topic(DEADLETTER), **RAW)
        self.src_table = app.Table("src-records", partitions=self.n,
                                   extra_topic_configs=CHANGELOG_CONFIG, **TABLE_RAW)
        self.dst_table = app.Table("dst-chunks", partitions=self.n,
                                   extra_topic_configs=CHANGELOG_CONFIG, **TABLE_RAW)
        self.sources: dict[int, SourcePartition] = {}
        self.dests: dict[int, DstPartition] = {}
        self.seen: dict[int, int] = {}  # packets partition -> newest offset folded in
        self.announced: dict[int, tuple[int, float]] = {}  # packets partition -> (progress, when)
        self.health: HealthServer | None = None
        self.started_at = time.time()
        app.on_partitions_revoked.connect(self._on_revoked)

    # --- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        if self.s.metrics_port:
            self.health = HealthServer(self.metrics.registry, self.healthy,
                                       host=self.s.metrics_host, port=self.s.metrics_port)
            await self.health.start()

    async def on_stop(self) -> None:
        if self.health is not None:
            await self.health.stop()

    def stopping(self) -> bool:
        """True once the worker is shutting down (app, this service or the producer)."""
        if self.app.should_stop or self.should_stop:
            return True
        producer = getattr(self.app, "_producer", None)
        return producer is not None and producer.should_stop

    def healthy(self) -> tuple[bool, str]:
        now_ns = time.time_ns()
        return True, json.dumps({
            "app": self.app.conf.id, "packets_partitions": sorted(self.sources),
            "flows_partitions": sorted(self.dests), "rebalancing": bool(self.app.rebalancing),
            "open_windows": sum(len(p.windows) for p in self.sources.values()),
            "open_dest_windows": sum(len(q.windows) for q in self.dests.values()),
            # What holds windows open: each owned packets partition's event-time lag behind this
            # host's clock and the progress it last announced.
            "sources": {p: {"lag_s": round((now_ns - part.watermark()) / 1e9, 3)
                            if part.max_ts else None,
                            "unread": self._unread(self._packets_tp(p)) or 0,
                            "open": len(part.windows),
                            "polled_s_ago": round(time.monotonic() - part.polled_at, 3)
                            if part.polled_at is not None else None,
                            "announced_lag_s": round((now_ns - self.announced[p][0]) / 1e9, 3)
                            if p in self.announced else None}
                        for p, part in sorted(self.sources.items())},
            "uptime_s": round(time.time() - self.started_at, 1)})

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        # The next owner restores these from the changelog; our copy would go stale.
        for tp in revoked:
            if tp.topic == self.packets_topic.get_topic_name():
                self.sources.pop(tp.partition, None)
                self.announced.pop(tp.partition, None)
            elif tp.topic == self.flows_topic.get_topic_name():
                self.dests.pop(tp.partition, None)
        self.metrics.partitions.set(len(self.sources))

    # --- table helpers ----------------------------------------------------------------------
    @staticmethod
    async def _put(table, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        # Straight to the producer: faust's send_soon buffer makes the fetcher wait for it to
        # drain, which deadlocked workers that rebalanced under a backlog.
        await table.changelog_topic.send(key=key, value=value, partition=partition)

    @staticmethod
    def _keys(table, partition: int) -> list[bytes]:
        prefix = b"%d/" % partition
        return sorted(k for k in list(table.data.keys()) if k.startswith(prefix))

    # --- stage 1 ----------------------------------------------------------------------------
    def _source(self, p: int) -> SourcePartition:
        part = self.sources.get(p)
        if part is None:
            part = self._restore_source(p)
        return part

    def _restore_source(self, p: int) -> SourcePartition:
        part = self.sources[p] = SourcePartition(
            p, self.width_ns, int(self.s.lateness_s * 1e9), idle_ns=int(self.s.idle_s * 1e9),
            horizon=SourceHorizon(self.width_ns, self.detector.horizon_windows))
        seen, replayed = -1, 0
        hw = self.src_table.data.get(b"%d/hw" % p)
        if hw:
            part.closed_upto, seen = msgpack.unpackb(hw)
        for key in self._keys(self.src_table, p):
            if b"/r/" not in key:
                continue
            offset = int(key.rsplit(b"/", 1)[1])
            try:
                replayed += part.add(offset, decode_packet_columns(self.src_table.data[key]))
            except DecodeError:
                continue  # only decodable records are ever stored
            seen = max(seen, offset)
        self.seen[p] = seen
        self.metrics.partitions.set(len(self.sources))
        if replayed:
            log.info("packets partition %d: restored %d events in %d open windows", p, replayed,
                     len(part.windows))
        return part

    async def on_packets(self, partition: int, offset: int, value: bytes) -> None:
        part = self._source(partition)
        if offset <= self.seen.get(partition, -1):
            return  # already folded in before a restart/rebalance (restored from the table)
        self.seen[partition] = offset
        self.metrics.records.inc()
        try:
            cols = decode_packet_columns(value)
        except DecodeError as exc:
            await self._dead(self.packets_topic.get_topic_name(), partition, offset, str(exc), value)
            return
        late = part.late
        accepted = part.add(offset, cols)
        self.metrics.events.inc(accepted)
        if part.late != late:
            self.metrics.late.inc(part.late - late)
        if accepted:
            await self._put(self.src_table, partition, b"%d/r/%020d" % (partition, offset), value)
        self._update_backlog(partition, part)
        if part.due():
            await self._close_sources([partition])

    def _unread(self, tp: TP) -> int | None:
        """Records of packets partition `tp` fetched or known to exist but not folded in yet;
        None before its first fetch response (unknown)."""
        highwater = self.app.consumer.highwater(tp)
        if highwater is None:
            return None
        return max(0, highwater - self.seen.get(tp.partition, -1) - 1)

    def _packets_tp(self, p: int) -> TP:
        return TP(self.packets_topic.get_topic_name(), p)

    def _update_backlog(self, p: int, part: SourcePartition) -> None:
        # Not polled yet (just assigned): what waits in the partition is unknown, so it counts as
        # a backlog and the clock does not vouch for it.
        tp = self._packets_tp(p)
        unread = self._unread(tp)
        part.backlog = unread is None or unread > 0
        polled_ns = self._last_poll_ns(tp)
        part.polled_at = None if polled_ns is None else \
            time.monotonic() - max(0, time.time_ns() - polled_ns) / 1e9

    def _last_poll_ns(self, tp: TP) -> int | None:
        """Wall time of the newest fetch response for `tp` (aiokafka's last_poll_timestamp,
        reached through faust's consumer thread: faust has no public call for it). Caught up as
        of then means nothing more existed then; records appended since may still be unfetched
        (a busy worker's fetches came 0.3 s+ apart and its partitions closed windows early)."""
        try:
            ms = self.app.consumer._thread._ensure_consumer().last_poll_timestamp(tp)
        except Exception:  # not started, not assigned any more, or another faust: no bound
            return None
        return None if ms is None else ms * 1_000_000

    async def _close_sources(self, partitions) -> None:
        # Called by both the ingest agent and the timer, deliberately without a lock: a lock
        # over closing stalled ingestion behind a slow tick, and the stalled partitions'
        # watermarks then ran ahead on the wall clock (4 of 6 two-worker bench runs lost events
        # as late; docs/scorer.md "Closing"). Instead a window counts as being sent until all
        # its chunks are queued, and neither closer announces progress past it meanwhile.
        for p in partitions:
            part = self.sources.get(p)
            if part is None:
                continue
            due = part.due()
            for ws in due:
                if ws not in part.windows:
                    continue  # the other closer took it while this one was sending
                chunks, done = part.close(ws, self.n)
                try:
                    for c in chunks:
                        await self.flows_topic.send(key=c.key(), value=c.encode(),
                                                    partition=c.dst_partition)
                finally:
                    part.sent(ws)
                for off in done:
                    await self._put(self.src_table, p, b"%d/r/%020d" % (p, off), None)
                self.metrics.windows_closed.labels("source").inc()
            if due:
                await self._put(self.src_table, p, b"%d/hw" % p,
                          msgpack.packb([part.closed_upto, self.seen.get(p, -1)]))
            await self._announce(p, part)

    async def _announce(self, p: int, part: SourcePartition) -> None:
        """Tell every stage 2 partition how far source partition `p` has got (see windows)."""
        # A partition without events follows this worker's event clock (its busiest partition),
        # but never ahead of the wall clock: records of it may be in flight, stamped as late as
        # now, and a mark past their window would make stage 2 close it without them. Capture
        # clocks running ahead of this host's delay closing (by the skew) only while some
        # partition has had no event at all.
        now_ns, now = time.time_ns(), time.monotonic()
        event_clock = min(now_ns, max((pt.watermark() for pt in self.sources.values()
                                       if pt.max_ts), default=now_ns))
        if part.polled_at is not None:  # nor past the newest fetch response for it
            event_clock = min(event_clock, now_ns - int((now - part.polled_at) * 1e9))
        upto = part.progress(event_clock)
        last_upto, last_at = self.announced.get(p, (-1, 0.0))
        if upto <= last_upto and now - last_at < MARK_REPEAT_S:
            return
        self.announced[p] = (upto, now)
        value = msgpack.packb([p, upto])
        for q in range(self.n):
            await self.flows_topic.send(key=b"mark/%d" % p, value=value, partition=q)

    # --- stage 2 ----------------------------------------------------------------------------
    def _dest(self, q: int) -> DstPartition:
        part = self.dests.get(q)
        if part is None:
            part = self.dests[q] = DstPartition(q, self.width_ns, self.n, self.s.close_wait_s)
            hw = self.dst_table.data.get(b"%d/hw" % q)
            if hw:
                part.closed_upto, progress = msgpack.unpackb(hw)
                for p, upto in enumerate(progress):
                    part.mark(p, upto)
            for key in self._keys(self.dst_table, q):
                if b"/c/" in key:
                    try:
                        part.add(key, FlowChunk.decode(self.dst_table.data[key]))
                    except DecodeError:
                        continue
        return part

    async def on_chunk(self, partition: int, offset: int, key: bytes | None, value: bytes) -> None:
        part = self._dest(partition)
        if key and key.startswith(b"mark/"):
            try:
                src, upto = msgpack.unpackb(value)
                part.mark(int(src), int(upto))
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                await self._dead(self.flows_topic.get_topic_name(), partition, offset,
                                 f"bad progress mark: {exc}", value)
            return
        try:
            chunk = FlowChunk.decode(value)
        except DecodeError as exc:
            await self._dead(self.flows_topic.get_topic_name(), partition, offset, str(exc), value)
            return
        key = b"%d/c/%s" % (partition, chunk.key())
        if part.add(key, chunk):
            await self._put(self.dst_table, partition, key, value)
        else:
            self.metrics.late_flows.inc(len(chunk.flows))
            log.warning("flows partition %d: %d flows of window %d from packets partition %d "
                        "came after the window closed (source progress marks: %s)", partition,
                        len(chunk.flows), chunk.window_ns, chunk.src_partition, part.progress)

    async def _close_dests(self) -> None:
        closed = []
        for q, part in list(self.dests.items()):
            due = part.due()
            for ws in due:
                w = part.close(ws)
                for key in w.chunk_keys:
                    await self._put(self.dst_table, q, key, None)
                closed.append(w)
                self.metrics.windows_closed.labels("dest").inc()
            if due:
                await self._put(self.dst_table, q, b"%d/hw" % q,
                          msgpack.packb([part.closed_upto, part.progress]))
        closed = [w for w in closed if w.rows]
        if not closed:
            return
        t0 = time.perf_counter()
        # sklearn releases the GIL in places; a thread keeps heartbeats and ingestion going.
        all_scores = await asyncio.get_running_loop().run_in_executor(
            None, score_windows, self.detector, closed)
        self.metrics.scoring_seconds.observe(time.perf_counter() - t0)
        thr, model_id = self.detector.threshold, self.detector.model_id
        wide = getattr(self.detector, "wide_threshold", None)
        for w, (scores, own) in zip(closed, all_scores):
            self.metrics.windows_scored.inc()
            self.metrics.flows_scored.inc(len(scores))
            self.metrics.anomalies.inc(int((scores >= thr).sum()))
            for v in verdicts_for(w, scores, threshold=thr, model_id=model_id, policy=self.policy,
                                  wide_threshold=wide, own=own):
                await self.verdicts_topic.send(key=v.rule.key().encode(), value=encode_verdict(v))
                self.metrics.verdicts.labels(v.rule.action.value).inc()
            self.metrics.detect_lag.observe(max(0.0, time.time() - w.end_ns / 1e9))

    # --- timer and dead letters ---------------------------------------------------------------
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

    def _settling(self) -> bool:
        """A rebalance or table recovery is under way: partitions are about to move."""
        return bool(self.app.rebalancing or getattr(self.app, "in_recovery", False))

    async def repeat_marks(self) -> None:
        """Re-announce every owned packets partition's progress. Its own timer, because stage 2
        takes a source partition silent for SCORER_CLOSE_WAIT_S for orphaned: when only the
        closing timer repeated the marks of quiet partitions, one slow tick (a 1.4 s model call
        on a loaded machine) made live partitions look dead and their windows closed early."""
        if self._settling():
            return
        for p, part in list(self.sources.items()):
            self._update_backlog(p, part)
            await self._announce(p, part)

    async def tick(self) -> None:
        if self._settling():
            return
        actives = self.app.assignor.assigned_actives()
        for tp in actives:  # restore partitions that receive no traffic, so their windows close
            if tp.topic == self.packets_topic.get_topic_name() and tp.partition not in self.sources:
                self._restore_source(tp.partition)
            elif tp.topic == self.flows_topic.get_topic_name() and tp.partition not in self.dests:
                self._dest(tp.partition)
        for p, part in self.sources.items():
            self._update_backlog(p, part)
        await self._close_sources(list(self.sources))
        await self._close_dests()
        self.metrics.open_windows.labels("source").set(sum(len(p.windows) for p in self.sources.values()))
        self.metrics.open_windows.labels("dest").set(sum(len(p.windows) for p in self.dests.values()))

    async def _dead(self, topic: str, partition: int, offset: int, reason: str, raw: bytes) -> None:
        log.warning("%s[%d]@%d: %s -> dead letter", topic, partition, offset, reason)
        self.metrics.decode_errors.labels(topic).inc()
        await self.dead_topic.send(value=encode_deadletter(topic, partition, offset, reason,
                                                           raw, "scorer"))


def internal_topic_specs(app: faust.App, scorer: "Scorer") -> list[TopicSpec]:
    """Every topic faust would create for itself while starting (the `scorer-flows`
    repartition topic, both tables' changelogs, the leader assignor's topic), with the
    partition counts and configs faust would give them."""
    conf = app.conf
    topics = [scorer.flows_topic, scorer.src_table.changelog_topic,
              scorer.dst_table.changelog_topic,
              app.topic(f"{conf.id}-__assignor-__leader", partitions=1, internal=True)]
    out = []
    for t in topics:
        config: dict[str, str] = {}
        flags = sorted(f for f, on in (("compact", t.compacting), ("delete", t.deleting)) if on)
        if flags:
            config["cleanup.policy"] = ",".join(flags)
        if t.retention:
            config["retention.ms"] = str(int(float(t.retention) * 1000))
        config.update({k: str(v) for k, v in (t.config or {}).items()})
        for name in t.topics:
            out.append(TopicSpec(name, t.partitions or conf.topic_partitions,
                                 t.replicas or conf.topic_replication_factor or 1, config))
    return out


async def ensure_scorer_topics(common: CommonSettings, app: faust.App, scorer: "Scorer"
                               ) -> list[str]:
    """Create every topic the worker needs BEFORE it joins its group: the shared ones and
    faust's internal ones. When faust created `<app id>-scorer-flows` itself while joining, the
    first assignment could miss it ("Ignoring missing topic") and stage 2 never saw a flow."""
    internal = internal_topic_specs(app, scorer)
    created = await ensure_topics(common, topic_specs(common) + internal)
    counts = await _partition_counts(common, [t.name for t in internal])
    wrong = [f"{t.name} has {counts[t.name]} (needs {t.partitions})" for t in internal
             if counts.get(t.name) not in (None, t.partitions)]
    if wrong:  # faust would route windows to partitions nobody reads
        raise ConfigError("scorer internal topics with the wrong partition count: "
                          + "; ".join(wrong) + " (delete them or change XDPGUARD_PACKETS_PARTITIONS)")
    return created


async def _partition_counts(common: CommonSettings, names: list[str],
                            wait_s: float = 15.0) -> dict[str, int]:
    """Partition count of each topic. A topic created a moment ago can still describe with an
    error (no leader yet): asked again until it answers, so a wrong count is not passed over
    as "unknown" (CI: the stale-topic check once let a 1-partition topic through)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from services.wire.kafka import client_options
    admin = AIOKafkaAdminClient(**client_options(common))
    await admin.start()
    try:
        counts: dict[str, int] = {}
        deadline = time.monotonic() + wait_s
        while True:
            pending = [n for n in names if n not in counts]
            for d in await admin.describe_topics(pending):
                if not d.get("error_code") and d["partitions"]:
                    counts[d["topic"]] = len(d["partitions"])
            if len(counts) == len(names) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        missing = [n for n in names if n not in counts]
        if missing:
            log.warning("cannot check the partition count of %s (no answer within %.0f s)",
                        ", ".join(missing), wait_s)
        return counts
    finally:
        await admin.close()


def create_app(s: ScorerSettings, common: CommonSettings, detector, policy: Policy
               ) -> tuple[faust.App, Scorer]:
    app = faust.App(f"{common.topic_prefix}{s.app_id}", **faust_settings(s, common))
    scorer = Scorer(app, s, common, detector, policy)
    app.service(scorer)  # started and stopped with the worker

    @app.agent(scorer.packets_topic, name="ingest")
    async def ingest(stream):
        async for event in stream.events():
            m = event.message
            try:
                await scorer.on_packets(m.partition, m.offset, m.value)
            except Exception:
                if not scorer.stopping():
                    raise
                return  # the shutdown stopped what it needed (producer, tables): not a crash

    @app.agent(scorer.flows_topic, name="collect")
    async def collect(stream):
        async for event in stream.events():
            m = event.message
            try:
                await scorer.on_chunk(m.partition, m.offset, m.key, m.value)
            except Exception:
                if not scorer.stopping():
                    raise
                return  # the shutdown stopped what it needed (producer, tables): not a crash

    @app.timer(interval=s.tick_s, name="close-windows")
    async def close_windows():
        await scorer.tick_safely()

    @app.timer(interval=MARK_REPEAT_S / 2, name="progress-marks")
    async def progress_marks():
        await scorer.marks_safely()

    return app, scorer
