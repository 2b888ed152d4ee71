"""The compose tier's helpers: the compose command this machine has, a compose project (its name,
files and variables) with up/down/exec, what a project leaves behind, and the network the stack
protects: an attacker namespace joined by a veth to an interface of the ROOT namespace (the
"host" whose interface XDP guards; capture and enforcer run on the host network).
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.netns import sh

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
# what compose sees of the test's own environment: nothing of it but these
PASSED_ENV = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_CONFIG")


def compose_command() -> list[str] | None:
    """`docker compose` (v2) when the docker client on PATH has it, else Debian's `docker-compose`
    (1.29); XDPGUARD_COMPOSE overrides (e.g. "docker-compose"). None when there is neither."""
    if os.environ.get("XDPGUARD_COMPOSE"):
        return shlex.split(os.environ["XDPGUARD_COMPOSE"])
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return sh("docker", *args, check=check, timeout=timeout)


@dataclass
class Project:
    """One compose project: `-p name`, its files, and the variables its files are rendered with."""
    cmd: list[str]
    name: str
    files: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [*self.cmd, "-p", self.name]
        for f in self.files:
            argv += ["-f", str(COMPOSE_DIR / f)]
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | self.env
        res = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{shlex.join(args)} failed ({res.returncode}):\n{res.stderr[-4000:]}")
        return res

    def up(self, *args: str) -> None:
        self.run("up", "-d", "--no-build", *args)

    def down(self) -> subprocess.CompletedProcess:
        return self.run("down", "-v", "--remove-orphans", "--timeout", "30", check=False)

    def containers(self, service: str) -> list[str]:
        """Ids of the service's running containers."""
        return self.run("ps", "-q", service).stdout.split()

    def exec(self, service: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return docker("exec", self.containers(service)[0], *cmd, check=False, timeout=timeout)

    def wait_healthy(self, *services: str, count: int = 1, timeout: float = 180) -> None:
        """Until every named service has `count` containers whose healthcheck passes."""
        deadline = time.monotonic() + timeout
        states: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            states = {s: [health(c) for c in self.containers(s)] for s in services}
            if all(v.count("healthy") >= count for v in states.values()):
                return
            time.sleep(2)
        raise AssertionError(f"{self.name}: not healthy within {timeout:.0f} s: {states}\n"
                             f"{self.logs()}")

    def logs(self, tail: int = 60) -> str:
        return self.run("logs", "--no-color", "--tail", str(tail), check=False).stdout[-12000:]

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes still labelled with this project."""
        label = f"label=com.docker.compose.project={self.name}"
        return {kind: docker(*cmd, "--filter", label, "-q").stdout.split()
                for kind, cmd in (("containers", ("ps", "-a")), ("networks", ("network", "ls")),
                                  ("volumes", ("volume", "ls")))}


def health(container: str) -> str:
    out = docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}"
                 "{{end}}", container, check=False).stdout.strip()
    return out or "gone"


@dataclass
class HostLink:
    """Namespace `ns` (the attacker, plus a benign client at a second address) joined by a veth to
    `iface` in the root namespace, the protected interface at `host_ip`."""
    ns: str
    iface: str
    peer: str
    host_ip: str
    attacker_ip: str
    client_ip: str

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("nsenter", f"--net=/var/run/netns/{self.ns}", *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", f"--net=/var/run/netns/{self.ns}", *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def add_address(self, ip: str) -> None:
        sh("ip", "-n", self.ns, "addr", "add", f"{ip}/24", "dev", self.peer)

    def xdp_attached(self) -> bool:
        return "xdp" in sh("ip", "-d", "link", "show", "dev", self.iface, check=False).stdout


def create_host_link(prefix: str, net: str) -> HostLink:
    """A HostLink on `net` (three octets, e.g. "10.250.7"): host .2, attacker .66, client .10."""
    tag = secrets.token_hex(3)
    link = HostLink(ns=f"{prefix}-{tag}", iface=f"{prefix}h{tag}", peer=f"{prefix}p{tag}",
                    host_ip=f"{net}.2", attacker_ip=f"{net}.66", client_ip=f"{net}.10")
    try:
        sh("ip", "netns", "add", link.ns)
        sh("ip", "link", "add", link.iface, "type", "veth", "peer", "name", link.peer, "netns", link.ns)
        sh("ip", "addr", "add", f"{link.host_ip}/24", "dev", link.iface)
        sh("ip", "link", "set", link.iface, "up")
        for ip in (link.attacker_ip, link.client_ip):
            link.add_address(ip)
        sh("ip", "-n", link.ns, "link", "set", link.peer, "up")
        sh("ip", "-n", link.ns, "link", "set", "lo", "up")
    except Exception:
        destroy_host_link(link)
        raise
    return link


def destroy_host_link(link: HostLink) -> None:
    """Deleting the namespace deletes the veth pair, and with it any XDP program on it."""
    sh("ip", "netns", "del", link.ns, check=False)
    sh("ip", "link", "del", link.iface, check=False)


def syn_flood(link: HostLink, src: str, pps: int = 2000, dport: int = 80) -> subprocess.Popen:
    """hping3 SYN flood from `src` in the attacker namespace to the host's address."""
    return link.popen("hping3", "-q", "-S", "-p", str(dport), "-a", src,
                      "-i", f"u{max(1, 1_000_000 // pps)}", link.host_ip)


def rules(pin_dir: str) -> list[dict]:
    """`xdpguard list --json` run on the host (this tree's CLI) against `pin_dir`."""
    res = subprocess.run([str(ROOT / ".venv/bin/xdpguard"), "list", "--json"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "XDPGUARD_PIN_DIR": pin_dir})
    return json.loads(res.stdout) if res.returncode == 0 else []


def wait_rule_for(pin_dir: str, src: str, timeout: float = 60, min_dropped: int = 1) -> dict | None:
    """The first rule in `pin_dir` whose source is `src` and that has dropped `min_dropped` packets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in rules(pin_dir):
            if r["src"] in (src, f"{src}/32") and r["dropped"] >= min_dropped:
                return r
        time.sleep(0.5)
    return None
