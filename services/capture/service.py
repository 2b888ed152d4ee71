"""The capture service: pinned ring buffer -> reader thread -> bounded queue -> Publisher -> Kafka.

The ring buffer's poll blocks, so it runs in a thread of its own (fastring.FastRing: records
copied in bulk as numpy arrays, no object per event) that hands arrays to the event loop through
a bounded queue (a deque of arrays plus counters): when the queue is full
the events are dropped and counted (`queue_overflow`), never blocking the kernel side. The loop
stamps and publishes them (publisher.py). Every `adapt_interval` the sampling controller looks at
losses and backlog and raises or lowers the kernel's 1-in-N rate; the events carry the rate.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from services.dataplane.datapath import mono_offset_ns
from services.common.settings import CommonSettings

from .publisher import Publisher
from .sampling import SamplingController
from .settings import CaptureSettings

log = logging.getLogger("xdpguard.capture")


class Capture:
    def __init__(self, common: CommonSettings, settings: CaptureSettings) -> None:
        self.common, self.settings = common, settings
        self.publisher = Publisher(
            common, buffer_events=settings.buffer_events, batch_events=settings.batch_events,
            linger_ms=settings.linger_ms, compression=settings.compression,
            request_timeout_ms=settings.request_timeout_ms)
        self.sampling = SamplingController(base=settings.sample_rate,
                                           maximum=settings.max_sample_rate)
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.loaded: list[str] = []
        self.datapath = None
        self.reader = None
        self.read = 0              # events taken from the ring buffer
        self.overflow = 0          # events dropped because the queue was full
        self.ring_lost = 0         # events the kernel could not put in the ring buffer
        self._queue: deque = deque()
        self._rate = 1             # kernel sampling rate in force, stamped on every event
        self._offset = 0           # epoch - monotonic, refreshed every adapt round
        self._queued = 0           # written by the reader thread ...
        self._taken = 0            # ... and by the loop: backlog = _queued - _taken
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        from services.dataplane import loader
        from services.dataplane.datapath import Datapath

        from .fastring import FastRing

        s, pin_dir = self.settings, self.common.pin_dir
        if s.interfaces:
            modes = loader.load(list(s.interfaces), mode=s.xdp_mode, pin_dir=pin_dir)
            self.loaded = list(modes)
            log.info("XDP loaded on %s", ", ".join(f"{i} ({m})" for i, m in modes.items()))
        self.datapath = Datapath.open(pin_dir)
        self.datapath.set_sample_rate(self.sampling.rate)
        self.reader = FastRing(pin_dir)
        self._rate = self.datapath.sample_rate()
        self._offset = mono_offset_ns()
        await self.publisher.start()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read_ring, name="capture-ring", daemon=True)
        self._thread.start()
        log.info("capturing from %s to %s (node %s, sampling 1-in-%d)", pin_dir,
                 self.publisher.topic, self.common.node_id, self.sampling.rate)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._pump(), name="capture-pump")
            tg.create_task(self._adapt(), name="capture-adapt")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop reading, publish what was read (up to drain_timeout s), stop every client."""
        self._stop.set()
        try:
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 2.0)
            self._hand_over()
            await self.publisher.stop(drain_timeout)
        finally:
            if self.reader is not None:
                self.reader.close()
            if self.datapath is not None:
                self.datapath.close()
            self._unload()
        log.info("capture stopped: %d read, %d published, %d ring lost, %d queue overflow, "
                 "%d refused (buffer full), %d not acknowledged", self.read,
                 self.publisher.stats.acked, self.ring_lost, self.overflow,
                 self.publisher.stats.refused_full, self.publisher.buffered)

    def abort_drain(self) -> None:
        self.publisher.abort_flush()

    def healthy(self) -> tuple[bool, str]:
        if self._thread is None or not self._thread.is_alive():
            return False, f"ring reader not running ({self.thread_error})"
        if not self.publisher.stats.connected and self.publisher.buffered:
            return False, f"Kafka unreachable, {self.publisher.buffered} events buffered"
        return True, f"ok, sampling 1-in-{self.sampling.rate}"

    def _unload(self) -> None:
        if not (self.loaded and self.settings.unload_on_exit):
            return
        from services.dataplane import loader
        for iface in self.loaded:
            try:
                loader.unload(iface, self.common.pin_dir)
            except Exception as exc:  # keep unloading the others; say which one failed
                log.error("unload %s: %s", iface, exc)
        self.loaded = []

    # -- reader thread -------------------------------------------------------------------------
    def _read_ring(self) -> None:
        bound, poll_ms = self.settings.queue_events, self.settings.poll_ms
        try:
            while not self._stop.is_set():
                packets = self.reader.poll(poll_ms)
                n = len(packets)
                if not n:
                    continue
                self.read += n
                if self._queued - self._taken + n > bound:
                    self.overflow += n  # the loop is behind: drop, count, let sampling react
                    continue
                was_empty = not self._queue
                self._queue.append(packets)
                self._queued += n
                if was_empty:
                    self._loop.call_soon_threadsafe(self._wake.set)
        except BaseException as exc:  # the thread must not die silently: health reports it
            self.thread_error = exc
            log.exception("ring reader thread failed")
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- event loop side -----------------------------------------------------------------------
    def _hand_over(self) -> int:
        n = 0
        queue, submit = self._queue, self.publisher.submit_records
        while queue:
            records = queue.popleft()
            submit(records, self._offset, self._rate)
            n += len(records)
        self._taken += n
        return n

    async def _pump(self) -> None:
        while True:
            if self.thread_error is not None:
                raise RuntimeError(f"ring reader thread failed: {self.thread_error}")
            self._wake.clear()
            if not self._hand_over():
                await self._wake.wait()
            else:
                await asyncio.sleep(0)  # let the publisher run between hand-overs

    async def _adapt(self) -> None:
        last_lost = last_overflow = last_refused = 0
        base_lost = self.datapath.stats().get("events_lost", 0)
        while True:
            await asyncio.sleep(self.settings.adapt_interval_ms / 1000)
            self.ring_lost = self.datapath.stats().get("events_lost", 0) - base_lost
            refused = self.publisher.stats.refused_full
            lost = (self.ring_lost - last_lost) + (self.overflow - last_overflow) + \
                (refused - last_refused)
            last_lost, last_overflow, last_refused = self.ring_lost, self.overflow, refused
            self._rate = self.datapath.sample_rate()  # also honours `xdpguard` changing it
            self._offset = mono_offset_ns()
            if not self.settings.adaptive:
                continue
            fill = max((self._queued - self._taken) / self.settings.queue_events,
                       self.publisher.buffered / self.settings.buffer_events)
            new = self.sampling.update(int(fill * 1000), 1000, lost)
            if new is not None:
                self.datapath.set_sample_rate(new)
                self._rate = new
                log.warning("sampling now 1-in-%d (%d events lost in the last %d ms, backlog "
                            "%.0f%%)", new, lost, self.settings.adapt_interval_ms, fill * 100)


class _Collector:
    """Reads the capture's counters at scrape time: nothing on the hot path."""

    def __init__(self, cap: Capture) -> None:
        self.cap = cap

    def collect(self):
        c, st = self.cap, self.cap.publisher.stats
        p = "xdpguard_capture_"
        for name, doc, value in (
                ("events_read", "events read from the ring buffer", c.read),
                ("ring_lost", "events the kernel could not put in the full ring buffer", c.ring_lost),
                ("queue_overflow", "events dropped because the reader queue was full", c.overflow),
                ("events_accepted", "events given a sequence number", st.accepted),
                ("events_refused", "events refused because the Kafka buffer was full", st.refused_full),
                ("events_published", "events acknowledged by Kafka", st.acked),
                ("records_published", "Kafka records (micro-batches) acknowledged", st.records),
                ("produce_errors", "produce batches that failed and were re-queued", st.produce_errors),
                ("client_restarts", "Kafka producer clients (re)built", st.client_restarts)):
            yield CounterMetricFamily(p + name, doc, value=value)
        for name, doc, value in (
                ("queue_depth", "events waiting between the reader thread and the loop",
                 c._queued - c._taken),
                ("buffered", "events pending or in flight to Kafka", c.publisher.buffered),
                ("sample_rate", "kernel 1-in-N sampling rate in force", c.sampling.rate),
                ("next_seq", "next per-node sequence number", c.publisher.next_seq),
                ("kafka_connected", "1 while a producer client is connected", int(st.connected)),
                ("up_since", "Unix time the service started", _STARTED)):
            yield GaugeMetricFamily(p + name, doc, value=value)
        dp = getattr(c, "datapath", None)
        if dp is not None:
            # The kernel's own per-CPU counters, summed at scrape time (the drop panels).
            try:
                stats = dp.stats()
            except OSError:
                return  # program unloaded under us: the capture's own metrics still count
            fam = CounterMetricFamily("xdpguard_xdp_packets", "XDP program counters (all CPUs)",
                                      labels=["counter"])
            for name, value in stats.items():
                fam.add_metric([name], value)
            yield fam


_STARTED = time.time()
