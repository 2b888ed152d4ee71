"""SIGTERM asks, a second SIGTERM forces: with Kafka unreachable and events buffered, the
capture waits to drain after the first signal, gives up at the second, still stops cleanly and
says how many events were never acknowledged."""
import signal
import socket
import time

from scapy.all import IP, UDP, Ether

from services.dataplane import bpfsys, loader
from tests.support.services import Service, common_env, free_port, http_get, metric, wait_healthy


def test_first_sigterm_drains_second_forces(broker, pin_dir, tmp_path):
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(ring_pages=16))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cap = None
    try:
        port = free_port()
        env = common_env(broker, pin_dir) | {"CAPTURE_METRICS_PORT": str(port),
                                             "XDPGUARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}"}
        cap = Service("services.capture", env, tmp_path)
        wait_healthy(port, cap)
        fd = loader.prog_fd(pin_dir)
        try:
            bpfsys.prog_test_run(fd, bytes(Ether() / IP(dst="10.1.1.1") / UDP(dport=53)), 100)
        finally:
            import os
            os.close(fd)
        deadline = time.monotonic() + 10
        while metric(http_get(port, "/metrics")[1], "xdpguard_capture_buffered") < 100:
            assert time.monotonic() < deadline, cap.log()
            time.sleep(0.1)
        assert http_get(port, "/healthz")[0] == 503  # Kafka unreachable with events waiting
        cap.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert cap.proc.poll() is None  # still trying to drain
        t0 = time.monotonic()
        cap.proc.send_signal(signal.SIGTERM)
        assert cap.proc.wait(5) == 0
        assert time.monotonic() - t0 < 3
        log = cap.log()
        assert "forcing stop" in log and "100 not acknowledged" in log, log
    finally:
        if cap is not None:
            cap.stop()
        loader.unload_all(pin_dir)
