"""The capture service as a real process: XDP on a veth in a namespace, real UDP packets from the
other namespace, every sampled event on Kafka with contiguous sequence numbers, metrics and health
served, and a clean exit on SIGTERM."""
import asyncio

from services.dataplane import loader
from services.wire.topics import ensure_topics
from tests.support.kafka_io import consume_all
from tests.support.services import attach_victim
from tests.support.services import Service, common_env, free_port, http_get, metric, wait_healthy

SEND = 300


def test_capture_publishes_every_packet_in_order_and_reports_metrics(netns_pair, pin_dir, broker,
                                                                     tmp_path):
    asyncio.run(ensure_topics(broker))
    attach_victim(netns_pair, pin_dir)
    cap = None
    try:
        port = free_port()
        env = common_env(broker, pin_dir) | {"CAPTURE_METRICS_PORT": str(port)}
        cap = Service("services.capture", env, tmp_path)
        wait_healthy(port, cap)
        script = (f"from scapy.all import *; sendp([Ether()/IP(src='{netns_pair.ip_a}',"
                  f"dst='{netns_pair.ip_b}')/UDP(sport=4000+i,dport=53) for i in range({SEND})],"
                  f" iface='{netns_pair.veth_a}', verbose=0)")
        import sys
        netns_pair.run(netns_pair.a, sys.executable, "-c", script)
        got = asyncio.run(consume_all(broker, SEND))
        udp = [p for _, p in got if p.proto == 17 and p.src == netns_pair.ip_a and p.dport == 53]
        assert len(udp) == SEND
        assert sorted(p.seq for _, p in got) == list(range(len(got)))  # nothing else lost
        assert {p.node for _, p in got} == {"node-test"}
        status, page = http_get(port, "/metrics")
        assert status == 200
        assert metric(page, "xdpguard_capture_events_published_total") >= SEND
        assert metric(page, "xdpguard_capture_queue_overflow_total") == 0
        assert metric(page, "xdpguard_capture_sample_rate") == 1
        # the kernel's own counters, for the drop panels: every sent packet was seen
        seen = [l for l in page.splitlines()
                if l.startswith('xdpguard_xdp_packets_total{counter="seen"}')]
        assert seen and float(seen[0].rsplit(" ", 1)[1]) >= SEND
        assert cap.stop() == 0, cap.log()
        assert "capture stopped" in cap.log()
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)
