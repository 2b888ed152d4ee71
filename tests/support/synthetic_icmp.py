"""Synthetic ICMP/ICMPv6 traffic with its ICMP types (Packet.icmp_type): the IPv6 LAN shapes
blocked while the packet event carried no type (docs/detection.md, wt-benign3 allnodes and nd6)
and the attacks their exemptions must not let through. Pure; time-ordered Packet records from
`t0` (ns), deterministic for a given `seed`. Used by tests/unit/test_detect_icmp_kinds.py.

Benign: `allnodes` (a host pings ff02::1, every neighbour answers by unicast; neighbour
unreachability detection between them), `nd6` (neighbours ping the host and probe it with
unicast neighbour solicitations from link-local addresses; the host answers late or not at all).
Attacks: `reply_flood` (ICMP(v6) echo replies from many sources at a host: smurf-like
reflection), `ping_sweep` (echo requests to the addresses of one /24 or /64, nobody answers),
`ns_flood` (neighbour solicitations from one or many sources at a host).
"""
from __future__ import annotations

import random

from services.records.packet import PROTO_ICMP, PROTO_ICMPV6, Packet

S = 1_000_000_000
MS = S // 1000
ECHO6, REPLY6, NS, NA = 128, 129, 135, 136


def _icmp6(t: int, src: str, dst: str, icmp_type: int, length: int = 118) -> Packet:
    return Packet(t, src, dst, 0, 0, PROTO_ICMPV6, 0, length, icmp_type=icmp_type)


def _done(pk: list[Packet]) -> list[Packet]:
    return sorted(pk, key=lambda p: p.ts_ns)


def allnodes(t0: int, seconds: int, neighbours: int = 40, seed: int = 1) -> list[Packet]:
    """Host fe80::1 pings ff02::1 once a second; each neighbour fe80::n answers by unicast 1-40
    ms later (no reply has a reverse 5-tuple: the request went to the group). The host probes
    each neighbour's reachability (unicast NS, neighbour unreachability detection) every 4 s,
    answered by an NA 1.1-1.6 s later or, for a third of the probes, not at all."""
    rnd, host, pk = random.Random(seed), "fe80::1", []
    hosts = [f"fe80::{n + 2:x}" for n in range(neighbours)]
    for s in range(seconds):
        t = t0 + s * S + rnd.randrange(0, 50 * MS)
        pk.append(_icmp6(t, host, "ff02::1", ECHO6))
        for i, h in enumerate(hosts):
            pk.append(_icmp6(t + rnd.randrange(1, 40) * MS, h, host, REPLY6))
            if (s + i) % 4 == 0:
                probe = t0 + s * S + rnd.randrange(100, 900) * MS
                pk.append(_icmp6(probe, host, h, NS, 86))
                if rnd.random() < 2 / 3:
                    pk.append(_icmp6(probe + rnd.randrange(1100, 1600) * MS, h, host, NA, 86))
    return _done([p for p in pk if p.ts_ns < t0 + seconds * S])


def nd6(t0: int, seconds: int, neighbours: int = 40, seed: int = 2) -> list[Packet]:
    """Neighbours 2001:db8::n ping host 2001:db8::1 once a second each and probe it with a
    unicast NS from their link-local fe80::n every second; the host answers 3 of 4 echo
    requests within 20 ms, 3 of 20 1.2-1.6 s late (after its own neighbour resolution), 1 of 10
    never, and 1 NS in 5 with an NA 1.1-1.6 s late (the others not at all)."""
    rnd, host, pk = random.Random(seed), "2001:db8::1", []
    for s in range(seconds):
        for n in range(neighbours):
            g, ll = f"2001:db8::{n + 2:x}", f"fe80::{n + 2:x}"
            t = t0 + s * S + rnd.randrange(0, 1000) * MS
            pk.append(_icmp6(t, g, host, ECHO6))
            fate = rnd.random()
            if fate < 0.75:
                pk.append(_icmp6(t + rnd.randrange(1, 20) * MS, host, g, REPLY6))
            elif fate < 0.9:
                pk.append(_icmp6(t + rnd.randrange(1200, 1600) * MS, host, g, REPLY6))
            t = t0 + s * S + rnd.randrange(0, 1000) * MS
            pk.append(_icmp6(t, ll, host, NS, 86))
            if rnd.random() < 0.2:
                pk.append(_icmp6(t + rnd.randrange(1100, 1600) * MS, host, ll, NA, 86))
    return _done([p for p in pk if p.ts_ns < t0 + seconds * S])


def reply_flood(t0: int, seconds: int, victim: str, sources: int, pps: int,
                seed: int = 3) -> list[Packet]:
    """Echo replies (ICMPv6 129, or ICMP 0 for an IPv4 victim) from `sources` addresses, `pps`
    each a second at random times, at `victim`: the answers to echo requests spoofed with its
    address (smurf: sent to a broadcast or multicast address; or to many hosts one by one)."""
    rnd, pk, v6 = random.Random(seed), [], ":" in victim
    for s in range(seconds):
        for i in range(sources):
            src = f"2001:db8:77::{i + 1:x}" if v6 else f"198.51.{i // 250}.{i % 250 + 1}"
            for _ in range(pps):
                pk.append(Packet(t0 + s * S + rnd.randrange(0, S), src, victim, 0, 0,
                                 PROTO_ICMPV6 if v6 else PROTO_ICMP, 0, 1000,
                                 icmp_type=REPLY6 if v6 else 0))
    return _done(pk)


def ping_sweep(t0: int, seconds: int, pps: int, scanner: str, net: str) -> list[Packet]:
    """Echo requests from `scanner` to the next address of `net` (an IPv4 /24 as "a.b.c", or an
    IPv6 /64 as "p:q:r:s") `pps` times a second; nobody answers."""
    v6, pk = ":" in net, []
    for i in range(seconds * pps):
        t = t0 + i * S // pps
        if v6:
            pk.append(_icmp6(t, scanner, f"{net}::{i % 65534 + 1:x}", ECHO6, 70))
        else:
            pk.append(Packet(t, scanner, f"{net}.{i % 254 + 1}", 0, 0, PROTO_ICMP, 0, 42,
                             icmp_type=8))
    return pk


def ns_flood(t0: int, seconds: int, victim: str, sources: int, pps: int,
             seed: int = 4) -> list[Packet]:
    """Neighbour solicitations for `victim` from `sources` link-local addresses (flood_router26
    and NS exhaustion tools spoof new ones), `pps` packets a second in all."""
    rnd = random.Random(seed)
    return [_icmp6(t0 + i * S // pps, f"fe80::{rnd.randrange(sources) + 0x100:x}", victim, NS, 86)
            for i in range(seconds * pps)]
