"""The running capture as an operator meets it (issue 14, items 2 and 8): on a `packets` topic the
broker auto-created with 1 partition its /healthz names that (not "Kafka unreachable"); after
`xdpguard unload` and `load` again it says it has no program, then reattaches to the new ring,
and events flow again."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from services.dataplane import loader
from services.wire.topics import PACKETS, TopicSpec, ensure_topics
from tests.support.kafka_io import consume_all
from tests.support.services import (ROOT, Service, attach_victim, common_env, free_port, http_get,
                                    metric, wait_healthy)

pytestmark = pytest.mark.timeout(120)


def health_until(port: int, cap: Service, pred, timeout: float = 30) -> tuple[int, str]:
    """Poll /healthz until pred(status, body); AssertionError with the last answer and the log."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert cap.proc.poll() is None, cap.log()
        try:
            last = http_get(port, "/healthz")
            if pred(*last):
                return last
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/healthz never matched; last {last}\n{cap.log()[-3000:]}")


def start_capture(broker, pin_dir: str, tmp_path) -> tuple[Service, int]:
    """The capture service on the program pinned in `pin_dir`; (service, metrics port)."""
    port = free_port()
    return Service("services.capture", common_env(broker, pin_dir)
                   | {"CAPTURE_METRICS_PORT": str(port)}, tmp_path), port


def send_udp(pair, dport: int, n: int) -> None:
    script = (f"from scapy.all import *; sendp([Ether()/IP(src='{pair.ip_a}',dst='{pair.ip_b}')"
              f"/UDP(sport=4000+i,dport={dport}) for i in range({n})], iface='{pair.veth_a}',"
              " verbose=0)")
    pair.run(pair.a, sys.executable, "-c", script)


def xdpguard(pin_dir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.manager", *args], cwd=ROOT,
                          env={**os.environ, "XDPGUARD_PIN_DIR": pin_dir}, capture_output=True,
                          text=True, timeout=60)


def test_health_names_a_packets_topic_with_the_wrong_partition_count(netns_pair, pin_dir, broker,
                                                                    tmp_path):
    name = broker.topic(PACKETS)
    asyncio.run(ensure_topics(broker, [TopicSpec(name, 1, 1)]))  # as the broker auto-creates it
    attach_victim(netns_pair, pin_dir)
    cap = None
    try:
        cap, port = start_capture(broker, pin_dir, tmp_path)
        want = f"topic {name} has 1 partitions but XDPGUARD_PACKETS_PARTITIONS=" \
               f"{broker.packets_partitions}"
        status, body = health_until(port, cap, lambda s, b: s != 200 and want in b)
        assert status == 503 and "unreachable" not in body, body
        send_udp(netns_pair, 53, 20)  # events are buffered, the reason stays the real one
        status, body = health_until(port, cap, lambda s, b: "events buffered" in b)
        assert status == 503 and want in body and "unreachable" not in body, body
        assert "Traceback" not in cap.log()
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)


def test_capture_reattaches_after_unload_and_load(netns_pair, pin_dir, broker, tmp_path):
    asyncio.run(ensure_topics(broker))
    attach_victim(netns_pair, pin_dir)
    cap = None
    try:
        cap, port = start_capture(broker, pin_dir, tmp_path)
        wait_healthy(port, cap)
        send_udp(netns_pair, 53, 30)
        before = [p for _, p in asyncio.run(consume_all(broker, 30))]
        assert sum(p.dport == 53 for p in before) == 30

        res = xdpguard(pin_dir, "unload", "--all")
        assert res.returncode == 0, res.stderr
        status, body = health_until(port, cap, lambda s, b: s != 200)
        assert status == 503 and "unloaded" in body, body

        res = xdpguard(pin_dir, "load", "--netns", netns_pair.b, "-i", netns_pair.veth_b,
                       "--mode", "generic")
        assert res.returncode == 0, res.stderr
        health_until(port, cap, lambda s, b: s == 200)
        send_udp(netns_pair, 54, 30)
        got = [p for _, p in asyncio.run(consume_all(broker, len(before) + 30))]
        assert sum(p.dport == 54 for p in got) == 30, "no events from the new ring"
        assert sorted(p.seq for p in got) == list(range(len(got)))  # one sequence across the reload
        page = http_get(port, "/metrics")[1]
        assert metric(page, "xdpguard_capture_program_reloads_total") == 1
        assert cap.stop() == 0, cap.log()
        assert "Traceback" not in cap.log()
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)
