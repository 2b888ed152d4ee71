"""Target groups of a source's probes (services.detection.watch: probe_tcp, probe_other). Pure.

A group is one host and protocol (members: ports) or one /24 (IPv6 /64), port and protocol
(members: hosts); the evidence is the largest group's weighted size."""
from __future__ import annotations

import ipaddress
from typing import Iterable

from services.records.packet import PROTO_TCP

PORT_FAN_WEIGHT = 0.5  # a UDP/ICMP probe of another port of the same host (`_largest_groups`)
# a TCP group counts whole while 1 / ACCEPTED_WEIGHT of its targets or more are half-open; less
# as more of them accepted the source (`_largest_groups`)
ACCEPTED_WEIGHT = 2.0


def _net(addr: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address lies in, as text."""
    if ":" not in addr:
        return addr.rsplit(".", 1)[0]
    return str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)


def _groups_of(targets: Iterable[tuple]) -> dict[tuple, int]:
    """Members of each target group of distinct targets (dst, proto, dport): one host and
    protocol (members: ports), one net, port and protocol (members: hosts)."""
    groups: dict[tuple, int] = {}
    for dst, proto, dport in targets:
        for g in ((0, dst, proto), (1, _net(dst), dport, proto)):
            groups[g] = groups.get(g, 0) + 1
    return groups


def _largest_groups(probes: Iterable[tuple], accepted: Iterable[tuple] = ()) -> tuple[float, float]:
    """(largest TCP group, largest other group) of a set of distinct probes (dst, proto, dport):
    a group is one host and protocol (members: ports) or one net, port and protocol (members:
    hosts). A UDP/ICMP group of ports of one host counts PORT_FAN_WEIGHT per member: media
    sessions, NAT traversal and games open many ports of one peer (up to 22 ports of one host
    in the horizon in one benign capture of the shared corpora, android.pcap), while a host
    sweep on one port is what scanners do (at most 3 hosts of one /24 in any of them).

    A TCP group of h half-open probes counts h x min(1, 2 h / (h + a)), `a` its members among
    the distinct `accepted` targets (TCP targets the source completed a handshake with in the
    horizon, not among the probes): whole while at least half of the group's targets are
    half-open, less as more of them accepted the source (ACCEPTED_WEIGHT). A station
    re-checking a fixed pool of backends completes its handshakes with most of them (a load
    balancer with 12 of 40 backends dead from the start: 12 x 24 / 40 = 7.2, not 12); a SYN
    scan or sweep completes none (nmap -sS resets after the SYN-ACK: no ACK) and a connect scan
    of a host or a /24 the few open ports or live hosts, so each counts whole, as before."""
    groups = _groups_of(probes)
    shook = _groups_of(t for t in accepted if t not in probes) if accepted else {}
    best = [0.0, 0.0]
    for g, n in groups.items():
        i = 0 if g[-1] == PROTO_TCP else 1
        if i:
            v = n * PORT_FAN_WEIGHT if g[0] == 0 else n
        else:
            a = shook.get(g, 0)
            v = n * min(1.0, ACCEPTED_WEIGHT * n / (n + a)) if a else n
        if v > best[i]:
            best[i] = v
    return best[0], best[1]
