"""The node's services through a broker crash, as real processes: capture and enforcer run against
a private broker that is SIGKILLed and started again. While Kafka is gone the data plane keeps
enforcing the rules it has, capture buffers and neither service exits (whether /healthz notices
within 10 s is printed, not asserted: see the test);
when Kafka is back capture drains without a sequence gap and the enforcer applies new verdicts."""
import asyncio
import collections
import os
import time
import uuid

from services.dataplane import bpfsys, loader
from services.records.rules import Action, Rule, Scope
from services.common.settings import load_common
from services.wire.topics import PACKETS, ensure_topics
from tests.support.enforcer_proc import installed, verdict
from tests.support.kafka_io import publish, read_topic
from tests.support.services import (Service, common_env, free_port, http_get, metric, wait_healthy,
                                    wait_until)

ETH = bytes.fromhex("020000000002020000000001")


def udp_frame(src: str, dst: str = "10.2.0.2", sport: int = 4000) -> bytes:
    import ipaddress
    import struct
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return ETH + b"\x08\x00" + ip + struct.pack("!HHHH", sport, 53, 8, 0)


def feed(fd: int, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        bpfsys.prog_test_run(fd, udp_frame(f"10.1.{i // 250 % 250}.{i % 250 + 1}", sport=i % 60000))


def test_rel_capture_and_enforcer_ride_out_a_broker_crash(private_broker, pin_dir, tmp_path):
    common = load_common(kafka_bootstrap=private_broker.bootstrap,
                         topic_prefix=f"r{uuid.uuid4().hex[:8]}.")
    asyncio.run(ensure_topics(common))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=16,
                                                         ring_pages=64))
    fd = loader.prog_fd(pin_dir)
    cap = enf = None
    try:
        cport, eport = free_port(), free_port()
        env = common_env(common, pin_dir)
        cap = Service("services.capture", env | {"CAPTURE_METRICS_PORT": str(cport),
                                                "CAPTURE_REQUEST_TIMEOUT_MS": "3000"}, tmp_path)
        enf = Service("services.enforcer", env | {"ENFORCER_METRICS_PORT": str(eport),
                                                 "ENFORCER_FROM_BEGINNING": "1"}, tmp_path)
        wait_healthy(cport, cap)
        wait_healthy(eport, enf)
        block = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.0/24")
        asyncio.run(publish(common, [verdict(block)]))
        wait_until(lambda: block.key() in installed(pin_dir), what="the first rule")
        feed(fd, 1000)
        wait_until(lambda: metric(http_get(cport, "/metrics")[1],
                                "xdpguard_capture_events_published_total") >= 1000, what="events")

        private_broker.kill()
        feed(fd, 1000, 1000)
        # the kernel keeps enforcing what it has
        assert bpfsys.prog_test_run(fd, udp_frame("198.51.100.9"))[0] == 1  # XDP_DROP
        # Not asserted (reported): /healthz turns unhealthy only once a produce has failed,
        # and aiokafka may sit in metadata retries without failing the send for a long time.
        deadline, noticed = time.monotonic() + 10, None
        while time.monotonic() < deadline and noticed is None:
            if http_get(cport, "/healthz")[0] != 200:
                noticed = round(10 - (deadline - time.monotonic()), 1)
            time.sleep(0.2)
        assert cap.proc.poll() is None, cap.log()
        assert enf.proc.poll() is None, enf.log()

        private_broker.start()
        feed(fd, 1000, 2000)
        wait_until(lambda: http_get(cport, "/healthz")[0] == 200, timeout=60, what="capture healthy")
        page = lambda: http_get(cport, "/metrics")[1]  # noqa: E731
        wait_until(lambda: metric(page(), "xdpguard_capture_buffered") == 0
                 and metric(page(), "xdpguard_capture_events_published_total") >= 3000,
                 timeout=60, what="capture to drain")
        second = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24")
        asyncio.run(publish(common, [verdict(second)]))
        wait_until(lambda: second.key() in installed(pin_dir), timeout=60,
                 what="the enforcer to apply a verdict after the crash")
        assert cap.stop() == 0, cap.log()
        got = asyncio.run(read_topic(common, common.topic(PACKETS)))
        seqs = collections.Counter(p.seq for p in got)
        assert set(seqs) == set(range(max(seqs) + 1)), "a sequence gap"
        assert len(seqs) >= 3000
        print(f"\nnode through a broker crash: {len(got)} events, {len(seqs)} sequence numbers, "
              f"{sum(c - 1 for c in seqs.values())} duplicates; /healthz unhealthy after "
              f"{noticed} s of the outage (None: not within 10 s)")
    finally:
        for svc in (cap, enf):
            if svc is not None:
                svc.stop()
        os.close(fd)
        loader.unload_all(pin_dir)
