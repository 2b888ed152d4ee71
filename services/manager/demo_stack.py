"""The whole pipeline on one host for the demo, the end-to-end test and the time-to-block bench.

Stack.start(): fresh topics under a per-run prefix, an attacker and a victim namespace joined by
a veth (netns.py), XDP loaded on the victim's end (pins in a per-run folder), then capture, one
scorer worker and the enforcer as subprocesses in the root namespace (where Kafka is), each
waited for on its /healthz. Stack.stop() removes everything it made, whatever state it is in:
processes (SIGTERM, then SIGKILL), XDP and pins, namespaces, the run's topics, the temp folder.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.common.paths import INSTALL_DIR
from services.common.settings import CommonSettings, load_common

from . import netns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(page: str, name: str) -> float:
    """Sum of the samples of `name` (any labels) in a Prometheus text page."""
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    port: int = 0

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    scorer_env: dict = field(default_factory=dict)
    enforcer_env: dict = field(default_factory=dict)
    keep_logs: bool = False
    common: CommonSettings | None = None
    topo: netns.Topology | None = None
    pin_dir: str = ""
    procs: list[Proc] = field(default_factory=list)
    tmp: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, say=lambda msg: None) -> None:
        from services.wire.topics import ensure_topics, topic_specs
        base = load_common()
        self.common = load_common(topic_prefix=f"{base.topic_prefix}demo-{self.tag}.",
                                  node_id=f"demo-{self.tag}",
                                  pin_dir=f"/sys/fs/bpf/xdpguard-demo-{self.tag}")
        self.pin_dir = self.common.pin_dir
        self.tmp = Path(tempfile.mkdtemp(prefix=f"xdpguard-demo-{self.tag}-"))
        asyncio.run(ensure_topics(self.common, topic_specs(self.common)))  # the scorer makes its own
        self.topo = netns.create(self.tag)
        t = self.topo
        say(f"namespaces {t.attacker} ({t.attacker_ip}, benign client {t.client_ip}) and "
            f"{t.victim} ({t.victim_ip}) joined by veth {t.veth_attacker}/{t.veth_victim}")
        modes = netns.attach_xdp(t, self.pin_dir)
        say(f"XDP on {t.veth_victim} in {t.victim} ({modes[t.veth_victim]} mode), pins in "
            f"{self.pin_dir}")
        self._spawn("capture", ["-m", "services.capture"], "CAPTURE_METRICS_PORT",
                    {"CAPTURE_INTERFACES": ""})
        self._spawn("scorer", ["-m", "services.scorer", "worker"], "SCORER_METRICS_PORT",
                    {"SCORER_DATADIR": str(self.tmp / "scorer-data"), **self.scorer_env})
        self._spawn("enforcer", ["-m", "services.enforcer"], "ENFORCER_METRICS_PORT",
                    {"ENFORCER_PROTECT_ADDRESSES": t.victim_ip, **self.enforcer_env})
        t0 = time.monotonic()
        for p in self.procs:
            self.wait_healthy(p)
        say(f"capture, scorer and enforcer healthy in {time.monotonic() - t0:.1f} s (Kafka "
            f"{self.common.kafka_bootstrap}, topics {self.common.topic_prefix}*)")

    def _spawn(self, name: str, args: list[str], port_var: str, extra: dict) -> None:
        port = free_port()
        env = {**os.environ, "XDPGUARD_KAFKA_BOOTSTRAP": self.common.kafka_bootstrap,
               "XDPGUARD_TOPIC_PREFIX": self.common.topic_prefix,
               "XDPGUARD_NODE_ID": self.common.node_id, "XDPGUARD_PIN_DIR": self.pin_dir,
               "PYTHONUNBUFFERED": "1", port_var: str(port), **extra}
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, *args], env=env, cwd=INSTALL_DIR, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(Proc(name, popen, log, port))

    def wait_healthy(self, p: Proc, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.text()[-3000:]}")
            with contextlib.suppress(OSError):
                if http_get(p.port, "/healthz")[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{p.name} not healthy after {timeout:.0f} s:\n{p.text()[-3000:]}")

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def metrics(self, name: str) -> str:
        return http_get(self.proc(name).port, "/metrics")[1]

    def stop(self) -> dict[str, int]:
        """Tear everything down; returns each service's exit code. Safe to call twice."""
        codes = {}
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                codes[p.name] = p.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                codes[p.name] = p.popen.wait()
        self.procs = []
        if self.topo is not None:
            with contextlib.suppress(Exception):
                netns.detach_xdp(self.topo, self.pin_dir)
            netns.teardown(self.topo)
            self.topo = None
        if self.pin_dir:
            shutil.rmtree(self.pin_dir, ignore_errors=True)
        if self.common is not None:
            with contextlib.suppress(Exception):
                asyncio.run(delete_topics(self.common))
        if self.tmp is not None and not self.keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return codes

    # -- traffic and rules ---------------------------------------------------------------------
    def add_attacker_address(self, ip: str) -> None:
        netns.sh("ip", "-n", self.topo.attacker, "addr", "add", f"{ip}/24", "dev",
                 self.topo.veth_attacker)

    def syn_flood(self, src: str, pps: int = 2000, dport: int = 80) -> subprocess.Popen:
        """hping3 SYN flood from `src` (fixed source address, incrementing source ports)."""
        interval = max(1, 1_000_000 // pps)
        return self.topo.popen(self.topo.attacker, "hping3", "-q", "-S", "-p", str(dport), "-a", src,
                               "-i", f"u{interval}", self.topo.victim_ip,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def benign_ping(self, interval: float = 0.2) -> subprocess.Popen:
        return self.topo.popen(self.topo.attacker, "ping", "-n", "-q", "-i", str(interval),
                               "-I", self.topo.client_ip, "-W", "1", self.topo.victim_ip,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def benign_http(self, interval: float = 0.1, port: int = 8080) -> tuple[subprocess.Popen, subprocess.Popen]:
        """A web server in the victim namespace and a client fetching from it every `interval` s
        from the benign address; the client prints `N requests, M answered` when interrupted."""
        t = self.topo
        server = t.popen(t.victim, sys.executable, "-m", "http.server", str(port), "--bind",
                         t.victim_ip, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = t.popen(t.attacker, sys.executable, "-c", _HTTP_CLIENT.format(
            src=t.client_ip, dst=t.victim_ip, port=port, interval=interval),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return server, client

    def rules_hitting(self, address: str) -> list:
        """Installed rules that match traffic from `address`, with their hit counters."""
        from services.dataplane.datapath import Datapath
        from services.records.rules import Scope
        ip = ipaddress.ip_address(address)
        out = []
        with Datapath.open(self.pin_dir) as dp:
            for s in dp.rules():
                r = s.rule
                if (r.scope is Scope.SRC_PREFIX and r.covers(address, self.topo.victim_ip)) or \
                        (r.scope is Scope.FLOW and ipaddress.ip_address(r.src) == ip) or \
                        (r.scope is Scope.DST_LIMIT and r.dst == self.topo.victim_ip):
                    out.append(s)
        return out


_HTTP_CLIENT = """
import signal, socket, sys, time
sent = ok = 0
def done(*_):
    print(f"{{sent}} requests, {{ok}} answered", flush=True); sys.exit(0)
signal.signal(signal.SIGINT, done); signal.signal(signal.SIGTERM, done)
time.sleep(0.5)  # the server is starting
while True:
    sent += 1
    try:
        with socket.create_connection(("{dst}", {port}), timeout=1, source_address=("{src}", 0)) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\nHost: victim\\r\\n\\r\\n")
            if s.recv(64).startswith(b"HTTP/"):
                ok += 1
            while s.recv(65536):
                pass
    except OSError:
        pass
    time.sleep({interval})
"""


def http_counts(output: str) -> tuple[int, int]:
    for line in output.splitlines():
        if line.endswith("answered"):
            parts = line.split()
            return int(parts[0]), int(parts[2])
    return 0, 0


def stop_traffic(p: subprocess.Popen) -> str:
    """SIGINT (hping3 and ping print their statistics), return the output."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out or ""


def transmitted_received(output: str) -> tuple[int, int]:
    """(sent, received) from ping's or hping3's closing statistics line."""
    for line in output.splitlines():
        if "packets transmitted" in line:
            parts = [x.strip() for x in line.split(",")]
            sent = int(parts[0].split()[0])
            received = int(parts[1].split()[0])
            return sent, received
    return 0, 0


async def delete_topics(common: CommonSettings) -> None:
    """Delete every topic of this run (its prefix), faust's internal ones included."""
    from aiokafka.admin import AIOKafkaAdminClient

    from services.wire.kafka import client_options
    admin = AIOKafkaAdminClient(**client_options(common))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(common.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
