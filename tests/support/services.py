"""Start xdpguard services as real subprocesses for tests, and stop them with SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common_env(broker, pin_dir: str, node: str = "node-test") -> dict[str, str]:
    env = dict(os.environ)
    env.update({"XDPGUARD_KAFKA_BOOTSTRAP": broker.kafka_bootstrap,
                "XDPGUARD_TOPIC_PREFIX": broker.topic_prefix, "XDPGUARD_PIN_DIR": pin_dir,
                "XDPGUARD_NODE_ID": node, "PYTHONUNBUFFERED": "1"})
    return env


class Service:
    """`python -m <module>` with `env`; logs to a file the test can print on failure."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, args: tuple = ()):
        self.module = module
        self.log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def http_get(port: int, path: str, timeout: float = 2) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_healthy(port: int, service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise AssertionError(f"{service.module} exited {service.proc.returncode}:\n{service.log()}")
        try:
            if http_get(port, "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{service.module} not healthy after {timeout} s:\n{service.log()}")


def wait_until(pred, timeout: float = 20, what: str = "condition") -> None:
    """Poll `pred()` every 0.1 s until it is true; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric(text: str, name: str) -> float:
    """Sum of the samples of `name` (any labels) in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def attach_victim(pair, pin_dir: str) -> None:
    """Load, pin and attach the program (generic mode) to the veth of namespace b."""
    from services.dataplane import loader
    from services.manager.netns import in_netns

    with in_netns(pair.b):
        loader.load([pair.veth_b], mode="generic", pin_dir=pin_dir)
