"""Synthetic benign traffic of servers and their clients, seen at the server or collector (the
side whose XDP could block it), plus the attacks that aim at the same ports. Pure, deterministic
for a given `seed`; same conventions as tests/support/synthetic_traffic.py (time-ordered Packet
records from `t0` ns, both directions where the protected host would see both).

Shapes of the second set of real-tool captures (wt-benign2, /tmp/benign-new2/gen.sh), which the
shipped model blocked on c55e2f5: `db_per_request` (redis-cli, a connection per request:
dbperreq 96.35% dropped), `db_pool_burst` (a pool of 50 opened at once: dbblackhole 92.19%),
`syslog_collector` (150 hosts to udp/514, nobody answers: syslog 93.10%), `traceroute_target`
(traceroute / mtr UDP probes reaching the target: 56.10%), `resolver_upstream` (a resolver's
large answers from the authoritative servers it asked, fragmented: 2.15%). Attacks:
`collector_flood` (spoofed UDP to a syslog collector), `udp_flood_fragments_few` (fragmented
unsolicited answers from a handful of reflectors), and what an attacker could add to hide from
the exemptions above: `with_asks` (a spoofed exchange per source), `fragments_beside_session`,
`late_ack_guessing` (the handshake completed seconds after the SYN). The fragment budget
(evidence.dst_measures): `udp_stream_fragmented` (a one-way stream of datagrams larger than the
MTU, the frag capture's iperf3 -u -l 4000: 87.40% on 138c52d; at a high rate, a one-source
fragmented flood) and `fragments_beside_queries` (fragments beside answered small queries).
"""
from __future__ import annotations

import random

from services.records.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet

from .synthetic_traffic import (ACK, FIN, PSH, SYN, S, _public, _sorted, _tcp, _udp,
                                fragmented_amplification)


def db_per_request(t0: int, seconds: float, app: str = "10.0.0.71", db: str = "10.0.0.91",
                   port: int = 6379, per_s: float = 12, seed: int = 31) -> list[Packet]:
    """An app host opening a new connection for every request (redis-cli in a loop, PHP without
    persistent connections), `per_s` a second: handshake, request, answer, close; ~3 ms each."""
    rnd, pk, us = random.Random(seed), [], S // 1_000_000
    for i in range(int(seconds * per_s)):
        t, sp = t0 + int(i * S / per_s) + rnd.randrange(20_000) * us, 30000 + i % 30000
        c = lambda dt, fl, ln: pk.append(_tcp(t + dt * 100 * us, app, db, sp, port, fl, ln))
        s = lambda dt, fl, ln: pk.append(_tcp(t + dt * 100 * us, db, app, port, sp, fl, ln))
        c(0, SYN, 74), s(1, SYN | ACK, 74), c(2, ACK, 66), c(3, PSH | ACK, 90), s(5, PSH | ACK, 80)
        c(6, ACK, 66), c(20, FIN | ACK, 66), s(21, FIN | ACK, 66), c(22, ACK, 66)
    return _sorted(pk)


def db_pool_burst(t0: int, seconds: float, app: str = "10.0.0.72", db: str = "10.0.0.92",
                  port: int = 5432, conns: int = 50, seed: int = 32) -> list[Packet]:
    """A connection pool of `conns` opened at once 1 s in (an app starting, or reconnecting
    after its database came back), then a query on each connection every ~0.5 s."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    end = t0 + int(seconds * S)
    for j in range(conns):
        t, sp = t0 + S + j * ms // 2, 45000 + j
        pk += [_tcp(t, app, db, sp, port, SYN, 74), _tcp(t + ms // 4, db, app, port, sp, SYN | ACK, 74),
               _tcp(t + ms // 2, app, db, sp, port, ACK, 66)]
        t += 5 * ms
        while t < end:
            pk += [_tcp(t, app, db, sp, port, PSH | ACK, 120), _tcp(t + ms, db, app, port, sp, PSH | ACK, 300),
                   _tcp(t + 2 * ms, app, db, sp, port, ACK, 66)]
            t += S // 2 + rnd.randrange(S // 10)
    return _sorted([p for p in pk if p.ts_ns < end])


def syslog_collector(t0: int, seconds: float, collector: str = "10.0.0.95", hosts: int = 150,
                     net: str = "10.0.8", burst_at_s: float = 20, seed: int = 33) -> list[Packet]:
    """`hosts` (up to 500, in two /24s) logging to a collector on udp/514 (one socket each: a fixed source
    port), a message every 1-3 s, and an incident at `burst_at_s`: every host sends 5 at once.
    Nobody answers: syslog is one-way."""
    rnd, pk = random.Random(seed), []
    end, burst = t0 + int(seconds * S), t0 + int(burst_at_s * S)
    for j in range(hosts):
        h, sp = f"{net}.{j + 1}" if j < 250 else f"10.0.9.{j - 249}", 40000 + j
        t = t0 + rnd.randrange(S)
        while t < end:
            pk.append(_udp(t, h, collector, sp, 514, rnd.randrange(120, 400)))
            t += S + rnd.randrange(2 * S)
        for k in range(5):
            pk.append(_udp(burst + rnd.randrange(S // 5) + k * S // 100, h, collector, sp, 514, 300))
    return _sorted([p for p in pk if p.ts_ns < end])


def traceroute_target(t0: int, seconds: float, prober: str = "198.51.100.60",
                      target: str = "10.0.0.96", hops: int = 10, every_s: float = 1.0,
                      seed: int = 34) -> list[Packet]:
    """traceroute / mtr -u from one prober, a run every `every_s`: 3 UDP probes per hop, each
    to the next port counting up from 33434 (wrapping within traceroute's 101 ports); at the
    target arrive the probes of the last hops (TTL large enough: here the last 3 of `hops`),
    each answered by ICMP port unreachable (proto ICMP, ports 0)."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    n = 0
    for r in range(int(seconds / every_s)):
        t = t0 + int(r * every_s * S) + rnd.randrange(50) * ms
        sp = 40000 + r % 20000
        for hop in range(1, hops + 1):
            for _ in range(3):
                port = 33434 + n % 101
                n += 1
                if hop > hops - 3:
                    pk += [_udp(t, prober, target, sp, port, 74),
                           Packet(t + ms, target, prober, 0, 0, PROTO_ICMP, 0, 102)]
                t += 5 * ms
    return _sorted(pk)



def mtr_udp(t0: int, seconds: float, prober: str = "198.51.100.61", target: str = "10.0.0.97",
            hops: int = 8, every_s: float = 1.0, start_port: int = 33000, seed: int = 36,
            at_target: bool = True) -> list[Packet]:
    """`mtr -u` from one prober: every `every_s` a cycle of one UDP probe per hop (TTL 1..`hops`),
    each to the next destination port of mtr's sequence (33000-65535, counting up from
    `start_port` and wrapping: mtr's net.c MinSequence / MaxSequence), one source port for the
    run. `at_target`: the capture at the target, where only the last hop's probe arrives and is
    answered by ICMP port unreachable; else at the prober, which sees every probe and the
    routers' ICMP time exceeded (routers 192.0.2.1..) and the target's port unreachable."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    port, sp = start_port, 40000 + rnd.randrange(20000)
    for r in range(int(seconds / every_s)):
        t = t0 + int(r * every_s * S) + rnd.randrange(50) * ms
        for hop in range(1, hops + 1):
            last = hop == hops
            if last or not at_target:
                pk.append(_udp(t, prober, target, sp, port, 78))
                src = target if last else f"192.0.2.{hop}"
                pk.append(Packet(t + ms, src, prober, 0, 0, PROTO_ICMP, 0, 106))
            port = port + 1 if port < 65535 else 33000
            t += 3 * ms
    return _sorted(pk)


def vxlan_tunnel(t0: int, seconds: float, local: str = "10.0.0.98", peer: str = "198.51.100.62",
                 pps_in: int = 3000, pps_out: int = 500, port: int = 4789, inner: int = 6,
                 seed: int = 37) -> list[Packet]:
    """A VXLAN tunnel (RFC 7348) between two endpoints carrying `inner` inner flows: each end
    sends to `port` of the other from a source port hashed from the inner flow (49152-65535),
    `pps_in` packets a second of ~1,450 bytes to `local` (a bulk transfer) and `pps_out` of
    ~110 (its ACKs) back. No outer 5-tuple has a reverse (wt-benign3 vxlan.pcap)."""
    rnd, pk = random.Random(seed), []
    ports_in = [49152 + rnd.randrange(16384) for _ in range(inner)]
    ports_out = [49152 + rnd.randrange(16384) for _ in range(inner)]
    for i in range(int(seconds * pps_in)):
        pk.append(_udp(t0 + int(i * S / pps_in), peer, local, ports_in[i % inner], port, 1464))
    for i in range(int(seconds * pps_out)):
        pk.append(_udp(t0 + int(i * S / pps_out) + S // 7000, local, peer, ports_out[i % inner],
                       port, 110))
    return _sorted(pk)

def resolver_upstream(t0: int, seconds: float, resolver: str = "10.0.0.53",
                      servers: int = 8, answers_per_s: int = 20, seed: int = 35) -> list[Packet]:
    """A recursive resolver querying `servers` authoritative servers (EDNS 4096) whose large
    answers (~4 KB) arrive in three IP fragments each: the first carries the UDP header (sport
    53), the later two no ports. Every answer was asked for: the query is the reverse 5-tuple."""
    rnd = random.Random(seed)
    auth = [_public(rnd) for _ in range(servers)]
    pk = []
    for i in range(int(seconds * answers_per_s)):
        t, a, sp = t0 + i * S // answers_per_s, rnd.choice(auth), rnd.randrange(1024, 65536)
        pk += [_udp(t, resolver, a, sp, 53, 80), _udp(t + 2_000_000, a, resolver, 53, sp, 1514),
               _udp(t + 2_020_000, a, resolver, 0, 0, 1514), _udp(t + 2_040_000, a, resolver, 0, 0, 1100)]
    return _sorted(pk)


def collector_flood(t0: int, seconds: float, pps: int = 5000, collector: str = "10.0.0.95",
                    port: int = 514, seed: int = 36) -> list[Packet]:
    """Spoofed UDP from random sources to a collector's `port` (syslog), evenly spaced."""
    rnd = random.Random(seed)
    return [_udp(t0 + i * S // pps, _public(rnd), collector, rnd.randrange(1024, 65536), port, 512)
            for i in range(int(seconds * pps))]


def udp_flood_fragments_few(t0: int, seconds: float, reflectors: int = 5,
                            answers_per_s: int = 200, victim: str = "10.0.0.54",
                            seed: int = 37) -> list[Packet]:
    """Unsolicited DNS answers (~4 KB, three fragments each) from only `reflectors` resolvers
    (synthetic_traffic.fragmented_amplification with few reflectors): too few sources for
    reflector_srcs, so the fragments measure must still count them."""
    return fragmented_amplification(t0, seconds, answers_per_s, reflectors, victim, seed)


def with_asks(pk: list[Packet], victim: str, icmp: bool = False, every_s: float = 1.0) -> list[Packet]:
    """`pk` plus, from every source sending to `victim`, a spoofed TCP SYN to its port 80 (the
    victim resets it) or a ping (the victim echoes it) every `every_s`: exchanges an attacker can
    buy to make the victim seem to have asked that source for something."""
    t0, t1 = pk[0].ts_ns, pk[-1].ts_ns
    out, ms = list(pk), S // 1000
    for j, r in enumerate(sorted({p.src for p in pk if p.dst == victim})):
        for k in range(int((t1 - t0) / (every_s * S))):
            t, sp = t0 + int(k * every_s * S) + j * 1000 + 5 * ms, 20000 + k
            if icmp:
                out += [Packet(t, r, victim, 0, 0, PROTO_ICMP, 0, 60), Packet(t + ms, victim, r, 0, 0, PROTO_ICMP, 0, 60)]
            else:
                out += [_tcp(t, r, victim, sp, 80, SYN, 60), _tcp(t + ms, victim, r, 80, sp, 0x14, 54)]
    return _sorted(out)


def fragments_beside_session(t0: int, seconds: float, pps: int = 600, src: str = "203.0.113.90",
                             victim: str = "10.0.0.57") -> list[Packet]:
    """One real source holding an answered HTTPS session to the victim (a request a second) while
    it floods the victim with non-first UDP fragments, `pps` a second."""
    ms, pk = S // 1000, []
    for k in range(int(seconds)):
        t = t0 + k * S
        if k == 0:
            pk += [_tcp(t, src, victim, 50000, 443, SYN, 74), _tcp(t + ms, victim, src, 443, 50000, SYN | ACK, 74),
                   _tcp(t + 2 * ms, src, victim, 50000, 443, ACK, 66)]
        pk += [_tcp(t + 3 * ms, src, victim, 50000, 443, PSH | ACK, 100), _tcp(t + 4 * ms, victim, src, 443, 50000, ACK, 66)]
    pk += [_udp(t0 + 10 * ms + i * S // pps, src, victim, 0, 0, 1514) for i in range(int(seconds * pps))]
    return _sorted(pk)


def late_ack_guessing(t0: int, seconds: float, per_s: float = 10, delay_ms: int = 2200,
                      attacker: str = "203.0.113.68", server: str = "10.0.0.23",
                      port: int = 21, null_at_ms: int | None = None,
                      burst_at_ms: int | None = None) -> list[Packet]:
    """Password guessing whose client ignores the first SYN-ACKs and ACKs a retransmitted one
    `delay_ms` after its SYN (the server retries at 1, 3, 7 s), then the login exchange; with
    `null_at_ms`, a segment without flags that long after the SYN (the server drops it); with
    `burst_at_ms`, each second's sessions start together that long after `t0` + whole seconds
    (3 ms apart: late in a window when `t0` is a window's start), else evenly spread."""
    ms, pk = S // 1000, []
    for i in range(int(seconds * per_s)):
        t = t0 + int(i * S / per_s)
        if burst_at_ms is not None:
            t = t0 + int(i // per_s) * S + burst_at_ms * ms + int(i % per_s) * 3 * ms
        sp, d = 41000 + i, delay_ms
        c = lambda dt, fl, ln: pk.append(_tcp(t + dt * ms, attacker, server, sp, port, fl, ln))
        s = lambda dt, fl, ln: pk.append(_tcp(t + dt * ms, server, attacker, port, sp, fl, ln))
        if null_at_ms is not None:
            c(null_at_ms, 0, 54)
        c(0, SYN, 74), s(1, SYN | ACK, 74), s(1001, SYN | ACK, 74), c(d, ACK, 66), s(d + 2, PSH | ACK, 120)
        c(d + 3, PSH | ACK, 80), s(d + 5, PSH | ACK, 100), c(d + 6, PSH | ACK, 82), s(d + 30, PSH | ACK, 90)
        c(d + 31, FIN | ACK, 66), s(d + 32, FIN | ACK, 66), c(d + 33, ACK, 66)
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def spread_syn_flood(t0: int, seconds: float, pps: int = 5000, net: str = "10.0.2",
                     hosts: int = 512, port: int = 22, seed: int = 38) -> list[Packet]:
    """Spoofed SYNs to `port` of `hosts` addresses (two /24s from `net`), about 9 sources per
    address a second: each destination under the half-open sources bound, so nothing limits it,
    while every SYN is a login SYN waiting for its ACK."""
    rnd = random.Random(seed)
    a, b, _ = net.split(".")
    return [_tcp(t0 + i * S // pps, _public(rnd), f"{a}.{b}.{(j := rnd.randrange(hosts)) // 256 + 2}.{j % 256}",
                 rnd.randrange(1024, 65536), port, SYN, 74) for i in range(int(seconds * pps))]


def _fragment_frames(datagram: int, mtu: int = 1500) -> list[int]:
    """Frame lengths (Ethernet) of an IPv4 UDP datagram of `datagram` payload bytes over `mtu`:
    the first fragment carries the UDP header and fills the MTU, the later ones carry none."""
    body, room = datagram + 8, (mtu - 20) // 8 * 8
    parts = [room] * (body // room) + ([body % room] if body % room else [])
    return [14 + 20 + p for p in parts]


def udp_stream_fragmented(t0: int, seconds: float, per_s: int = 25, datagram: int = 4000,
                          src: str = "198.51.100.40", dst: str = "10.0.0.58",
                          sport: int = 45000, dport: int = 5201) -> list[Packet]:
    """A one-way UDP stream of datagrams larger than the MTU, `per_s` a second (iperf3 -u -l 4000
    -b 800k, the frag capture's: RTP video and NFS over UDP look alike): nobody answers it; each
    datagram in IP fragments, the first (1,514 bytes) with the ports, the later ones without."""
    pk = []
    for i in range(int(seconds * per_s)):
        t = t0 + i * S // per_s
        for j, n in enumerate(_fragment_frames(datagram)):
            pk.append(_udp(t + j * 20_000, src, dst, sport if j == 0 else 0, dport if j == 0 else 0, n))
    return pk


def fragments_beside_queries(t0: int, seconds: float, sources: int = 5, queries_per_s: int = 10,
                             fragments_per_s: int = 76, victim: str = "10.0.0.59",
                             seed: int = 38) -> list[Packet]:
    """The second review's evasion of the fragment budget (helper-46, F5): from each of `sources`
    real addresses, `queries_per_s` small DNS queries a second to the victim's resolver, each
    answered (60 and 100 bytes), while it sends `fragments_per_s` non-first UDP fragments a second
    (1,514 bytes, no first fragments). On 138c52d each answered query bought 44 uncounted
    fragments: 10 a second hid 380 fragments a second from 5 sources."""
    rnd, ms, pk = random.Random(seed), S // 1000, []
    for j in range(sources):
        src = _public(rnd)
        for i in range(int(seconds * queries_per_s)):
            t, sp = t0 + i * S // queries_per_s + j * 100_000, 30000 + i
            pk += [_udp(t, src, victim, sp, 53, 60), _udp(t + ms, victim, src, 53, sp, 100)]
        pk += [_udp(t0 + 3 * ms + i * S // fragments_per_s + j * 50_000, src, victim, 0, 0, 1514)
               for i in range(int(seconds * fragments_per_s))]
    return _sorted(pk)
