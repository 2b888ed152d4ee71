"""The capture's produce path: per-node sequence numbers, a bounded buffer, per-partition
micro-batches sent with aiokafka's create_batch()/send_batch(), and resending what failed.

Why this shape (issue 5): on this machine aiokafka did ~450k records/s with send_batch() against
~120k with pipelined send() and <3k with send_and_wait(). On top, each Kafka record here is one
codec micro-batch of up to `batch_events` events of one partition, so one Kafka record costs one
msgpack call, not one per event.

Guarantees:
- every accepted event gets the next per-node sequence number, so sequence numbers never have a
  gap that was not counted: an event refused because the buffer is full gets no number and is
  counted in `refused_full`;
- accepted events stay in this process (pending or in flight) until the broker acknowledged them
  (acks=all, idempotent producer); a failed or timed-out batch goes back to the front of its
  partition's queue and is sent again, so while Kafka is unreachable the buffer fills up to its
  bound and drains, without gaps, when Kafka returns. A batch that timed out but had in fact been
  written is written twice (at least once); the sequence numbers make such duplicates visible;
- if the client cannot start at all it is rebuilt with a backoff; nothing waits on Kafka in submit();
- before each client is built the `packets` topic is created or checked (services.wire.topics):
  a topic with another partition count (e.g. auto-created by the broker with 1) is refused, said
  once in the log and kept in `problem` for the health check, and checked again every 5 s.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
from aiokafka import AIOKafkaProducer

from services.wire import codec
from services.wire.kafka import client_options
from services.records.packet import Packet
from services.common.errors import ConfigError
from services.common.settings import CommonSettings
from services.wire.topics import PACKETS, ensure_topics, specs_named

from . import columns

log = logging.getLogger("xdpguard.capture.publisher")


@dataclass
class PublisherStats:
    accepted: int = 0          # events given a sequence number
    refused_full: int = 0      # events refused because the buffer was at its bound
    acked: int = 0             # events the broker acknowledged
    records: int = 0           # Kafka records (micro-batches) acknowledged
    produce_errors: int = 0    # batches that failed and were re-queued
    client_restarts: int = 0   # producer clients (re)built
    connected: bool = False


def check_compression(compression: str) -> None:
    """ConfigError naming CAPTURE_COMPRESSION when aiokafka cannot use `compression` here
    ("" = none): an unknown name, or a codec whose library is not installed."""
    from aiokafka import codec as kafka_codec

    have = {"": lambda: True, "gzip": kafka_codec.has_gzip, "snappy": kafka_codec.has_snappy,
            "lz4": kafka_codec.has_lz4, "zstd": kafka_codec.has_zstd}
    if compression not in have:
        raise ConfigError(f"CAPTURE_COMPRESSION={compression!r}: must be one of lz4, zstd, "
                          "snappy, gzip or none")
    if not have[compression]():
        raise ConfigError(f"CAPTURE_COMPRESSION={compression!r}: the {compression} codec "
                          "library is not installed here")


def default_producer(common: CommonSettings, compression: str, request_timeout_ms: int):
    def make() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(common), acks="all", enable_idempotence=True,
            compression_type=compression or None, request_timeout_ms=request_timeout_ms,
            max_batch_size=1 << 20, linger_ms=0, client_id=f"xdpguard-capture-{common.node_id}")
    return make


class Publisher:
    def __init__(self, common: CommonSettings, *, partitions: int | None = None,
                 buffer_events: int = 1_000_000, batch_events: int = 256, linger_ms: int = 5,
                 compression: str = "lz4", request_timeout_ms: int = 10_000,
                 producer_factory: Callable[[], AIOKafkaProducer] | None = None,
                 first_seq: int = 0) -> None:
        self.common = common
        self.topic = common.topic(PACKETS)
        self.node = common.node_id
        self.partitions = partitions or common.packets_partitions
        self._spec = dataclasses.replace(specs_named(common, PACKETS)[0],
                                         partitions=self.partitions)
        # Why nothing is published now ("" while connected): the health check's reason.
        # `refused`: the topic itself is unusable (not a matter of reaching Kafka).
        self.problem = "not connected yet"
        self.refused = False
        self.buffer_events = buffer_events
        self.batch_events = min(batch_events, codec.MAX_BATCH)
        self.linger = linger_ms / 1000
        self.stats = PublisherStats()
        self.next_seq = first_seq
        self._factory = producer_factory or default_producer(common, compression, request_timeout_ms)
        self._pending: list[deque[np.ndarray]] = [deque() for _ in range(self.partitions)]
        self._npending = 0
        self._inflight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._abort = asyncio.Event()
        self._stopping = False
        # Set when a delivered batch failed: the idempotent producer's sequence state may be
        # broken for good (OutOfOrderSequenceNumber after a broker restart), so resending on
        # the same client can loop forever; a new client gets a new producer id.
        self._rebuild = False
        self._task: asyncio.Task | None = None
        self._producer: AIOKafkaProducer | None = None

    # -- called from the event loop, never blocks ---------------------------------------------
    def submit(self, packets: list[Packet], sample_rate: int | None = None) -> int:
        """Number and queue `packets` (tests, replays); returns how many were accepted.
        `sample_rate` overrides each packet's own (None keeps it)."""
        n = self._room(len(packets))
        if n:
            self._enqueue(columns.from_packets(packets[:n], self.next_seq, sample_rate))
        return n

    def submit_records(self, records: np.ndarray, offset_ns: int, sample_rate: int) -> int:
        """Number and queue ring-buffer records (fastring.RECORD_DTYPE): the capture's hot path."""
        n = self._room(len(records))
        if n:
            self._enqueue(columns.from_records(records[:n], offset_ns, self.next_seq, sample_rate))
        return n

    def _room(self, n: int) -> int:
        room = max(self.buffer_events - self._npending - self._inflight, 0)
        if room < n:
            self.stats.refused_full += n - room  # refused before numbering: no sequence gap
            return room
        return n

    def _enqueue(self, rows: np.ndarray) -> None:
        batch = self.batch_events
        for part, chunk in columns.split_by_partition(rows, self.partitions):
            queue = self._pending[part]
            if queue and len(queue[-1]) < batch:
                # Top up the partition's last micro-batch: at moderate rates each ring poll
                # brings a few events, and one record per poll cost the scorer a record each
                # (a 2,000 pps flood arrived as ~900 records/s and the scorer fell seconds behind).
                room = batch - len(queue[-1])
                queue[-1] = np.concatenate((queue[-1], chunk[:room]))
                chunk = chunk[room:]
            for i in range(0, len(chunk), batch):
                queue.append(chunk[i:i + batch])
        n = len(rows)
        self.next_seq += n
        self._npending += n
        self.stats.accepted += n
        self._idle.clear()
        self._wake.set()

    @property
    def buffered(self) -> int:
        return self._npending + self._inflight

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="capture-publisher")

    async def flush(self, timeout: float) -> bool:
        """Wait until everything accepted so far is acknowledged (or `timeout` passes)."""
        try:
            async with asyncio.timeout(timeout):
                while self.buffered and not self._abort.is_set():
                    self._idle.clear()
                    idle = asyncio.ensure_future(self._idle.wait())
                    abort = asyncio.ensure_future(self._abort.wait())
                    try:
                        await asyncio.wait({idle, abort}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        idle.cancel()
                        abort.cancel()
            return not self.buffered
        except TimeoutError:
            return False

    def abort_flush(self) -> None:
        """Make a running flush()/stop() give up waiting at once (a second SIGTERM)."""
        self._abort.set()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Drain for up to `drain_timeout` s, then stop the client. Idempotent."""
        if self._task is None:
            return
        if drain_timeout > 0:
            await self.flush(drain_timeout)
        self._stopping = True
        self._wake.set()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise
        finally:
            self._task = None
            await self._close_producer()
        if self.buffered:
            log.warning("stopped with %d events not acknowledged by Kafka", self.buffered)

    # -- the sender ----------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            if self._producer is None:
                if not await self._connect():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
            if self._rebuild:
                self._rebuild = False
                log.warning("a batch to %s failed; rebuilding the producer client", self.topic)
                await self._close_producer()
                continue
            if not self._npending:
                if not self._inflight:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                # Let a micro-batch fill unless one is already full.
                if self._npending < self.batch_events and self.linger:
                    await asyncio.sleep(self.linger)
            await self._send_round()

    async def _connect(self) -> bool:
        if not await self._topic_ready():
            return False
        try:
            producer = self._factory()
        except Exception as exc:  # a client option aiokafka refuses: said, retried slowly
            if str(exc) != self.problem:
                log.error("cannot build the Kafka producer: %s", exc)
            self.problem, self.refused = f"cannot build the Kafka producer: {exc}", True
            await asyncio.sleep(5)
            return False
        self.stats.client_restarts += 1
        try:
            await producer.start()
        except Exception as exc:  # connection refused, DNS, auth: all mean "try again later"
            self._trouble(f"Kafka unreachable ({exc})")
            await producer.stop()
            return False
        try:
            have = len(await producer.partitions_for(self.topic))
        except Exception as exc:  # metadata unavailable: try again later
            self._trouble(f"no metadata for {self.topic} ({exc})")
            await producer.stop()
            return False
        if have != self.partitions:  # changed since _topic_ready checked it
            await producer.stop()
            return False
        self._producer = producer
        self.stats.connected = True
        self.problem, self.refused = "", False
        return True

    async def _topic_ready(self) -> bool:
        """Create or check the topic (its partition count and config) before a client uses it:
        a broker that auto-creates topics would otherwise make a 1-partition one on first use.
        A mismatch is logged once as an error and retried every 5 s (fixing the topic or the
        setting resumes the flow); an unreachable cluster is a warning, retried with backoff."""
        try:
            await ensure_topics(self.common, [self._spec])
            return True
        except ConfigError as exc:  # TopicMismatch, or the broker refused to create it
            if str(exc) != self.problem:
                log.error("%s; buffering meanwhile", exc)
            self.problem, self.refused = str(exc), True
            await asyncio.sleep(5)
        except Exception as exc:  # KafkaUnavailable, metadata errors: try again later
            self._trouble(f"Kafka unreachable ({exc})")
        return False

    def _trouble(self, why: str) -> None:
        if why != self.problem:
            log.warning("%s; buffering", why)
        self.problem, self.refused = why, False

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.stats.connected = False
        self.problem = self.problem or "reconnecting to Kafka"
        if producer is not None:
            await producer.stop()

    async def _send_round(self) -> None:
        producer = self._producer
        sends = []
        for part, queue in enumerate(self._pending):
            if queue:
                sends.append(self._send_partition(producer, part, queue))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for res in results:
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                log.warning("produce to %s failed (%s); rebuilding the client", self.topic, res)
                await self._close_producer()
                break

    async def _send_partition(self, producer: AIOKafkaProducer, part: int, queue: deque) -> None:
        builder = producer.create_batch()
        taken: list[np.ndarray] = []
        while queue:
            chunk = queue.popleft()
            if builder.append(key=None, value=columns.encode(chunk, self.node), timestamp=None) is None:
                queue.appendleft(chunk)  # the builder is full: next round
                break
            taken.append(chunk)
        if not taken:
            return
        events = sum(len(c) for c in taken)
        self._npending -= events
        self._inflight += events
        try:
            future = await producer.send_batch(builder, self.topic, partition=part)
        except BaseException:
            self._requeue(part, taken, events)
            raise
        future.add_done_callback(lambda f: self._delivered(f, part, taken, events))

    def _delivered(self, future: asyncio.Future, part: int, taken: list, events: int) -> None:
        if future.cancelled() or future.exception() is not None:
            self.stats.produce_errors += 1
            if not future.cancelled():
                log.warning("batch of %d events to %s[%d] failed: %s; re-queued",
                            events, self.topic, part, future.exception())
            self._requeue(part, taken, events)
            self._rebuild = True
            self._wake.set()
            return
        self._inflight -= events
        self.stats.acked += events
        self.stats.records += len(taken)
        if not self.buffered:
            self._idle.set()

    def _requeue(self, part: int, taken: list, events: int) -> None:
        self._inflight -= events
        self._npending += events
        self._pending[part].extendleft(reversed(taken))
