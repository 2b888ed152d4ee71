"""Two network namespaces joined by a veth pair; `in_netns` runs code inside one of them.

`in_netns` switches only the calling thread's network namespace (setns), not its mount
namespace, so /sys/fs/bpf pins stay visible; `ip netns exec` would remount /sys and hide them.
"""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass

# One implementation of the thread-local namespace switch: the product's (the demo uses it).
from services.manager.netns import in_netns  # noqa: F401


def sh(*cmd: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, **kw)


@dataclass
class NetnsPair:
    """Namespace `a` (the sender, "attacker") and `b` (the receiver, where XDP goes)."""
    a: str
    b: str
    veth_a: str
    veth_b: str
    ip_a: str
    ip_b: str
    ip6_a: str
    ip6_b: str

    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run a command with only its network namespace switched (nsenter --net)."""
        return sh("nsenter", f"--net=/var/run/netns/{ns}", *cmd, check=check, timeout=timeout, **kw)

    def ping(self, count: int = 3, interval: float = 0.2, wait: float = 1) -> int:
        """Ping b from a; returns the number of replies."""
        out = self.run(self.a, "ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                       "-W", str(wait), self.ip_b, check=False).stdout
        for line in out.splitlines():
            if "received" in line:
                return int(line.split(",")[1].split()[0])
        return 0


def create_pair() -> NetnsPair:
    tag = secrets.token_hex(3)
    octet = int(tag[:2], 16) % 200 + 20
    pair = NetnsPair(a=f"xga-{tag}", b=f"xgb-{tag}", veth_a=f"xa{tag}", veth_b=f"xb{tag}",
                     ip_a=f"10.250.{octet}.1", ip_b=f"10.250.{octet}.2",
                     ip6_a=f"fd00:250:{octet:x}::1", ip6_b=f"fd00:250:{octet:x}::2")
    try:
        sh("ip", "netns", "add", pair.a)
        sh("ip", "netns", "add", pair.b)
        sh("ip", "link", "add", pair.veth_a, "netns", pair.a, "type", "veth",
           "peer", "name", pair.veth_b, "netns", pair.b)
        for ns, dev, ip, ip6 in ((pair.a, pair.veth_a, pair.ip_a, pair.ip6_a),
                                 (pair.b, pair.veth_b, pair.ip_b, pair.ip6_b)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
    except Exception:
        destroy_pair(pair)
        raise
    return pair


def destroy_pair(pair: NetnsPair) -> None:
    for ns in (pair.a, pair.b):
        sh("ip", "netns", "del", ns, check=False)
