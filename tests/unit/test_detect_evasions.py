"""What an attacker could add to hide behind the exemptions of the server-side shapes
(tests/unit/test_detect_server_shapes.py), found by a review of 34929a7, each still blocked:
- fragments: an exchange with the victim bought per source (a spoofed SYN it resets, a ping it
  echoes) or held by the flooding source itself (an HTTPS session) exempts nothing; only the
  source's UDP flows buy a budget, FRAGMENTS_PER_DATAGRAM per MTU-sized packet, unsolicited
  reflector answers none (evidence.dst_measures; tests/unit/test_detect_fragments.py);
- one-way ports: a spoofed flood of udp/514 or 8125 counts its sources again above
  ONE_WAY_VOLUME packets a window; a sweep on 514 is still a sweep;
- traceroute's ports: a /24 swept on 33434 is still a group of hosts (watch.probe_target);
  so is one swept on mtr's or tracepath's first port, and a scan of one host's high UDP ports
  in random order counts as a scan of its low ones (guards for any later traceroute exemption);
- login: a guesser that ACKs a retransmitted SYN-ACK seconds later still counts (OPEN_WINDOWS),
  also after a segment without SYN, ACK or RST and beside a spoofed SYN flood (OPENING_MAX keeps
  the sources with most SYNs), and a session whose SYN was retransmitted counts once
  (helper-46's second review)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from services.offline.replay import Pipeline, replay
from services.records.packet import Packet
from tests.support import synthetic_services as V
from tests.support import synthetic_traffic as G
from tests.support.replay_checks import first_block_s

pytestmark = pytest.mark.unit

W0 = 1_800_000_000 * 10**9  # a window's start
T0 = W0 + 370_000_000  # windows do not line up with the traffic
S = 10**9


CASES = {  # name: (packets, least share dropped, latest first block (s))
    "5-reflector fragments + a spoofed SYN a second per reflector":
        (lambda: V.with_asks(V.udp_flood_fragments_few(T0, 30), "10.0.0.54"), 0.90, 3.0),
    "5-reflector fragments + a spoofed ping a second per reflector":
        (lambda: V.with_asks(V.udp_flood_fragments_few(T0, 30), "10.0.0.54", icmp=True), 0.90, 3.0),
    "one source's fragments beside its answered HTTPS session":
        (lambda: V.fragments_beside_session(T0, 30), 0.90, 3.0),
    # above ONE_WAY_VOLUME from the first full window on (the first one holds 1,575 packets)
    "spoofed UDP flood of udp/514, 2500 pps": (lambda: V.collector_flood(T0, 30, pps=2500), 0.85, 4.0),
    "spoofed UDP flood of udp/8125, 2500 pps":
        (lambda: V.collector_flood(T0, 30, pps=2500, port=8125), 0.85, 4.0),
    "UDP host sweep on 514, 5/s": (lambda: G.host_sweep(T0, 30, port=514), 0.85, 4.2),
    "UDP host sweep on 33434, 5/s": (lambda: G.host_sweep(T0, 30, port=33434), 0.85, 4.2),
    "UDP host sweep on 33000 (mtr's first port), 5/s":
        (lambda: G.host_sweep(T0, 30, port=33000), 0.85, 4.2),
    "UDP host sweep on 44444 (tracepath's), 5/s": (lambda: G.host_sweep(T0, 30, port=44444), 0.85, 4.2),
    # counted in the window of its ACK: first block one to two windows later than a prompt guesser
    "FTP guessing, ACK after 2.2 s": (lambda: V.late_ack_guessing(T0, 30), 0.85, 5.0),
    "SSH guessing, ACK after 2.2 s": (lambda: V.late_ack_guessing(T0, 30, port=22), 0.85, 5.0),
    # each second's 10 SYNs 0.95 s into a window, a null segment in the next, the ACK after
    "SSH guessing, ACK in the window after the next, a null segment before it":
        (lambda: V.late_ack_guessing(W0, 30, port=22, delay_ms=1200, null_at_ms=300, burst_at_ms=950),
         0.85, 5.0),
    "FTP guessing, ACK after 7.5 s": (lambda: V.late_ack_guessing(T0, 30, delay_ms=7500), 0.70, 11.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_evasion_of_the_exemptions_is_still_blocked(detector, name):
    make, share, by_s = CASES[name]
    pk = make()
    res = replay(pk, detector)
    t = first_block_s(pk, res.dropped)
    assert t is not None, f"{name}: nothing dropped"
    assert t <= by_s
    assert res.dropped.mean() >= share, f"{name}: {res.dropped.mean():.3f} dropped"


def test_a_late_ack_guesser_beside_a_spread_syn_flood_is_still_blocked(detector):
    """5,000 spoofed SYNs a second to port 22 of 512 hosts (each under the half-open sources
    bound: nothing limits them, an older gap) would fill OPENING_MAX with one-SYN sources; the
    guesser's SYNs, 10 a window from one source, are kept first and it is still blocked."""
    guesser = V.late_ack_guessing(W0, 30, port=22, burst_at_ms=950)
    pk = sorted(guesser + V.spread_syn_flood(W0, 30), key=lambda p: p.ts_ns)
    res = replay(pk, detector)
    mine = np.array([p.src == guesser[0].src for p in pk])
    assert res.dropped[mine].mean() >= 0.85, res.dropped[mine].mean()


def test_a_session_whose_syn_was_retransmitted_counts_once(detector):
    """5 SSH sessions whose first SYN (late in window 0) was lost: the retransmitted SYN and the
    ACK come in window 1. login reads 5 there (it read 10 when both the window's own handshake
    and the earlier SYN's late ACK counted)."""
    w0, ms = 1_800_000_000 * 10**9, S // 1000
    pk = []
    for i in range(5):
        t, sp = w0 + 900 * ms + i * ms, 42000 + i
        pk += [G._tcp(t, "10.0.0.74", "10.0.0.94", sp, 22, G.SYN, 74),
               G._tcp(t + S, "10.0.0.74", "10.0.0.94", sp, 22, G.SYN, 74),
               G._tcp(t + S + ms, "10.0.0.94", "10.0.0.74", 22, sp, G.SYN | G.ACK, 74),
               G._tcp(t + S + 2 * ms, "10.0.0.74", "10.0.0.94", sp, 22, G.ACK, 66)]
    pk.append(G._udp(w0 + 3 * S, "10.0.0.1", "10.0.0.2", 1, 2, 60))
    pk = [Packet(p.ts_ns, p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_flags, p.length, seq=i)
          for i, p in enumerate(sorted(pk, key=lambda p: p.ts_ns))]
    logins = [r.evidence.src.get("10.0.0.74", [0] * 4)[3] for r in Pipeline(detector).run(pk)]
    assert max(logins) == 5, logins


def _udp_port_scan(lo: int, hi: int, pps: float = 10, seconds: int = 30, seed: int = 41) -> list:
    """One scanner, one target: UDP datagrams to the ports lo..hi in random order (nmap -sU's
    default order), `pps` a second, nobody answers."""
    rnd = random.Random(seed)
    ports = rnd.sample(range(lo, hi + 1), int(seconds * pps))
    return [G._udp(T0 + int(i * S / pps), "203.0.113.91", "10.0.0.32", 41000, port, 60)
            for i, port in enumerate(ports)]


def test_a_random_order_scan_of_high_ports_counts_as_one_of_low_ports(detector):
    """A UDP scan of one host in random order over mtr's and tracepath's ports (33000-65535) is
    blocked as early and as much as the same scan over ports 1-32999: a guard for any exemption
    of traceroute-like port walks (one tried, a target per 64-port block up there, cost real
    nmap -sU scans, whose top ports cluster at 49152-49211: docs/detection.md)."""
    low, high = _udp_port_scan(1, 32999), _udp_port_scan(33000, 65535)
    r_low, r_high = replay(low, detector), replay(high, detector)
    assert r_low.dropped.mean() >= 0.80, r_low.dropped.mean()  # the scan is caught at all
    assert r_high.dropped.mean() >= r_low.dropped.mean() - 0.02
    assert first_block_s(high, r_high.dropped) <= first_block_s(low, r_low.dropped) + 0.5
