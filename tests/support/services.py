"""Start xdpguard services as real subprocesses for tests, and stop them with SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# One copy of the port and HTTP helpers: the demo's own (tests read /metrics as the demo does).
from services.manager.demo_stack import free_port, http_get, metric

__all__ = ["ROOT", "Service", "attach_victim", "common_env", "free_port", "http_get", "metric",
           "stop_process", "wait_healthy", "wait_until"]
ROOT = Path(__file__).resolve().parents[2]


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
        """SIGTERM, then SIGKILL after `timeout` s; returns the exit status."""
        rc = stop_process(self.proc, signal.SIGTERM, timeout)
        self._log.close()
        return rc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Send `sig` to a running process, SIGKILL it if it has not exited after `timeout` s;
    returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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


def attach_victim(pair, pin_dir: str) -> None:
    """Load, pin and attach the program (generic mode) to the veth of namespace b."""
    from services.dataplane import loader
    from services.manager.netns import in_netns

    with in_netns(pair.b):
        loader.load([pair.veth_b], mode="generic", pin_dir=pin_dir)
