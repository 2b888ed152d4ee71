"""The faust wiring of a scorer worker: the app and its settings, topics, tables, agents and
timers. Only wiring: what they do is in service.Scorer and the two stage adapters.

    agent "ingest"  (packets, by source)            -> scorer.ingest.on_packets  (ingest.py)
    agent "collect" (<app id>-scorer-flows, by dst)  -> scorer.collect.on_chunk   (collect.py)
    timer "close-windows"  (SCORER_TICK_S)           -> scorer.tick_safely
    timer "progress-marks" (every 0.25 s)            -> scorer.marks_safely
    tables "src-records", "dst-chunks" (changelogs; keys: tables.py)
    task  "models-feed" (the `models` topic, every worker all of it) -> modelfeed.ModelFeed

faust internals used anywhere are in faust_internals.py (ScorerWorker among them).
"""
from __future__ import annotations

import os

import faust

from services.common.settings import CommonSettings
from services.wire.topics import DEADLETTER, MODELS, PACKETS, VERDICTS

from . import faust_internals
from .faust_internals import ScorerWorker
from .ingest import MARK_REPEAT_S
from .scoring import VerdictPolicy
from .service import Scorer, ScorerTopics
from .settings import ScorerSettings

RAW = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
TABLE_RAW = dict(key_type=bytes, value_type=bytes)  # bytes types make faust use the raw codec
# Closed windows leave tombstones: let compaction drop them quickly so restores stay short.
CHANGELOG_CONFIG = {"segment.ms": "60000", "min.cleanable.dirty.ratio": "0.05",
                    "delete.retention.ms": "60000"}


def faust_settings(s: ScorerSettings, common: CommonSettings) -> dict:
    """faust.App keyword arguments from the scorer's and the shared settings."""
    opts = dict(
        Worker=ScorerWorker,
        broker=[f"kafka://{h.strip()}" for h in common.kafka_bootstrap.split(",") if h.strip()],
        store="memory://", topic_partitions=common.packets_partitions,
        topic_replication_factor=common.replication_factor,
        table_standby_replicas=s.standby_replicas,
        # Issue 5: faust's 60 s defaults made every join take ~30 s (docs/scorer.md).
        broker_session_timeout=s.session_timeout_s, broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_heartbeat_interval=s.heartbeat_s,
        consumer_auto_offset_reset=s.offset_reset, web_enabled=s.web_port > 0,
        producer_acks=-1, key_serializer="raw", value_serializer="raw",
        # `xdpguard groups` shows members by client id: name the host and the worker (faust's
        # default, faust-<version>, is the same for every worker of every host).
        broker_client_id=worker_client_id(s, common),
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


def worker_client_id(s: ScorerSettings, common: CommonSettings) -> str:
    """Kafka client id of this worker: `<app id>-<node id>-<pid>`."""
    return f"{s.app_id}-{common.node_id}-{os.getpid()}"


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


def create_app(s: ScorerSettings, common: CommonSettings, detector, policy: VerdictPolicy
               ) -> tuple[faust.App, Scorer]:
    """The faust app of one worker and its Scorer (started and stopped with the worker)."""
    faust_internals.guard_fetch()  # the consumer thread drains only what the worker delivers
    app = faust.App(f"{common.topic_prefix}{s.app_id}", **faust_settings(s, common))
    n = common.packets_partitions
    topics = ScorerTopics(
        packets=app.topic(common.topic(PACKETS), partitions=n, **RAW),
        flows=app.topic(f"{app.conf.id}-scorer-flows", partitions=n, internal=True, **RAW),
        verdicts=app.topic(common.topic(VERDICTS), **RAW),
        dead=app.topic(common.topic(DEADLETTER), **RAW),
        models=app.topic(common.topic(MODELS), **RAW),
        src_table=app.Table("src-records", partitions=n, extra_topic_configs=CHANGELOG_CONFIG,
                            **TABLE_RAW),
        dst_table=app.Table("dst-chunks", partitions=n, extra_topic_configs=CHANGELOG_CONFIG,
                            **TABLE_RAW))
    scorer = Scorer(app, topics, s, common, detector, policy)
    app.service(scorer)

    async def consume(stream, handle) -> None:
        async for event in stream.events():
            m = event.message
            try:
                await handle(m)
            except Exception:
                if not scorer.stopping():
                    raise
                return  # the shutdown stopped what it needed (producer, tables): not a crash

    @app.agent(topics.packets, name="ingest")
    async def ingest(stream):
        await consume(stream, lambda m: scorer.ingest.on_packets(m.partition, m.offset, m.value))

    @app.agent(topics.flows, name="collect")
    async def collect(stream):
        await consume(stream, lambda m: scorer.collect.on_chunk(m.partition, m.offset, m.key,
                                                                m.value))

    @app.timer(interval=s.tick_s, name="close-windows")
    async def close_windows():
        await scorer.tick_safely()

    @app.timer(interval=MARK_REPEAT_S / 2, name="progress-marks")
    async def progress_marks():
        await scorer.marks_safely()

    return app, scorer
