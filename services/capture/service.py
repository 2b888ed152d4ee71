"""The capture service: pinned ring buffer -> reader thread -> bounded queue -> Publisher -> Kafka.

The reader thread and its queue are ringfeed.RingFeed; the loop stamps and publishes what it
hands over (publisher.py). Every `adapt_interval` the sampling controller looks at losses and
backlog and raises or lowers the kernel's 1-in-N rate; the events carry the rate. The same round
watches the program: loaded again (`xdpguard unload` + `load`: new maps, new ring), the capture
reattaches to the new ring and sets its sampling rate there; unloaded, it turns unhealthy with
that reason until a program is loaded. Every few seconds it also looks for another reader of the
ring (`xdpguard monitor`), which would take events from it, and reports it in the health check.
"""
from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from services.common.errors import KernelError
from services.common.settings import CommonSettings
from services.dataplane.datapath import mono_offset_ns, pinned_maps_id

from .publisher import Publisher, check_compression
from .ringfeed import RingFeed
from .sampling import SamplingController
from .settings import CaptureSettings

log = logging.getLogger("xdpguard.capture")
SHARING_CHECK_S = 5.0  # how often other readers of the ring are looked for


class Capture:
    def __init__(self, common: CommonSettings, settings: CaptureSettings) -> None:
        self.common, self.settings = common, settings
        self.publisher = Publisher(
            common, buffer_events=settings.buffer_events, batch_events=settings.batch_events,
            linger_ms=settings.linger_ms, compression=settings.compression,
            request_timeout_ms=settings.request_timeout_ms)
        self.sampling = SamplingController(base=settings.sample_rate,
                                           maximum=settings.max_sample_rate)
        self.feed = RingFeed(common.pin_dir, settings.queue_events, settings.poll_ms)
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.loaded: list[str] = []
        self.datapath = None
        self.maps_id = 0           # kernel id of the program's maps we read (changes on reload)
        self.reloads = 0           # times the program was loaded again and we reattached
        self.program_problem = ""  # why no program is being read ("" while one is)
        self.other_readers: list = []  # other processes reading the ring (ringowners.Holder)
        self.ring_lost = 0         # events the kernel could not put in the ring buffer
        self._lost_base = 0        # events_lost of the current program when we attached
        self._lost_before = 0      # ring losses counted on programs read before it
        self._rate = 1             # kernel sampling rate in force, stamped on every event
        self._offset = 0           # epoch - monotonic, refreshed every adapt round
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def sample_rate(self) -> int:
        """The kernel's 1-in-N sampling rate in force (also when `xdpguard` changed it)."""
        return self._rate

    @property
    def read(self) -> int:
        """Events taken from the ring buffer."""
        return self.feed.read

    @property
    def overflow(self) -> int:
        """Events dropped because the reader queue was full."""
        return self.feed.overflow

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        from services.dataplane import loader

        s, pin_dir = self.settings, self.common.pin_dir
        check_compression(s.compression)  # before anything is loaded: one line naming it
        if s.interfaces:
            modes = loader.load(list(s.interfaces), mode=s.xdp_mode, pin_dir=pin_dir)
            self.loaded = list(modes)
            log.info("XDP loaded on %s", ", ".join(f"{i} ({m})" for i, m in modes.items()))
        self._loop = asyncio.get_running_loop()
        await self._attach()
        await self._check_sharing()
        await self.publisher.start()
        log.info("capturing from %s to %s (node %s, sampling 1-in-%d)", pin_dir,
                 self.publisher.topic, self.common.node_id, self._rate)

    async def _attach(self) -> None:
        """Open the program pinned now (its maps and ring) in place of the one read so far."""
        from services.dataplane.datapath import Datapath

        maps_id = pinned_maps_id(self.common.pin_dir)
        datapath = Datapath.open(self.common.pin_dir)
        try:
            datapath.set_sample_rate(self.sampling.rate)
            lost = datapath.stats().get("events_lost", 0)
            await self.feed.close()
            self._hand_over()
            self.feed.open(self._loop)
        except BaseException:
            datapath.close()
            raise
        old, self.datapath = self.datapath, datapath
        if old is not None:
            old.close()
        self._lost_before, self._lost_base = self.ring_lost, lost
        self.maps_id, self.program_problem = maps_id, ""
        self._rate, self._offset = datapath.sample_rate(), mono_offset_ns()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._pump(), name="capture-pump")
            tg.create_task(self._adapt(), name="capture-adapt")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop reading, publish what was read (up to drain_timeout s), stop every client."""
        try:
            await self.feed.close()
            self._hand_over()
            await self.publisher.stop(drain_timeout)
        finally:
            if self.datapath is not None:
                self.datapath.close()
                self.datapath = None
            self._unload()
        log.info("capture stopped: %d read, %d published, %d ring lost, %d queue overflow, "
                 "%d refused (buffer full), %d not acknowledged", self.read,
                 self.publisher.stats.acked, self.ring_lost, self.overflow,
                 self.publisher.stats.refused_full, self.publisher.buffered)

    def abort_drain(self) -> None:
        self.publisher.abort_flush()

    def healthy(self) -> tuple[bool, str]:
        """(ok, reason): the first thing that stops events from reaching Kafka, if any."""
        pub = self.publisher
        if not self.feed.alive:
            return False, f"ring reader not running ({self.feed.thread_error})"
        if self.program_problem:
            return False, self.program_problem
        if self.other_readers:
            from services.dataplane.ringowners import describe
            return False, (f"the ring buffer is also read by {describe(self.other_readers)}: "
                           "it takes events this capture never sees")
        if not pub.stats.connected and (pub.buffered or pub.refused):
            return False, f"{pub.problem}; {pub.buffered} events buffered"
        return True, f"ok, sampling 1-in-{self.sample_rate}"

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

    # -- event loop side -----------------------------------------------------------------------
    def _hand_over(self) -> int:
        n = 0
        submit = self.publisher.submit_records
        for records in self.feed.take():
            submit(records, self._offset, self._rate)
            n += len(records)
        return n

    async def _pump(self) -> None:
        feed = self.feed
        while True:
            if feed.thread_error is not None:
                raise RuntimeError(f"ring reader thread failed: {feed.thread_error}")
            feed.wake.clear()
            if not self._hand_over():
                await feed.wake.wait()
            else:
                await asyncio.sleep(0)  # let the publisher run between hand-overs

    async def _adapt(self) -> None:
        last_lost = last_overflow = last_refused = 0
        next_sharing_check = time.monotonic() + SHARING_CHECK_S
        while True:
            await asyncio.sleep(self.settings.adapt_interval_ms / 1000)
            await self._watch_program()
            if time.monotonic() >= next_sharing_check:
                next_sharing_check = time.monotonic() + SHARING_CHECK_S
                await self._check_sharing()
            try:
                stats = self.datapath.stats()
            except (KernelError, OSError):
                continue  # unloaded under us: _watch_program says so
            self.ring_lost = self._lost_before + stats.get("events_lost", 0) - self._lost_base
            refused = self.publisher.stats.refused_full
            lost = (self.ring_lost - last_lost) + (self.overflow - last_overflow) + \
                (refused - last_refused)
            last_lost, last_overflow, last_refused = self.ring_lost, self.overflow, refused
            self._rate = self.datapath.sample_rate()  # also honours `xdpguard` changing it
            self._offset = mono_offset_ns()
            if not self.settings.adaptive:
                continue
            fill = max(self.feed.backlog / self.settings.queue_events,
                       self.publisher.buffered / self.settings.buffer_events)
            new = self.sampling.update(int(fill * 1000), 1000, lost)
            if new is not None:
                self.datapath.set_sample_rate(new)
                self._rate = new
                log.warning("sampling now 1-in-%d (%d events lost in the last %d ms, backlog "
                            "%.0f%%)", new, lost, self.settings.adapt_interval_ms, fill * 100)

    async def _watch_program(self) -> None:
        """Reattach when the program was loaded again; say so when it is gone."""
        pin_dir = self.common.pin_dir
        current = pinned_maps_id(pin_dir)
        if current == self.maps_id:
            return
        if current == 0:
            if not self.program_problem:
                log.error("no XDP program pinned in %s any more (unloaded?): nothing to read "
                          "until `xdpguard load`", pin_dir)
            self.program_problem = (f"no XDP program pinned in {pin_dir} (unloaded); waiting "
                                    "for `xdpguard load`")
            return
        old = self.maps_id
        try:
            await self._attach()
        except KernelError as exc:  # a load in progress: its maps are pinned before the program
            problem = f"the XDP program in {pin_dir} was loaded again but cannot be opened: {exc}"
            if problem != self.program_problem:
                log.warning("%s; retrying", problem)
            self.program_problem = problem
            return
        self.reloads += 1
        log.warning("the XDP program was loaded again (maps %d -> %d): reading its ring buffer, "
                    "sampling 1-in-%d", old, self.maps_id, self._rate)

    async def _check_sharing(self) -> None:
        """Look for other readers of the ring (a BPF ring buffer has one consumer position)."""
        from services.dataplane.ringowners import describe, ring_readers

        try:
            others = await asyncio.to_thread(ring_readers, self.common.pin_dir)
        except (KernelError, OSError) as exc:
            log.debug("cannot look for other ring readers: %s", exc)
            return
        if others and others != self.other_readers:
            log.error("the ring buffer of %s is also read by %s: events are split between the "
                      "readers (stop it; `xdpguard topics tail packets` shows what capture "
                      "publishes)", self.common.pin_dir, describe(others))
        self.other_readers = others


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
                ("client_restarts", "Kafka producer clients (re)built", st.client_restarts),
                ("program_reloads", "times the XDP program was loaded again and the capture "
                 "reattached to it", c.reloads)):
            yield CounterMetricFamily(p + name, doc, value=value)
        for name, doc, value in (
                ("queue_depth", "events waiting between the reader thread and the loop",
                 c.feed.backlog),
                ("buffered", "events pending or in flight to Kafka", c.publisher.buffered),
                ("sample_rate", "kernel 1-in-N sampling rate in force", c.sample_rate),
                ("next_seq", "next per-node sequence number", c.publisher.next_seq),
                ("kafka_connected", "1 while a producer client is connected", int(st.connected)),
                ("ring_readers_other", "other processes reading the ring buffer (they take "
                 "events from the capture)", len(c.other_readers)),
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
