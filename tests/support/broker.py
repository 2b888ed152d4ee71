"""A private Kafka broker for fault tests: same jars and script as the shared one, its own port
and state folder, so a test can stop, kill and restart it without touching other tests."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port_pair() -> int:
    """A port p with p+1 also free (the controller listens on p+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


class PrivateBroker:
    def __init__(self) -> None:
        self.port = free_port_pair()
        self.home = tempfile.mkdtemp(prefix="xdpguard-kafka-")
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _script(self, *args: str, timeout: float = 120) -> None:
        env = {k: v for k, v in os.environ.items() if k != "XDPGUARD_KAFKA_BOOTSTRAP"}
        env.update(XDPGUARD_KAFKA_HOME=self.home, XDPGUARD_KAFKA_PORT=str(self.port))
        subprocess.run([str(ROOT / "scripts" / "kafka"), *args], env=env, check=True,
                       timeout=timeout, capture_output=True)

    def start(self, wait: bool = True) -> None:
        self._script("start")
        if wait:
            self.wait()

    def wait(self, timeout: float = 90) -> None:
        from services.common.settings import load_common
        from services.wire.topics import wait_ready

        asyncio.run(wait_ready(load_common(kafka_bootstrap=self.bootstrap), timeout))

    def stop(self) -> None:
        self._script("stop")

    def kill(self) -> None:
        self._script("kill")

    def destroy(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
