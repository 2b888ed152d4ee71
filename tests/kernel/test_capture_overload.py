"""Capture under overload (issue 7): bursts larger than its queue are dropped and counted, the
kernel sampling rate rises, events say which rate they were sampled at, and the rate falls back
to 1-in-1 once the load ends."""
import asyncio
import time

from scapy.all import IP, TCP, Ether

from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.wire.topics import ensure_topics
from tests.support.kafka_io import consume_all
from tests.support.services import Service, common_env, free_port, http_get, metric, wait_healthy


def test_overload_raises_the_sampling_rate_counts_losses_and_recovers(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(ring_pages=256))
    fd = loader.prog_fd(pin_dir)
    cap = None
    try:
        port = free_port()
        cap = Service("services.capture", common_env(broker, pin_dir) | {
            "CAPTURE_METRICS_PORT": str(port), "CAPTURE_QUEUE_EVENTS": "500",
            "CAPTURE_ADAPT_INTERVAL_MS": "200", "CAPTURE_MAX_SAMPLE_RATE": "64"}, tmp_path)
        wait_healthy(port, cap)
        frame = bytes(Ether() / IP(src="10.7.7.7", dst="10.8.8.8") / TCP(dport=80, flags="S"))
        peak = 1
        for _ in range(15):  # bursts far beyond the queue: the reader must drop them
            bpfsys.prog_test_run(fd, frame, 10_000)
            time.sleep(0.1)
            with Datapath.open(pin_dir) as dp:
                peak = max(peak, dp.sample_rate())
        page = http_get(port, "/metrics")[1]
        assert metric(page, "xdpguard_capture_queue_overflow_total") > 0
        assert peak > 1
        assert "sampling now 1-in-" in cap.log()

        # Load over: the rate comes back down to 1-in-1 after calm rounds.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with Datapath.open(pin_dir) as dp:
                if dp.sample_rate() == 1:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError(f"sampling rate never went back to 1:\n{cap.log()}")
        published = int(metric(http_get(port, "/metrics")[1],
                               "xdpguard_capture_events_published_total"))
        got = asyncio.run(consume_all(broker, published))
        rates = {p.sample_rate for _, p in got}
        assert max(rates) > 1, rates  # events sampled under overload say so
        assert sorted(p.seq for _, p in got) == list(range(len(got)))
        assert cap.stop() == 0
    finally:
        import os
        os.close(fd)
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)
