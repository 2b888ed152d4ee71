"""Capture loads the XDP program itself on CAPTURE_INTERFACES (here the root-namespace end of a
veth whose peer is in a namespace of the test), publishes what arrives there, and with
CAPTURE_UNLOAD_ON_EXIT detaches it and removes the pins when it stops."""
import asyncio
import os
import secrets

from services.dataplane import loader
from services.wire.topics import ensure_topics
from services.manager.netns import sh
from tests.support.kafka_io import consume_all
from tests.support.services import Service, common_env, free_port, http_get, metric, wait_healthy


def test_capture_loads_on_its_interfaces_and_unloads_on_exit(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    tag = secrets.token_hex(3)
    ns, host_if, peer_if = f"xgc-{tag}", f"xgch{tag}", f"xgcp{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, peer_ip = f"10.252.{octet}.1", f"10.252.{octet}.2"
    cap = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{peer_ip}/24", "dev", peer_if)
        sh("ip", "-n", ns, "link", "set", peer_if, "up")
        port = free_port()
        cap = Service("services.capture", common_env(broker, pin_dir) | {
            "CAPTURE_METRICS_PORT": str(port), "CAPTURE_INTERFACES": host_if,
            "CAPTURE_XDP_MODE": "generic", "CAPTURE_UNLOAD_ON_EXIT": "1"}, tmp_path)
        wait_healthy(port, cap)
        st = loader.status(pin_dir)
        assert [a["iface"] for a in st["attached"]] == [host_if] and st["attached"][0]["live"]
        sh("nsenter", f"--net=/var/run/netns/{ns}", "ping", "-n", "-q", "-c", "5", "-i", "0.05",
           "-W", "1", host_ip, check=False)
        got = asyncio.run(consume_all(broker, 5))
        assert sum(1 for _, p in got if p.src == peer_ip and p.proto == 1) >= 5
        assert metric(http_get(port, "/metrics")[1], "xdpguard_capture_events_published_total") >= 5
        assert cap.stop() == 0, cap.log()
        assert not loader.status(pin_dir)["loaded"] and not os.path.exists(pin_dir)
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)
