"""Review of SOLICITED (12b858e, wt-review12): amplifications and reflector-port floods that
1a7e785 limited within 2 s and that 12b858e let pass whole, because a reply from a reflector port
counts as answered when its destination sent from the same port pair TO ANYONE in the last 6
windows, and the bounds (SOLICITED_PACKETS a flow a window, SOLICITED_SOURCES a destination a
window) leave 254 sources x 16 packets a second per port pair, with no bound on the number of
port pairs a source uses. Figures (replay with the shipped model, /tmp/rev12/attacks.py, 20 s;
C 10 s):
  A  mDNS desktop (queries 5353 -> 224.0.0.251:5353 every 2 s), 254 reflectors x 15 pps from
     5353 to its 5353, 1,200 B: 3,810 pps, 36.58 Mbit/s; c1c4488 lets 100% through, no rule;
     1a7e785: 9.39% through, first rule at 1.63 s ("packets nobody answered").
  B  a DNS server that the attacker pokes every 3 s with a query from port 53 (its answer goes
     from 53 to 53: it "sent from (53, 53)"), 254 open resolvers x 15 pps from 53 to its 53,
     1,400 B: 3,810 pps, 42.67 Mbit/s; c1c4488 100% through; 1a7e785 9.39% through, 1.63 s.
     Without the poke c1c4488 still blocks it (8.19% through, "254 sources of unsolicited
     reflector-port answers").
  C  the same server with services on 53, 123, 161 poked from 53, 123, 161, 1900, 11211, 389:
     254 sources x 18 port pairs x 15 pps, 1,400 B: 68,581 pps, 768.10 Mbit/s; c1c4488 100%
     through; 1a7e785 16.33% through, first rule 1.63 s.
The request the reply answers need not come from the victim's own initiative (the attacker
makes it answer), and "to anyone" meant the request's peer was never checked. b3276ae: only a
request to a multicast or broadcast address solicits (answers.asks), and a destination's
solicited replies are bounded to SOLICITED_VOLUME packets a window: all of A-C blocked again."""
from __future__ import annotations

import pytest

from services.detection.model import load_model
from services.offline.replay import replay
from services.records.packet import Packet

pytestmark = pytest.mark.unit

T0 = 1_800_000_000 * 10**9 + 370_000_000
S = 10**9
VICTIM = "10.0.0.20"


def _udp(t, s, d, sp, dp, n):
    return Packet(t, s, d, sp, dp, 17, 0, n)


def _flood(pairs, sources, pps, size, seconds):
    """Each of `sources` public hosts sends `pps` evenly spaced datagrams a second on each
    (sport, dport) of `pairs` to the victim: at most SOLICITED_PACKETS a flow a window."""
    pk = []
    for i in range(sources):
        off = (i * 0.618) % 1
        for sp, dp in pairs:
            for t in range(int(seconds * pps)):
                pk.append(_udp(T0 + int((t + off) * S / pps), f"198.51.{i // 250}.{i % 250 + 1}",
                               VICTIM, sp, dp, size))
    return pk


def _mdns_host(seconds):
    pk = []
    for k in range(int(seconds / 2) + 1):
        pk.append(_udp(T0 + k * 2 * S, VICTIM, "224.0.0.251", 5353, 5353, 110))
        for j in range(1, 6):
            pk.append(_udp(T0 + k * 2 * S + j * 20_000_000, f"10.0.5.{j}", "224.0.0.251", 5353,
                           5353, 96))
    return pk


def _poked(pairs, seconds, every_s=3):
    """The attacker (one address) asks the victim's service on q from its port p every
    `every_s`; the victim answers from q to p."""
    pk = []
    for k in range(int(seconds / every_s) + 1):
        for q, p in pairs:
            pk.append(_udp(T0 + k * every_s * S, "203.0.113.9", VICTIM, p, q, 60))
            pk.append(_udp(T0 + k * every_s * S + 1_000_000, VICTIM, "203.0.113.9", q, p, 80))
    return pk


def _blocked(pk, detector, share=0.8):
    pk = sorted(pk, key=lambda p: p.ts_ns)
    res = replay(pk, detector)
    attack = [p.src.startswith("198.51.") for p in pk]
    dropped = sum(d for d, a in zip(res.dropped.tolist(), attack) if a) / sum(attack)
    assert res.first_rule_ns is not None and res.first_rule_ns - T0 <= 3 * S
    assert dropped >= share, f"{dropped:.2%} of the attack dropped"


def test_an_amplification_under_the_solicited_bounds_at_an_mdns_host_is_blocked(detector):
    _blocked(_mdns_host(10) + _flood([(5353, 5353)], 254, 15, 1200, 10), detector)


def test_a_dns_amplification_at_a_server_the_attacker_pokes_is_blocked(detector):
    _blocked(_poked([(53, 53)], 10) + _flood([(53, 53)], 254, 15, 1400, 10), detector)


def test_the_same_amplification_without_the_poke_is_blocked(detector):
    _blocked(_flood([(53, 53)], 254, 15, 1400, 10), detector)


def test_a_reflector_port_flood_on_many_poked_port_pairs_is_blocked(detector):
    pairs = [(p, q) for q in (53, 123, 161) for p in (53, 123, 1900)]
    _blocked(_poked([(q, p) for p, q in pairs], 6) + _flood(pairs, 254, 15, 1400, 6), detector,
             share=0.6)  # 1a7e785: 72.79% dropped in 6 s (first rule at 1.63 s)


def test_the_scorer_and_the_replay_solicit_across_a_window_the_destination_s_partition_missed():
    """An M-SEARCH in window 0, nothing in the searcher's stage 2 partition in window 1 (other
    hosts talk), the answer in window 2: the replay took it as SOLICITED, the scorer's stage 2
    (dst_windows.close kept the look-back only after the window just before) as REFLECTED.
    Both now count the skipped windows (answers.Answers `skipped`)."""
    from services.detection import evidence as E
    from services.wire.partition import address_partition
    from tests.support.scorer_stages import W, run_stages
    from tests.support.scorer_stages import T0 as T

    n, searcher = 4, "10.0.0.21"
    q = address_partition(searcher, n)
    a, b = [h for h in (f"10.0.9.{i}" for i in range(1, 60)) if address_partition(h, n) != q][:2]
    dev = next(h for h in (f"10.0.6.{i}" for i in range(1, 60)) if address_partition(h, n) != q)
    pk = [Packet(T + 100, searcher, "239.255.255.250", 50000, 1900, 17, 0, 170)]
    pk += [Packet(T + W + 100 + i, a, b, 40000, 443, 17, 0, 100) for i in range(3)]
    reply = Packet(T + 2 * W + 100, dev, searcher, 1900, 50000, 17, 0, 320)
    pk.append(reply)
    key = reply.flow_key()
    scorer = [w.evidence.marks[key] for w in run_stages(pk, n=n) if key in w.evidence.marks]
    assert len(scorer) == 1 and scorer[0] & E.SOLICITED and not scorer[0] & E.REFLECTED
    res = replay(pk, load_model())
    assert [w.evidence.marks[key] for w in res.windows if key in w.evidence.marks] == scorer
    late = Packet(T + E.SOLICIT_WINDOWS * W + 100, dev, searcher, 1900, 50000, 17, 0, 320)
    pk[-1] = late  # 6 windows after the M-SEARCH: no longer solicited, on both paths
    scorer = [w.evidence.marks[key] for w in run_stages(pk, n=n) if key in w.evidence.marks]
    assert len(scorer) == 1 and scorer[0] & E.REFLECTED
    res = replay(pk, load_model())
    assert [w.evidence.marks[key] for w in res.windows if key in w.evidence.marks] == scorer
