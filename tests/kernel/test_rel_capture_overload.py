"""Capture under overload, as a real process: BPF_PROG_TEST_RUN (repeat) floods the program's ring
buffer with far more sampled events than the capture can read and publish. The kernel sampling
rate rises, every loss is counted (ring, queue or buffer) and reported in /metrics, the events
published say which rate was in force, the per-node sequence numbers stay gap-free, the
process's memory (RSS) stays bounded, and when the flood ends the rate falls back to 1-in-1.
A second case does the same with Kafka unreachable: the buffer fills to its bound, further
events are refused and counted, and memory still stays bounded."""
import asyncio
import os
import threading
import time

from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.wire.topics import PACKETS, ensure_topics
from tests.support.kafka_io import read_topic
from tests.support.services import Service, common_env, free_port, http_get, metric, wait_healthy

FRAME = bytes.fromhex(
    "020000000002020000000001080045000028000100004006f96c0a0100010a020002"
    "04d2005000000000000000005002200091a20000")  # IPv4 TCP SYN 10.1.0.1:1234 -> 10.2.0.2:80


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Flood:
    """A thread running the program on FRAME in bursts until stopped."""

    def __init__(self, pin_dir: str, repeat: int = 20_000) -> None:
        self.fd = loader.prog_fd(pin_dir)
        self.repeat, self.runs = repeat, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            bpfsys.prog_test_run(self.fd, FRAME, self.repeat)
            self.runs += self.repeat
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        os.close(self.fd)


def start_capture(broker, pin_dir, tmp_path, **extra):
    port = free_port()
    env = common_env(broker, pin_dir) | {
        "CAPTURE_METRICS_PORT": str(port), "CAPTURE_ADAPT_INTERVAL_MS": "200",
        "CAPTURE_QUEUE_EVENTS": "20000", "CAPTURE_BUFFER_EVENTS": "50000", "CAPTURE_POLL_MS": "50",
        "CAPTURE_MAX_SAMPLE_RATE": "512"} | extra
    cap = Service("services.capture", env, tmp_path)
    wait_healthy(port, cap)
    return cap, port


def page(port) -> str:
    return http_get(port, "/metrics")[1]


def lost(text: str) -> float:
    return sum(metric(text, f"xdpguard_capture_{n}_total")
               for n in ("ring_lost", "queue_overflow", "events_refused"))


def test_rel_capture_overload_raises_sampling_counts_losses_and_recovers(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=16,
                                                         ring_pages=16))
    cap = None
    try:
        cap, port = start_capture(broker, pin_dir, tmp_path)
        rss0 = rss_kib(cap.proc.pid)
        peak, rates = rss0, []
        with Flood(pin_dir) as flood, Datapath.open(pin_dir) as dp:
            for _ in range(40):  # 8 s of flood
                time.sleep(0.2)
                rates.append(dp.sample_rate())
                peak = max(peak, rss_kib(cap.proc.pid))
            mid = page(port)
        assert max(rates) >= 8, f"sampling never rose: {rates}"
        assert lost(mid) > 0, "overload without a counted loss"
        assert metric(mid, "xdpguard_capture_sample_rate") >= 8
        # recovery: quiet again -> back to 1-in-1 (halving every calm 6 x 200 ms)
        deadline = time.monotonic() + 30
        with Datapath.open(pin_dir) as dp:
            while dp.sample_rate() != 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert dp.sample_rate() == 1, "sampling did not fall back after the flood"
            kernel = dp.stats()
        end = page(port)
        assert metric(end, "xdpguard_capture_sample_rate") == 1
        assert peak - rss0 < 150 * 1024, f"RSS grew {(peak - rss0) // 1024} MiB under overload"
        published = metric(end, "xdpguard_capture_events_published_total")
        accepted = metric(end, "xdpguard_capture_events_accepted_total")
        assert published == accepted > 0
        # what was read is what the kernel wrote, every loss is in a counter
        assert metric(end, "xdpguard_capture_events_read_total") + metric(
            end, "xdpguard_capture_ring_lost_total") <= kernel["events"] + kernel["events_lost"]
        assert cap.stop() == 0, cap.log()
        got = asyncio.run(read_topic(broker, broker.topic(PACKETS)))
        assert sorted(p.seq for p in got) == list(range(int(accepted)))  # no gap, no duplicate
        assert max(p.sample_rate for p in got) >= 8, "events do not say the rate in force"
        print(f"\noverload: {flood.runs} runs, rates {sorted(set(rates))}, lost {lost(end):.0f}, "
              f"RSS {rss0 // 1024} -> peak {peak // 1024} MiB, published {published:.0f}")
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)


def test_rel_capture_with_kafka_unreachable_refuses_beyond_its_bound_in_bounded_memory(
        broker, pin_dir, tmp_path):
    from dataclasses import replace

    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=16,
                                                         ring_pages=16))
    cap = None
    unreachable = replace(broker, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    try:
        cap, port = start_capture(unreachable, pin_dir, tmp_path, CAPTURE_BUFFER_EVENTS="30000")
        rss0 = rss_kib(cap.proc.pid)
        peak = rss0
        with Flood(pin_dir, repeat=5000):
            for _ in range(30):
                time.sleep(0.2)
                peak = max(peak, rss_kib(cap.proc.pid))
        text = page(port)
        assert metric(text, "xdpguard_capture_buffered") <= 30000
        assert metric(text, "xdpguard_capture_events_refused_total") > 0 or \
            metric(text, "xdpguard_capture_sample_rate") > 1
        assert metric(text, "xdpguard_capture_events_published_total") == 0
        assert http_get(port, "/healthz")[0] != 200  # unhealthy while Kafka is unreachable
        assert peak - rss0 < 150 * 1024, f"RSS grew {(peak - rss0) // 1024} MiB"
        assert cap.proc.poll() is None
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)
