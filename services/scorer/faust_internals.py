"""Every faust/mode internal the scorer relies on, reached here and nowhere else.

faust-streaming (0.15) and mode-streaming (0.7) have no public call for what follows; the rest of
the scorer uses only their public API (App, topic, Table, agent, timer, Service, signals). Each
internal is listed in `SEAMS` with what it is used for and a probe; tests/unit/
test_scorer_faust_internals.py runs every probe against the installed faust and names the
attribute that moved when an upgrade breaks one. The run-time readers below fall back quietly
(a worker must not crash on a probe) and would hide a move on their own: the test is what fails.

    internal                                   used for
    mode.Worker._on_sigterm / _on_sigint       ScorerWorker: a second stop signal forces the exit
    mode.Worker._signal_stop_time              ... set by the first one
    app.consumer._thread._ensure_consumer()    aiokafka's consumer, for last_poll_timestamp (closing)
    AIOKafkaConsumer._fetcher._fetch_max_wait_ms  the fetch long-poll faust fixes at 1.5 s (fetch_wait)
    AIOKafkaConsumerThread._fetch_records      replaced: drains only what the worker will deliver
                                               (guard_fetch; faust passes aiokafka a live set)
    app.consumer.highwater(tp)                 unread records of a partition (closing, /healthz)
    app.consumer._committed_offset             where the group resumes a partition (restore)
    app._producer                              a stopped producer means the worker is stopping
    app.rebalancing, app.in_recovery           no closing while partitions are about to move
    app.assignor.assigned_actives()            restore partitions that receive no traffic
    table.data                                 the store faust restores a changelog into
    table.changelog_topic                      written straight, partition pinned (write_through)
    Topic.compacting/deleting/retention/...    what faust would declare (topics.internal_topic_specs)
    "<app id>-__assignor-__leader"             the leader assignor's topic, created up front
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Callable

import aiokafka
import faust
import mode
from faust.types import TP

from services.wire.topics import TopicSpec

log = logging.getLogger("xdpguard.scorer")


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


# --- the consumer -------------------------------------------------------------------------
def last_poll_ns(app: faust.App, tp: TP) -> int | None:
    """Wall time (ns) of the newest fetch response for `tp` (aiokafka's last_poll_timestamp);
    None when unknown (not started, not assigned any more, or a faust without the path)."""
    try:
        ms = app.consumer._thread._ensure_consumer().last_poll_timestamp(tp)
    except Exception:  # unknown means "no bound": the caller then counts quiet time as before
        return None
    return None if ms is None else ms * 1_000_000


def fetch_wait(app: faust.App, seconds: float) -> bool:
    """Make the worker's consumer send its fetch requests with a long-poll of `seconds`
    (aiokafka's fetch_max_wait_ms, which faust's worker consumer fixes at 1,500 ms): how long
    the broker holds a fetch for which nothing new exists yet. aiokafka keeps one fetch in
    flight per broker and leaves out of it the partitions whose records are still buffered, so
    records appended meanwhile to those (flow chunks, progress and tally marks) waited up to
    that long, and a caught-up partition's quiet time (last_poll_ns) moved only that often.
    True once set on the running consumer's fetcher (read at each request it builds); False
    before the consumer has started (call again)."""
    try:
        consumer = app.consumer._thread._ensure_consumer()
        fetcher = consumer._fetcher
    except Exception:  # not started yet
        return False
    if fetcher is None:
        return False
    consumer._fetch_max_wait_ms = fetcher._fetch_max_wait_ms = max(1, round(seconds * 1000))
    return True


async def _guarded_fetch_records(self, consumer, active_partitions, timeout=None,
                                 max_records=None):
    """faust's AIOKafkaConsumerThread._fetch_records (runs in the consumer thread), made to
    drain only records the worker will deliver. faust hands aiokafka's
    Fetcher.fetched_records its LIVE set of active partitions, which the main thread empties
    (pause_partitions) during a rebalance while a fetch may still be waiting in it; aiokafka
    drains EVERY buffered partition when that set is empty (`if partitions and tp not in
    partitions`), advancing their positions, and faust drops what it got while its flow is
    stopped. When the records so dropped were a changelog's, read from the offset the table
    recovery had just sought, the recovery waited for them for ever (issue 17: the survivor of
    a SIGKILL never left recovery; a short fetch long-poll made the race likely). Here: a
    snapshot of the set, nothing fetched for an empty one, and what the main thread would not
    deliver now (flow stopped, or partition paused meanwhile) is given back by seeking its
    partition to its first record, so the next fetch returns it again."""
    from aiokafka.errors import ConsumerStoppedError

    owner = self.consumer  # faust's Consumer (flow, the live set)
    if not owner.flow_active:
        return {}
    fetcher = consumer._fetcher
    if consumer._closed or fetcher._closed:
        raise ConsumerStoppedError()
    wanted = frozenset(active_partitions or ())
    if not wanted:
        return {}
    with fetcher._subscriptions.fetch_context():
        records = await fetcher.fetched_records(wanted, timeout=timeout, max_records=max_records)
    deliverable = set(owner._active_partitions or ()) | set(owner._buffered_partitions or ())
    return give_back_undeliverable(consumer, records, owner.flow_active, deliverable)


def give_back_undeliverable(consumer, records: dict, flow_active: bool, deliverable) -> dict:
    """Of `records` (tp -> aiokafka records, as drained), keep those the worker delivers now
    (its flow active and the partition in `deliverable`: faust's live active set and the
    partitions it set aside while their stream buffer was full, as faust's getmany filters);
    seek every other partition back to its first drained record (aiokafka's consumer.seek) so
    it is fetched again. Returns the kept ones."""
    kept = {}
    for tp, batch in records.items():
        if batch and not (flow_active and tp in deliverable):
            try:
                consumer.seek(tp, batch[0].offset)
            except Exception as exc:  # unassigned meanwhile: the next owner reads it
                log.debug("not given back %s@%s: %r", tp, batch[0].offset, exc)
            else:  # rare (a drain that outlived a pause or a stop): say so, it was a loss before
                log.info("fetch guard: %d records of %s[%d] from offset %d given back (flow %s)",
                         len(batch), tp.topic, tp.partition, batch[0].offset,
                         "active" if flow_active else "stopped")
            continue
        kept[tp] = batch
    return kept


def guard_fetch() -> bool:
    """Install _guarded_fetch_records on faust's aiokafka consumer thread (every app of this
    process; idempotent). True once installed."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    if AIOKafkaConsumerThread._fetch_records is not _guarded_fetch_records:
        AIOKafkaConsumerThread._fetch_records = _guarded_fetch_records
    return True


def highwater(app: faust.App, tp: TP) -> int | None:
    """The broker's high-water mark of `tp` as of the newest fetch response; None before the
    first one. Raises (faust's ConsumerNotStarted, aiokafka's assert) when `tp` is unassigned."""
    return app.consumer.highwater(tp)


def committed(app: faust.App, tp: TP) -> int | None:
    """The offset the consumer group resumes `tp` from (Kafka's committed offset: the next one
    it reads; every earlier record was handled by this worker or a previous owner), as faust
    read it when the partition was assigned here or committed it since. None when none was
    committed (a new group reads from the start) or the internal is not there."""
    try:
        offset = app.consumer._committed_offset.get(tp)
    except AttributeError:
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None


def assigned_actives(app: faust.App) -> set[TP]:
    """The partitions this worker owns (active, not standby) in the current assignment."""
    return app.assignor.assigned_actives()


# --- the app ------------------------------------------------------------------------------
def producer_stopping(app: faust.App) -> bool:
    """True once the app's producer (if created) is stopping: sends would raise NotReady."""
    producer = getattr(app, "_producer", None)  # not `app.producer`: that would create one
    return producer is not None and producer.should_stop


def rebalancing(app: faust.App) -> bool:
    return bool(app.rebalancing)


def settling(app: faust.App) -> bool:
    """A rebalance or table recovery is under way: partitions are about to move."""
    return bool(app.rebalancing or getattr(app, "in_recovery", False))


def leader_topic_name(app: faust.App) -> str:
    """faust's LeaderAssignor topic (one partition), which it would create while starting."""
    return f"{app.conf.id}-__assignor-__leader"


# --- tables and topics --------------------------------------------------------------------
def table_store(table) -> MutableMapping:
    """The key/value store of a faust Table (memory store: a dict-like of bytes -> bytes), the
    one faust's recovery replays the changelog into when a partition is assigned."""
    return table.data


def changelog_topic(table):
    """The faust Topic of a Table's changelog (`<app id>-<table name>-changelog`)."""
    return table.changelog_topic


async def write_through(table, partition: int, key: bytes, value: bytes | None) -> None:
    """Set (value None: delete) `key` in the table's store and send it to the changelog
    partition `partition`, awaited. Not `table[key] = value`: windows close in a timer, outside
    any stream event, so faust would not know the partition; and its send_soon buffer makes the
    fetcher wait for it to drain, which deadlocked workers that rebalanced under a backlog."""
    data = table.data
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    await table.changelog_topic.send(key=key, value=value, partition=partition)


def declared_specs(topic, conf) -> list[TopicSpec]:
    """What faust would declare for `topic` (a faust Topic: names, partition count, replicas,
    cleanup policy and configs), defaults taken from the app's `conf`."""
    config: dict[str, str] = {}
    flags = sorted(f for f, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on)
    if flags:
        config["cleanup.policy"] = ",".join(flags)
    if topic.retention:
        config["retention.ms"] = str(int(float(topic.retention) * 1000))
    config.update({k: str(v) for k, v in (topic.config or {}).items()})
    return [TopicSpec(name, topic.partitions or conf.topic_partitions,
                      topic.replicas or conf.topic_replication_factor or 1, config)
            for name in topic.topics]


def _original_fetch_records():
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    fn = AIOKafkaConsumerThread.__dict__.get("_fetch_records")
    return None if fn is _guarded_fetch_records else fn


_ORIGINAL_FETCH_RECORDS = _original_fetch_records()  # faust's, before guard_fetch replaces it


# --- the probes the unit test runs --------------------------------------------------------
@dataclass(frozen=True)
class Seam:
    """One internal: `path` as written above, `attrs` the attribute names only this module may
    use (the test checks the other scorer modules), `probe(app, table)` True while it holds."""
    path: str
    attrs: tuple[str, ...]
    probe: Callable[[faust.App, object], bool]


def _source_has(fn, text: str) -> bool:
    return text in inspect.getsource(fn)


def _topic_attrs(table) -> bool:
    t = table.changelog_topic
    return all(hasattr(t, a) for a in ("compacting", "deleting", "retention", "config", "topics",
                                        "partitions", "replicas"))


def _fetcher_class() -> type:
    from aiokafka.consumer.fetcher import Fetcher
    return Fetcher


def _consumer_thread_class() -> type:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    return AIOKafkaConsumerThread


def _fetch_records_holds() -> bool:
    """faust's own _fetch_records (kept by the class's base copy: the one guard_fetch
    replaces) still calls fetched_records with the live set, and aiokafka still drains every
    partition for an empty one: the guard is then still needed and still a drop-in."""
    from aiokafka.consumer.fetcher import Fetcher
    cls = _consumer_thread_class()
    original = _ORIGINAL_FETCH_RECORDS or cls._fetch_records
    return (list(inspect.signature(original).parameters)
            == ["self", "consumer", "active_partitions", "timeout", "max_records"]
            and _source_has(original, "fetcher.fetched_records(")
            and _source_has(original, "self.consumer.flow_active")
            and _source_has(Fetcher.fetched_records, "if partitions and tp not in partitions")
            and _source_has(cls.getmany, "self._fetch_records")
            and _source_has(_consumer_class().getmany,
                            "tp in active_partitions\n                    or tp in self._buffered_partitions"))


def _consumer_class() -> type:
    from faust.transport.consumer import Consumer
    return Consumer


def _recovery_class() -> type:
    from faust.tables.recovery import Recovery
    return Recovery


SEAMS: tuple[Seam, ...] = (
    Seam("mode.Worker._on_sigterm", ("_on_sigterm",), lambda app, table: _source_has(
        mode.Worker._install_signal_handlers_unix, "signal.SIGTERM, self._on_sigterm")),
    Seam("mode.Worker._on_sigint", ("_on_sigint",), lambda app, table: _source_has(
        mode.Worker._install_signal_handlers_unix, "signal.SIGINT, self._on_sigint")),
    Seam("mode.Worker._signal_stop_time", ("_signal_stop_time",), lambda app, table:
         hasattr(faust.Worker, "_signal_stop_time") and _source_has(
             mode.Worker._schedule_shutdown, "self._signal_stop_time = ")),
    Seam("app.consumer._thread._ensure_consumer", ("_thread", "_ensure_consumer"),
         lambda app, table: callable(app.consumer._thread._ensure_consumer)),
    Seam("aiokafka.AIOKafkaConsumer.last_poll_timestamp", ("last_poll_timestamp",),
         lambda app, table: list(inspect.signature(
             aiokafka.AIOKafkaConsumer.last_poll_timestamp).parameters) == ["self", "partition"]),
    Seam("aiokafka Fetcher._fetch_max_wait_ms (per request)", ("_fetcher", "_fetch_max_wait_ms"),
         lambda app, table: _source_has(aiokafka.AIOKafkaConsumer.start, "self._fetcher = Fetcher(")
         and _source_has(_fetcher_class()._get_actions_per_node, "self._fetch_max_wait_ms")),
    Seam("AIOKafkaConsumerThread._fetch_records (guard_fetch)",
         ("_fetch_records", "fetched_records", "_active_partitions", "_buffered_partitions",
          "flow_active"),
         lambda app, table: _fetch_records_holds()),
    Seam("app.consumer.highwater", ("highwater",),
         lambda app, table: callable(app.consumer.highwater)),
    Seam("app.consumer._committed_offset", ("_committed_offset",), lambda app, table:
         isinstance(app.consumer._committed_offset, MutableMapping)
         and _source_has(_consumer_class().perform_seek, "self._committed_offset.update(")),
    Seam("app._producer", ("_producer",), lambda app, table:
         "_producer" in dir(type(app)) and _source_has(type(app).producer.fget, "self._producer")),
    Seam("app.rebalancing", ("rebalancing",), lambda app, table: hasattr(app, "rebalancing")
         and _source_has(type(app).on_rebalance_start, "self.rebalancing = True")),
    Seam("app.in_recovery", ("in_recovery",), lambda app, table: hasattr(app, "in_recovery")
         and _source_has(_recovery_class(), "self.app.in_recovery = True")),
    Seam("app.assignor.assigned_actives", ("assignor", "assigned_actives"),
         lambda app, table: callable(app.assignor.assigned_actives)),
    Seam("table.data", ("data",), lambda app, table: isinstance(table.data, MutableMapping)
         and callable(getattr(table.data, "apply_changelog_batch", None))),
    Seam("table.changelog_topic.send(partition=)", ("changelog_topic",), lambda app, table:
         "partition" in inspect.signature(table.changelog_topic.send).parameters),
    Seam("Topic.compacting/deleting/retention/config/topics/partitions/replicas",
         ("compacting", "deleting"), lambda app, table: _topic_attrs(table)),
    Seam("app._leader_assignor._leader_topic_name", ("_leader_assignor", "_leader_topic_name"),
         lambda app, table: app._leader_assignor._leader_topic_name == leader_topic_name(app)),
)


def check(seam: Seam, app: faust.App, table) -> str | None:
    """None while `seam` holds against the installed faust/mode; else its path, with what the
    probe raised if it raised."""
    try:
        ok = seam.probe(app, table)
    except Exception as exc:
        return f"{seam.path} ({type(exc).__name__}: {exc})"
    return None if ok else seam.path


def moved(app: faust.App, table) -> list[str]:
    """check() of every seam: the internals that moved, [] when all hold. `table`: any faust
    Table of `app`."""
    return [problem for seam in SEAMS if (problem := check(seam, app, table)) is not None]
