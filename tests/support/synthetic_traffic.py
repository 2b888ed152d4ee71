"""Synthetic traffic of the attack kinds and benign shapes the detection must tell apart. Pure.

Every generator returns time-ordered Packet records (two-way where a capture on the protected
host would show both directions), starting at `t0` (ns), deterministic for a given `seed`.
Addresses: the protected side in 10.0.0.0/8, the Internet in documentation and random public
ranges. Used by the unit tests of the decision layer (tests/unit/test_detect_synthetic.py) and
handy to try settings: `xdpguard`-independent, no I/O.

Attacks: `syn_flood` (spoofed, optionally with ECE+CWR as ECN-capable stacks send), `dhcp_flood`
(DISCOVERs from 0.0.0.0 to broadcast), `ftp_guessing` (short login sessions to port 21),
`fragmented_amplification` (DNS answers in IP fragments; later fragments carry no ports),
`synack_reflection` (SYN-ACKs of servers answering SYNs spoofed with the victim's address),
`service_probe` (nmap -sV: a SYN scan, then repeated short probe sessions to the open ports),
`host_sweep` (a slow UDP or TCP sweep of one /24 on one port).
Benign: `doh_client`, `dns_prober`, `media_call`, `p2p_node`, `browser`, `ice_checks`, `web_poller`,
`mdns_discovery`, `ssdp_search` (LAN discovery, blocked: tests/unit/test_detect_new_benign.py);
LAN infrastructure while some of its targets are down (from the start, or in an `outage` after
answering for a while): `health_checks`, `ping_monitor`, `snmp_poller`.
"""
from __future__ import annotations

import random

from services.records.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Packet

S = 1_000_000_000
SYN, ACK, PSH, FIN, RST, ECE, CWR = 0x02, 0x10, 0x08, 0x01, 0x04, 0x40, 0x80


def _public(rnd: random.Random) -> str:
    """A random unicast address outside the private and reserved ranges used here."""
    while True:
        a = rnd.randrange(1, 224)
        if a not in (10, 127, 169, 172, 192, 198, 203, 100):
            return f"{a}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"


def _tcp(t: int, src: str, dst: str, sp: int, dp: int, flags: int, length: int = 66) -> Packet:
    return Packet(t, src, dst, sp, dp, PROTO_TCP, flags, length)


def _udp(t: int, src: str, dst: str, sp: int, dp: int, length: int) -> Packet:
    return Packet(t, src, dst, sp, dp, PROTO_UDP, 0, length)


def _sorted(pk: list[Packet]) -> list[Packet]:
    return sorted(pk, key=lambda p: p.ts_ns)


# --- attacks ----------------------------------------------------------------------------------

def syn_flood(t0: int, seconds: float, pps: int, victim: str = "10.0.0.10", dport: int = 80,
              ecn: bool = False, seed: int = 1) -> list[Packet]:
    """Spoofed SYNs from random sources and ports to one address:port, evenly spaced."""
    rnd = random.Random(seed)
    flags = SYN | ECE | CWR if ecn else SYN
    return [_tcp(t0 + i * S // pps, _public(rnd), victim, rnd.randrange(1024, 65536), dport, flags, 74)
            for i in range(int(seconds * pps))]


def dhcp_flood(t0: int, seconds: float, pps: int = 100, seed: int = 2) -> list[Packet]:
    """DHCP DISCOVERs from 0.0.0.0:68 to 255.255.255.255:67 (random client MACs: one 5-tuple)."""
    rnd = random.Random(seed)
    return [_udp(t0 + i * S // pps + rnd.randrange(S // (4 * pps)), "0.0.0.0", "255.255.255.255",
                 68, 67, 342) for i in range(int(seconds * pps))]


def ftp_guessing(t0: int, seconds: float, per_s: float = 10, attacker: str = "203.0.113.66",
                 server: str = "10.0.0.21", seed: int = 3) -> list[Packet]:
    """One source, `per_s` short FTP login sessions a second, both directions: handshake,
    banner, USER, 331, PASS, 530, QUIT, 221, FIN; each session ~40 ms."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    for i in range(int(seconds * per_s)):
        t, sp = t0 + int(i * S / per_s) + rnd.randrange(5 * ms), 40000 + i % 20000
        c = lambda dt, fl, ln: pk.append(_tcp(t + dt * ms, attacker, server, sp, 21, fl, ln))
        s = lambda dt, fl, ln: pk.append(_tcp(t + dt * ms, server, attacker, 21, sp, fl, ln))
        c(0, SYN, 74), s(1, SYN | ACK, 74), c(2, ACK, 66), s(4, PSH | ACK, 120), c(5, ACK, 66)
        c(6, PSH | ACK, 80), s(8, PSH | ACK, 100), c(9, PSH | ACK, 82), s(30, PSH | ACK, 90)
        c(31, PSH | ACK, 72), s(33, PSH | ACK, 80), s(33, FIN | ACK, 66), c(34, FIN | ACK, 66)
        s(35, ACK, 66)
    return _sorted(pk)


def fragmented_amplification(t0: int, seconds: float, answers_per_s: int = 200,
                             reflectors: int = 300, victim: str = "10.0.0.53",
                             seed: int = 4) -> list[Packet]:
    """DNS answers (~4 KB) from open resolvers to one victim port, each in three IP fragments:
    the first carries the UDP header (sport 53), the later two carry no ports."""
    rnd = random.Random(seed)
    refl = [_public(rnd) for _ in range(reflectors)]
    pk = []
    for i in range(int(seconds * answers_per_s)):
        t, r = t0 + i * S // answers_per_s, rnd.choice(refl)
        pk += [_udp(t, r, victim, 53, 8080, 1514), _udp(t + 20_000, r, victim, 0, 0, 1514),
               _udp(t + 40_000, r, victim, 0, 0, 1100)]
    return pk


def synack_reflection(t0: int, seconds: float, pps: int = 300, servers: int = 500,
                      victim: str = "10.0.0.80", seed: int = 5, resets: bool = False) -> list[Packet]:
    """SYN-ACKs from many web servers to the victim's random ports (the attacker spoofed SYNs
    from the victim's address); each server retransmits its SYN-ACK after 1 s. With `resets`
    the victim is a live host whose stack resets each SYN-ACK it did not ask for (a bare RST
    50 us later, as Linux sends), and the servers, reset, do not retransmit."""
    rnd = random.Random(seed)
    srv = [(_public(rnd), rnd.choice((80, 443))) for _ in range(servers)]
    pk = []
    for i in range(int(seconds * pps / (1 if resets else 2))):
        t, (s, port) = t0 + i * (1 if resets else 2) * S // pps, rnd.choice(srv)
        vp = rnd.randrange(1024, 65536)
        pk.append(_tcp(t, s, victim, port, vp, SYN | ACK, 74))
        pk.append(_tcp(t + 50_000, victim, s, vp, port, RST, 54) if resets
                  else _tcp(t + S, s, victim, port, vp, SYN | ACK, 74))
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def service_probe(t0: int, scanner: str = "203.0.113.77", target: str = "10.0.0.30",
                  open_ports: tuple[int, ...] = (22, 80, 443), seconds: float = 30,
                  seed: int = 6) -> list[Packet]:
    """nmap -sV: a SYN scan of 1000 ports at ~500 ports/s (closed ports answer RST, open ones
    SYN-ACK, the scanner resets), then version probes: short sessions to each open port, one
    after the other (connect, a probe, the answer, reset), ~8 a second until `seconds`."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    ports = sorted(set(open_ports) | set(rnd.sample(range(1, 10000), 1000 - len(open_ports))))
    rnd.shuffle(ports)
    sp = rnd.randrange(40000, 60000)
    for i, port in enumerate(ports):
        t = t0 + i * 2 * ms
        pk.append(_tcp(t, scanner, target, sp, port, SYN, 58))
        if port in open_ports:
            pk += [_tcp(t + ms // 2, target, scanner, port, sp, SYN | ACK, 58),
                   _tcp(t + ms, scanner, target, sp, port, RST, 54)]
        else:
            pk.append(_tcp(t + ms // 2, target, scanner, port, sp, RST | ACK, 54))
    t, n = t0 + len(ports) * 2 * ms + 100 * ms, 0
    while t < t0 + int(seconds * S):
        port, sp = open_ports[n % len(open_ports)], 50000 + n % 10000
        pk += [_tcp(t, scanner, target, sp, port, SYN, 74), _tcp(t + ms, target, scanner, port, sp, SYN | ACK, 74),
               _tcp(t + 2 * ms, scanner, target, sp, port, ACK, 66),
               _tcp(t + 3 * ms, scanner, target, sp, port, PSH | ACK, 66 + rnd.randrange(10, 200)),
               _tcp(t + 5 * ms, target, scanner, port, sp, PSH | ACK, 66 + rnd.randrange(20, 400)),
               _tcp(t + 6 * ms, scanner, target, sp, port, RST | ACK, 54)]
        t, n = t + 125 * ms, n + 1
    return _sorted(pk)


def host_sweep(t0: int, seconds: float, pps: float = 5, proto: int = PROTO_UDP,
               scanner: str = "203.0.113.88", net: str = "10.0.1", port: int = 161,
               seed: int = 7, repeat: int = 1) -> list[Packet]:
    """A slow host sweep: one probe every 1/`pps` s to the next address of one /24 on one port
    (UDP datagrams or TCP SYNs), nobody answers (the addresses are empty or filtered). `repeat`
    > 1: each probe is that many datagrams 1 ms apart (UDP), or the SYN followed by the
    scanner's own ACK 1 ms later (TCP, no SYN-ACK came: a flow that is no half-open probe)."""
    rnd = random.Random(seed)
    sp = rnd.randrange(40000, 60000)
    out = []
    for i in range(int(seconds * pps)):
        t, dst = t0 + int(i * S / pps), f"{net}.{1 + i % 254}"
        if proto == PROTO_TCP:
            out.append(_tcp(t, scanner, dst, sp, port, SYN, 58))
            if repeat > 1:
                out.append(_tcp(t + S // 1000, scanner, dst, sp, port, ACK, 54))
        else:
            out += [_udp(t + k * (S // 1000), scanner, dst, sp, port, 60) for k in range(repeat)]
    return out


# --- benign shapes ------------------------------------------------------------------------------

def _session(pk: list, t: int, client: str, server: str, sp: int, dp: int, exchanges: int,
             gap_ns: int, up: int = 300, down: int = 1200, close: bool = True) -> int:
    """A completed TCP session (both directions); returns its last timestamp."""
    ms = S // 1000
    pk += [_tcp(t, client, server, sp, dp, SYN, 74), _tcp(t + 20 * ms, server, client, dp, sp, SYN | ACK, 74),
           _tcp(t + 21 * ms, client, server, sp, dp, ACK, 66)]
    t += 22 * ms
    for _ in range(exchanges):
        pk += [_tcp(t, client, server, sp, dp, PSH | ACK, up), _tcp(t + 20 * ms, server, client, dp, sp, PSH | ACK, down),
               _tcp(t + 21 * ms, client, server, sp, dp, ACK, 66)]
        t += gap_ns
    if close:
        pk += [_tcp(t, client, server, sp, dp, FIN | ACK, 66), _tcp(t + 20 * ms, server, client, dp, sp, FIN | ACK, 66),
               _tcp(t + 21 * ms, client, server, sp, dp, ACK, 66)]
    return t


def doh_client(t0: int, seconds: float, client: str = "10.0.0.5", seed: int = 10) -> list[Packet]:
    """DNS over HTTPS: two long-lived TLS connections to two resolvers, a query every ~300 ms,
    and a fresh connection every 10 s."""
    rnd, pk = random.Random(seed), []
    resolvers = ["1.1.1.1", "8.8.8.8"]
    for k in range(int(seconds // 10) + 1):
        for j, r in enumerate(resolvers):
            t = t0 + k * 10 * S + j * 50_000_000
            _session(pk, t, client, r, 50000 + 2 * k + j, 443, 33, 300_000_000 + rnd.randrange(1000),
                     up=180, down=260, close=False)
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def dns_prober(t0: int, seconds: float, per_s: int = 20, client: str = "10.0.0.6",
               seed: int = 11) -> list[Packet]:
    """A client asking many public resolvers (one small query each, from its own port); every
    resolver answers within 30-150 ms."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    for i in range(int(seconds * per_s)):
        t, r, sp = t0 + i * S // per_s, _public(rnd), rnd.randrange(1024, 65536)
        pk += [_udp(t, client, r, sp, 53, 80), _udp(t + rnd.randrange(30, 150) * ms, r, client, 53, sp, 140)]
    return _sorted(pk)


def media_call(t0: int, seconds: float, local: str = "10.0.0.7", remote: str = "198.51.100.20",
               pps: int = 50, seed: int = 12) -> list[Packet]:
    """A voice/video call's UDP media: RTP both ways at `pps` each, steady, one port pair."""
    rnd = random.Random(seed)
    pk = []
    for i in range(int(seconds * pps)):
        t = t0 + i * S // pps
        pk += [_udp(t, local, remote, 16384, 30000, 200 + rnd.randrange(800)),
               _udp(t + rnd.randrange(S // pps), remote, local, 30000, 16384, 200 + rnd.randrange(800))]
    return _sorted(pk)


def p2p_node(t0: int, seconds: float, node: str = "10.0.0.8", peers: int = 300,
             seed: int = 13) -> list[Packet]:
    """A P2P node: UDP messages to many peers spread over the Internet (two thirds answer,
    a few messages each), plus TCP connections to some of them (handshakes complete)."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    ps = [(_public(rnd), rnd.randrange(1024, 65536)) for _ in range(peers)]
    for i in range(int(seconds * 40)):
        t, (p, port) = t0 + i * S // 40, rnd.choice(ps)
        sp = 6881
        pk.append(_udp(t, node, p, sp, port, 100 + rnd.randrange(300)))
        if rnd.random() < 0.66:
            pk.append(_udp(t + rnd.randrange(40, 300) * ms, p, node, port, sp, 100 + rnd.randrange(1200)))
    for i in range(int(seconds)):
        p, _ = rnd.choice(ps)
        _session(pk, t0 + i * S + rnd.randrange(S // 2), node, p, 40000 + i, 6881, 5, 60 * ms,
                 down=1400, close=False)
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def browser(t0: int, seconds: float, client: str = "10.0.0.9", seed: int = 14) -> list[Packet]:
    """Page loads every 5 s: 30 TLS connections at once to 20 servers (up to 6 to one CDN
    host), all handshakes complete, some closed early."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    sp = 30000
    for k in range(int(seconds // 5) + 1):
        servers = [_public(rnd) for _ in range(20)]
        for j in range(30):
            server = servers[0] if j < 6 else rnd.choice(servers)
            _session(pk, t0 + k * 5 * S + rnd.randrange(200) * ms, client, server, sp, 443,
                     rnd.randrange(2, 8), 50 * ms, up=600, down=1400, close=rnd.random() < 0.3)
            sp += 1
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def ice_checks(t0: int, seconds: float, local: str = "10.0.0.12", peer: str = "198.51.100.40",
               candidates: int = 16, seed: int = 15) -> list[Packet]:
    """WebRTC call set-up, repeated every 10 s (renegotiation, a new call): ICE connectivity
    checks (small STUN binding requests) from one local port to each of a peer's `candidates`
    ports, twice each over ~1 s; half the candidate pairs answer. Then media on one pair."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    for k in range(int(seconds // 10) + 1):
        base = t0 + k * 10 * S
        ports = rnd.sample(range(20000, 60000), candidates)
        for rep in range(2):
            for j, port in enumerate(ports):
                t = base + rep * 500 * ms + j * 25 * ms
                pk.append(_udp(t, local, peer, 50000 + k, port, 62))
                if j % 2 == 0:
                    pk.append(_udp(t + 40 * ms, peer, local, port, 50000 + k, 74))
        for i in range(400):
            t = base + S + i * 20 * ms
            pk += [_udp(t, local, peer, 50000 + k, ports[0], 180 + rnd.randrange(600)),
                   _udp(t + 7 * ms, peer, local, ports[0], 50000 + k, 180 + rnd.randrange(600))]
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def web_poller(t0: int, seconds: float, client: str = "10.0.0.11", server: str = "10.0.0.80",
               per_s: float = 10) -> list[Packet]:
    """A client fetching a page every 100 ms with a new connection each time (curl in a loop,
    the demo's and soak's benign client), both directions."""
    pk = []
    for i in range(int(seconds * per_s)):
        _session(pk, t0 + int(i * S / per_s), client, server, 40000 + i % 20000, 80, 1, 0, up=150)
    return _sorted(pk)


# --- LAN infrastructure with some of its targets down -----------------------------------------
# `down`: targets that never answer (down from the start); `outage` (at_s, n): from `at_s`
# seconds on, the first n targets stop answering at all (a switch failed), having answered before.

def _dead(j: int, t: int, t0: int, down: int, outage: tuple[float, int] | None) -> bool:
    """Whether target `j` (1-based) is down at time `t` (ns)."""
    return j <= down or (outage is not None and j <= outage[1] and t >= t0 + int(outage[0] * S))


def health_checks(t0: int, seconds: float, checker: str = "10.0.0.60", net: str = "10.0.3",
                  backends: int = 12, down: int = 6, every_s: float = 2.0,
                  port: int = 8080, outage: tuple[float, int] | None = None) -> list[Packet]:
    """A load balancer's layer-4 health checks (connect, then reset) of `backends` hosts of one
    /24 on one port every `every_s`; the first `down` of them refuse (RST): a partial outage.
    Backends in an `outage` answer nothing: the checker's SYN is retransmitted once, 1 s later."""
    pk, sp, ms = [], 30000, S // 1000
    for i in range(int(seconds / every_s)):
        for j in range(1, backends + 1):
            t, b, sp = t0 + int(i * every_s * S) + j * 3 * ms, f"{net}.{j}", sp + 1
            pk.append(_tcp(t, checker, b, sp, port, SYN, 74))
            if j > down and _dead(j, t, t0, 0, outage):
                pk.append(_tcp(t + S, checker, b, sp, port, SYN, 74))
            elif j <= down:
                pk.append(_tcp(t + ms, b, checker, port, sp, RST | ACK, 54))
            else:
                pk += [_tcp(t + ms, b, checker, port, sp, SYN | ACK, 74),
                       _tcp(t + 2 * ms, checker, b, sp, port, ACK, 66),
                       _tcp(t + 3 * ms, checker, b, sp, port, RST | ACK, 54)]
    return _sorted(pk)


def ping_monitor(t0: int, seconds: float, station: str = "10.0.0.51", net: str = "10.0.2",
                 hosts: int = 30, down: int = 6,
                 outage: tuple[float, int] | None = None) -> list[Packet]:
    """A monitoring station pinging (ICMP echo) `hosts` hosts of one /24 every second; the
    first `down` of them do not answer (nor those of an `outage`, once it began)."""
    pk, ms = [], S // 1000
    for i in range(int(seconds)):
        for j in range(1, hosts + 1):
            t, h = t0 + i * S + j * 2 * ms, f"{net}.{j}"
            pk.append(Packet(t, station, h, 0, 0, PROTO_ICMP, 0, 98))
            if not _dead(j, t, t0, down, outage):
                pk.append(Packet(t + ms, h, station, 0, 0, PROTO_ICMP, 0, 98))
    return _sorted(pk)


def snmp_poller(t0: int, seconds: float, station: str = "10.0.0.50", net: str = "10.0.1",
                devices: int = 20, down: int = 4, every_s: int = 10, retries: int = 5,
                outage: tuple[float, int] | None = None, walk: int = 1) -> list[Packet]:
    """An SNMP station polling `devices` hosts of one /24 (UDP 161, one socket) every `every_s`;
    the first `down` (and those of an `outage`, once it began) do not answer and get `retries`
    retries 1 s apart (net-snmp's defaults). `walk` > 1: each poll of a live device is a walk of
    that many GETNEXT exchanges, 4 ms apart (a dead one retries its first)."""
    pk, ms, sp = [], S // 1000, 50161
    for k in range(int(seconds // every_s) + 1):
        for j in range(1, devices + 1):
            t, dev = t0 + k * every_s * S + j * 10 * ms, f"{net}.{j}"
            if _dead(j, t, t0, down, outage):
                pk += [_udp(t + r * S, station, dev, sp, 161, 90) for r in range(retries + 1)]
            else:
                for o in range(walk):
                    pk += [_udp(t + 4 * o * ms, station, dev, sp, 161, 90),
                           _udp(t + (4 * o + 3) * ms, dev, station, 161, sp, 120)]
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def mdns_discovery(t0: int, seconds: float, querier: str = "10.0.0.20", net: str = "10.0.5",
                   devices: int = 16, every_s: float = 2, qu_every: int = 4, seed: int = 21) -> list[Packet]:
    """A desktop browsing for services with mDNS (RFC 6762) on a LAN of `devices` responders:
    a query from 5353 to 224.0.0.251:5353 every `every_s`, each device answering it 20-120 ms
    later (the RFC's random delay for shared records), from 5353 to the GROUP 224.0.0.251:5353;
    every `qu_every`-th query asks for unicast answers (QU bit), which go to the querier's 5353.
    Shape of /tmp/benign-new/discovery.pcap (wt-benign report)."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    for k in range(int(seconds / every_s) + 1):
        t = t0 + int(k * every_s * S)
        pk.append(_udp(t, querier, "224.0.0.251", 5353, 5353, 110))
        to = querier if qu_every and k % qu_every == 0 else "224.0.0.251"
        for j in range(1, devices + 1):
            pk.append(_udp(t + rnd.randrange(20, 120) * ms, f"{net}.{j}", to, 5353, 5353, 96))
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def ssdp_search(t0: int, seconds: float, client: str = "10.0.0.21", net: str = "10.0.6",
                devices: int = 40, mx: float = 1, every_s: float = 3, sport: int = 50000,
                seed: int = 22) -> list[Packet]:
    """A media app searching for UPnP devices with one SSDP socket (`sport`): an M-SEARCH to
    239.255.255.250:1900 every `every_s`, sent twice 5 ms apart (UDP may be lost), with
    MX: `mx`; each of `devices` answers each copy by unicast from 1900 after a random delay of
    up to MX seconds (UPnP Device Architecture 1.1, 1.3.3). The client never sends to the
    devices' unicast addresses. Shape of /tmp/benign-new/ssdp40.pcap and ssdpmx3.pcap."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    for k in range(int(seconds / every_s) + 1):
        for c in range(2):
            t = t0 + int(k * every_s * S) + c * 5 * ms
            pk.append(_udp(t, client, "239.255.255.250", sport, 1900, 170))
            for j in range(1, devices + 1):
                pk.append(_udp(t + int(rnd.uniform(0.005, mx) * S), f"{net}.{j}", client, 1900, sport, 320))
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])


def db_pool_outage(t0: int, seconds: float, app: str = "10.0.0.70", db: str = "10.0.0.90",
                   port: int = 5432, workers: int = 15, outage: tuple[float, float] = (10, 30),
                   refused: bool = True, reconnect_every_s: float = 0.5,
                   seed: int = 23) -> list[Packet]:
    """An app host's pool of `workers` persistent connections to a database (`port`, a login
    service), opened before `t0` (their packets here carry no SYN): a query every ~0.5 s on
    each. During `outage` (from, to: seconds) the database is down: the connections are reset
    and each worker retries every ~1 s, refused (SYN answered by RST) or, with `refused`
    False, blackholed (the SYN retransmitted 1 s later, nothing answering; a retry every ~3 s,
    the driver's connect timeout 2 s). After it the workers reconnect one every
    `reconnect_every_s` (a pool refilling lazily) and query on. Shape of the dbrefused /
    dbblackhole captures (/tmp/benign-new2/gen.sh, wt-benign2)."""
    rnd, pk, ms = random.Random(seed), [], S // 1000
    start, stop, end = t0 + int(outage[0] * S), t0 + int(outage[1] * S), t0 + int(seconds * S)
    sp = 40000

    def queries(t: int, until: int, sport: int) -> None:
        while t < until:
            pk.extend([_tcp(t, app, db, sport, port, PSH | ACK, 120),
                       _tcp(t + ms, db, app, port, sport, PSH | ACK, 200),
                       _tcp(t + 2 * ms, app, db, sport, port, ACK, 66)])
            t += S // 2 + rnd.randrange(S // 20)

    for w in range(workers):
        sp += 1
        queries(t0 + rnd.randrange(S // 2), start, sp)
        t = start + rnd.randrange(S)
        while t < stop:
            sp += 1
            pk.append(_tcp(t, app, db, sp, port, SYN, 74))
            if refused:
                pk.append(_tcp(t + ms, db, app, port, sp, RST | ACK, 54))
                t += S + rnd.randrange(S // 10)
            else:
                pk.append(_tcp(t + S, app, db, sp, port, SYN, 74))
                t += 3 * S + rnd.randrange(S // 10)
        sp += 1
        t = stop + int(w * reconnect_every_s * S) + rnd.randrange(S // 10)
        pk += [_tcp(t, app, db, sp, port, SYN, 74), _tcp(t + ms, db, app, port, sp, SYN | ACK, 74),
               _tcp(t + 2 * ms, app, db, sp, port, ACK, 66)]
        queries(t + 3 * ms, end, sp)
    return _sorted([p for p in pk if p.ts_ns < end])


def slow_ack_guessing(t0: int, seconds: float, per_s: float = 4, attacker: str = "203.0.113.67",
                      server: str = "10.0.0.22", port: int = 21) -> list[Packet]:
    """Password guessing whose client sends the handshake's ACK 0.6 s after its SYN (a SYN in
    the middle of one 1 s window, the ACK in the next, whatever the phase), then a short failed
    login as in `ftp_guessing`: what a guesser would do if only a SYN and its ACK in one window
    made a login session."""
    pk, ms = [], S // 1000
    for i in range(int(seconds * per_s)):
        t, sp = t0 + int(i * S / per_s), 41000 + i
        c = lambda dt, fl, ln: pk.append(_tcp(t + dt * ms, attacker, server, sp, port, fl, ln))
        s = lambda dt, fl, ln: pk.append(_tcp(t + dt * ms, server, attacker, port, sp, fl, ln))
        c(0, SYN, 74), s(1, SYN | ACK, 74), c(600, ACK, 66), s(602, PSH | ACK, 120)
        c(603, PSH | ACK, 80), s(605, PSH | ACK, 100), c(606, PSH | ACK, 82), s(630, PSH | ACK, 90)
        c(631, FIN | ACK, 66), s(632, FIN | ACK, 66), c(633, ACK, 66)
    return _sorted(pk)


def mta_bursts(t0: int, seconds: float, mta: str = "198.51.100.25", mx: str = "10.0.0.25",
               parallel: int = 10, every_s: float = 15) -> list[Packet]:
    """A list server (or a large provider) delivering to an MX over `parallel` SMTP connections
    to port 25 at once every `every_s`: EHLO, MAIL, RCPT, DATA, QUIT over ~100 ms each. Shape of
    /tmp/benign-new2/mail.pcap (swaks, 10 parallel deliveries)."""
    pk, sp = [], 45000
    for k in range(int(seconds / every_s) + 1):
        for c in range(parallel):
            sp += 1
            _session(pk, t0 + int(k * every_s * S) + c * 3_000_000, mta, mx, sp, 25, 6,
                     15_000_000, up=120, down=90)
    return _sorted([p for p in pk if p.ts_ns < t0 + int(seconds * S)])
