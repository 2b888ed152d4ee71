"""Network namespaces for the demo (and the end-to-end tests): an attacker and a victim joined by
a veth pair, XDP on the victim's end, everything removed again by `teardown()`.

Layout (docs/capture.md, "Demo layout"): the services (capture, scorer, enforcer) stay in the
ROOT network namespace, where Kafka listens on 127.0.0.1; they reach the XDP program only
through its pins in bpffs, which every network namespace shares (nsenter --net keeps the mount
namespace). The program is loaded, pinned and attached (a pinned bpf_link) by loader.load
called from a thread switched into the victim namespace; unloading removes the link pin, and
deleting the namespace would detach it too.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(name: str):
    """Run the body with this thread in network namespace `name` (mounts unchanged)."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Topology:
    attacker: str          # namespace names
    victim: str
    veth_attacker: str
    veth_victim: str
    attacker_ip: str       # the attack comes from here
    client_ip: str         # benign traffic comes from here (same namespace, second address)
    victim_ip: str

    def run(self, ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return sh("nsenter", f"--net=/var/run/netns/{ns}", *cmd, **kw)

    def popen(self, ns: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", f"--net=/var/run/netns/{ns}", *cmd], **kw)


def create(tag: str | None = None) -> Topology:
    tag = tag or secrets.token_hex(3)
    octet = int(tag[:2], 16) % 200 + 20
    t = Topology(attacker=f"xg-attacker-{tag}", victim=f"xg-victim-{tag}",
                 veth_attacker=f"xgA{tag}", veth_victim=f"xgV{tag}",
                 attacker_ip=f"10.251.{octet}.66", client_ip=f"10.251.{octet}.10",
                 victim_ip=f"10.251.{octet}.2")
    try:
        sh("ip", "netns", "add", t.attacker)
        sh("ip", "netns", "add", t.victim)
        sh("ip", "link", "add", t.veth_attacker, "netns", t.attacker, "type", "veth",
           "peer", "name", t.veth_victim, "netns", t.victim)
        for ns, dev, ips in ((t.attacker, t.veth_attacker, (t.attacker_ip, t.client_ip)),
                             (t.victim, t.veth_victim, (t.victim_ip,))):
            for ip in ips:
                sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # The attack's SYNs get RSTs from the victim; keep the kernel from rate limiting replies
        # so benign pings are answered whatever the flood does.
        sh("ip", "netns", "exec", t.victim, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
    except BaseException:
        teardown(t)
        raise
    return t


def attach_xdp(t: Topology, pin_dir: str, mode: str = "generic") -> dict[str, str]:
    """Load the program (pinned under pin_dir) and attach it to the victim's veth, from inside
    the victim namespace. Generic mode by default: it works on any kernel and veth driver
    setting; native XDP on a veth works on this kernel too (bench/veth_bench.py uses it)."""
    from services.dataplane import loader
    with in_netns(t.victim):
        return loader.load([t.veth_victim], mode=mode, pin_dir=pin_dir)


def detach_xdp(t: Topology, pin_dir: str) -> None:
    """Detach and remove every pin (tolerates a half-done load)."""
    from services.dataplane import loader
    loader.unload_all(pin_dir)


def teardown(t: Topology) -> None:
    """Delete both namespaces (the veth and its XDP attachment go with them)."""
    for ns in (t.attacker, t.victim):
        sh("ip", "netns", "del", ns, check=False)
