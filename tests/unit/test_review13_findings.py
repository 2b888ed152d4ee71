"""Review 13 (helper-50, on 4034f28) of the fragment budget (fragments.pair_budgets: 44 non-first
fragments per first fragment a source's port-bearing UDP flows to a destination can hold) and of
the source half_open floor raised from 20 to 64. notes/review-helper-50.md has the figures.
Each strict xfail is a finding left open: it fails on 4034f28 and will pass once it is fixed
(F1 was fixed since: a normal test now, failing on 4034f28; F4 was fixed by acb4228 and is
open again, see test_review15_findings.py G1).

- F1: the classic spoofed fragmented UDP flood (hping3 --rand-source of large datagrams, every
  datagram from a new address) pays for its own fragments: each spoofed source's one first
  fragment buys 44 fragments, so `fragments` stays 0; below ~32 datagrams a second (unsolicited
  sources settled in a window under 24) and 2,000 packets a window it gets no rule at all (on
  138c52d: 90.58-94.41% dropped, first block 1.63-2.70 s). An unfragmented spoofed flood of the
  same packet rate is blocked by unsolicited_srcs (94.42%): the fragmented one is not "judged
  like an unfragmented flood of its datagrams" when its sources are spoofed.
- F2: a SYN flood from one address under 64 a second: no measure names it (the model agrees:
  every such flow scores over the threshold); 91.17% dropped on 138c52d at 40 a second, 0 now.
  Documented as accepted (docs/detection.md "Bounds"); held here so the gap stays visible.
- F3: under the capture's adaptive sampling (1-in-N records weighted N), one sampled later
  fragment whose first fragment was not sampled counts N: at 1-in-16 a one-way stream the
  budget lets through unsampled (iperf3 -u -l 4000, 25 datagrams/s) is blocked (83.77% and
  97.47% of its sampled packets dropped, two seeds).
- Parity: evidence_columns.assess_columns equals evidence.assess on windows with several
  destinations and sources and edge byte counts (passes: no finding).
"""
from __future__ import annotations

import dataclasses
import random

import pytest

from services.detection.evidence import FIRST_FRAGMENT_BYTES, Answers
from services.detection.features import hash64_keys
from services.offline.replay import replay
from services.records.packet import PROTO_TCP, PROTO_UDP, Packet
from tests.support import synthetic_services as V
from tests.support.synthetic_traffic import _public
from tests.support.evidence_parity import assert_columns_match
from tests.support.replay_checks import first_block_s

pytestmark = pytest.mark.unit

S = 10**9
T0 = 1_800_000_000 * S + 370_000_000  # windows do not line up with the traffic


def rand_source_fragment_flood(t0: int, seconds: float, per_s: int, datagram: int = 65000,
                               victim: str = "10.0.0.77", seed: int = 5) -> list[Packet]:
    """hping3 --udp --rand-source -d <datagram> (or any raw-socket flooder of large datagrams):
    `per_s` datagrams a second, each from a new spoofed address to a random port, each in IP
    fragments over a 1,500-byte MTU (65,000 bytes: a 1,514-byte first fragment with the ports,
    then 44 later ones without)."""
    rnd, pk = random.Random(seed), []
    frames = V._fragment_frames(datagram)
    for i in range(int(seconds * per_s)):
        t, src = t0 + i * S // per_s, _public(rnd)
        sp, dp = rnd.randrange(1024, 65536), rnd.randrange(1, 65536)
        for j, n in enumerate(frames):
            pk.append(Packet(t + j * 10_000, src, victim, sp if j == 0 else 0, dp if j == 0 else 0,
                             PROTO_UDP, 0, n))
    return sorted(pk, key=lambda p: p.ts_ns)


@pytest.mark.parametrize("per_s,datagram", [(10, 65000), (30, 65000), (100, 4000)])
def test_a_random_source_fragmented_udp_flood_is_blocked(detector, per_s, datagram):
    """10 and 30 datagrams of 65,000 bytes a second (450 and 1,350 packets a second, 5.2 and
    15.6 Mbit/s): no rule on 4034f28; 100 of 4,000 bytes (300 packets a second): 78.46%,
    first block 1.79 s (138c52d: 90.58% / 2.70 s, 94.41% / 1.63 s, 93.92% / 1.63 s). Fixed by
    evidence.UNANSWERED_FIRST_MIN: an unanswered flow holding one first fragment buys nothing."""
    pk = rand_source_fragment_flood(T0, 30, per_s, datagram)
    res = replay(pk, detector)
    t = first_block_s(pk, res.dropped)
    assert t is not None and t <= 3.0, t
    assert res.dropped.mean() >= 0.90, f"{res.dropped.mean():.4f} dropped"


def test_an_unfragmented_random_source_flood_of_the_same_packet_rate_is_blocked(detector):
    """What F1's flood would be without fragments (1,320 packets a second of 1,514 bytes from
    random sources): blocked by unsolicited_srcs (94.42%, first block 1.63 s)."""
    rnd = random.Random(6)
    pk = [Packet(T0 + i * S // 1320, _public(rnd), "10.0.0.77", rnd.randrange(1024, 65536),
                 rnd.randrange(1, 65536), PROTO_UDP, 0, 1514) for i in range(30 * 1320)]
    res = replay(pk, detector)
    t = first_block_s(pk, res.dropped)
    assert t is not None and t <= 3.0, t
    assert res.dropped.mean() >= 0.90


def syn_flood_one_source(t0: int, seconds: float, pps: int, src: str = "203.0.113.9",
                         victim: str = "10.0.0.10", dport: int = 80) -> list[Packet]:
    """hping3 -S -p 80 -i u<1e6/pps>: SYNs from one address, a new source port each."""
    return [Packet(t0 + i * S // pps, src, victim, 1024 + i % 60000, dport, PROTO_TCP, 0x02, 74)
            for i in range(int(seconds * pps))]


@pytest.mark.xfail(strict=True, reason="F2 (review 13): one address under 64 SYNs a second is "
                   "named by no measure since the half_open floor is 64 (accepted in "
                   "docs/detection.md); 91.17% dropped on 138c52d")
def test_a_syn_flood_from_one_address_at_40_a_second_is_blocked(detector):
    pk = syn_flood_one_source(T0, 30, 40)
    res = replay(pk, detector)
    t = first_block_s(pk, res.dropped)
    assert t is not None and t <= 3.0, t
    assert res.dropped.mean() >= 0.90


def test_the_model_agrees_on_a_syn_flood_under_the_floor(detector):
    """F2's flood is left through by the floor alone: its half-open flows are above the
    model's threshold in every full window (the score is no obstacle), and its count stays
    under 64."""
    from services.detection.evidence import HALF_OPEN
    res = replay(syn_flood_one_source(T0, 10, 40), detector)
    full = res.windows[1:-1]
    assert full and not any(w.suggestions for w in res.windows)
    for w in full:
        half = [i for i, k in enumerate(w.keys) if w.evidence.marks[k] & HALF_OPEN]
        assert 20 <= len(half) < 64
        assert all(w.scores[i] >= detector.threshold for i in half)


def test_a_syn_flood_at_the_new_floor_is_blocked_within_3_s(detector):
    """64 SYNs a second from one address: 91.20%, first block 2.64 s (138c52d: 94.53%, 1.64 s;
    the grace time moves a quarter of a window's SYNs into the next one, so the first full
    window is the first to reach 64)."""
    pk = syn_flood_one_source(T0, 30, 64)
    res = replay(pk, detector)
    t = first_block_s(pk, res.dropped)
    assert t is not None and t <= 3.0, t
    assert res.dropped.mean() >= 0.90


def _sampled(pk: list[Packet], n: int, seed: int) -> list[Packet]:
    """The capture's 1-in-`n` sampling: each packet kept with probability 1/n, weighted n."""
    rnd = random.Random(seed)
    return [dataclasses.replace(p, sample_rate=n) for p in pk if rnd.randrange(n) == 0]


@pytest.mark.xfail(strict=True, reason="F3 (review 13): under 1-in-16 sampling one orphan later "
                   "fragment counts 16-32, near the bound of 20; a benign stream is blocked")
@pytest.mark.parametrize("seed", [1, 2])
def test_a_one_way_fragmented_stream_loses_nothing_under_sampling(detector, seed):
    """iperf3 -u -l 4000 at 25 datagrams a second (passes unsampled: test_detect_fragments),
    2 minutes at 1-in-16: 83.77% (seed 1) and 97.47% (seed 2) of its records dropped on
    4034f28."""
    pk = _sampled(V.udp_stream_fragmented(T0, 120), 16, seed)
    res = replay(pk, detector)
    assert [sg.reason for w in res.windows for sg in w.suggestions] == []


def test_the_columns_equal_the_per_flow_fragment_budget_on_mixed_windows():
    """assess_columns == evidence.assess (marks, source and destination measures, to the bit and
    type) on 1,500 random windows with several sources and destinations (IPv4, IPv6, a group),
    fragments of UDP and TCP, and edge byte counts: 0, fewer than 60 a packet, exactly k x
    FIRST_FRAGMENT_BYTES and one below, 2**64 - 1 (20,000 such windows in the review: none
    differed)."""
    end, F = 2 * S, FIRST_FRAGMENT_BYTES
    srcs = [f"192.0.2.{i}" for i in range(1, 5)] + ["2001:db8::1"]
    dsts = ["10.0.0.1", "10.0.0.2", "224.0.0.5", "2001:db8::9"]
    rnd = random.Random(13)
    for _ in range(1500):
        flows = {}
        for _ in range(rnd.randrange(1, 20)):
            sp, dp = rnd.choice([(0, 0), (0, 0), (53, 5001), (5001, 5001), (123, 9)])
            k = (rnd.choice(srcs), rnd.choice(dsts), sp, dp, rnd.choice([17, 17, 6]))
            p = rnd.choice([1, 2, 44, 45, 2**64 - 1, rnd.randrange(1, 300)])
            small = rnd.randrange(1, 300)
            b = rnd.choice([0, 59, small * 60 - 1, F - 1, F, F * small, F * small - 1, 1514 * small,
                            2**64 - 1])
            flows[k] = {"first": 0, "last": rnd.choice([0, end]), "packets": p, "bytes": b,
                        "flags": 0, "syn": 0, "proto": k[4], "sport": sp, "dport": dp}
        keys = list(flows)
        sent = [(k[1], k[0], k[3], k[2], k[4]) for k in keys if rnd.random() < 0.3]
        answers = Answers({k[0] for k in sent}, hash64_keys(sent), [], hashed=True)
        assert_columns_match(keys, flows, answers, {}, end)


def resolver_fragmented_answers(t0: int, seconds: float, servers: int, per_s: int,
                                resolver: str = "10.0.0.53", seed: int = 35) -> list[Packet]:
    """synthetic_services.resolver_upstream with more authoritative servers: each answer (~4 KB,
    EDNS 4096) asked for by the resolver's query and arriving in three fragments."""
    rnd = random.Random(seed)
    auth = [_public(rnd) for _ in range(servers)]
    pk = []
    for i in range(int(seconds * per_s)):
        t, a, sp = t0 + i * S // per_s, rnd.choice(auth), rnd.randrange(1024, 65536)
        pk += [Packet(t, resolver, a, sp, 53, PROTO_UDP, 0, 80),
               Packet(t + 2_000_000, a, resolver, 53, sp, PROTO_UDP, 0, 1514),
               Packet(t + 2_020_000, a, resolver, 0, 0, PROTO_UDP, 0, 1514),
               Packet(t + 2_040_000, a, resolver, 0, 0, PROTO_UDP, 0, 1100)]
    return sorted(pk, key=lambda p: p.ts_ns)


@pytest.mark.xfail(strict=True, reason="F4 (review 13, also on 138c52d): a non-first fragment flow "
                   "(ports 0) is never answered, so every server whose answer came in fragments "
                   "counts in unsolicited_srcs; a resolver is limited (acb4228 fixed it and opened "
                   "review 15's G1; taken out again)")
@pytest.mark.parametrize("servers", [60, 100])
def test_a_resolver_with_many_servers_answering_in_fragments_loses_nothing(detector, servers):
    """`servers` authoritative servers, as many fragmented answers a second (one each on
    average), every one asked for: 65.30% (60) and 78.46% (100) of the resolver's inbound
    packets dropped on 4034f28 and 138c52d (`unsolicited_srcs` 26 and 29, bound 24): a non-first
    fragment flow (ports 0) is never answered."""
    pk = resolver_fragmented_answers(T0, 30, servers, servers)
    res = replay(pk, detector)
    assert [sg.reason for w in res.windows for sg in w.suggestions] == []


def test_a_resolver_with_few_servers_answering_in_fragments_loses_nothing(detector):
    """F4's bound: 40 servers (under 24 of them settled in a window) pass."""
    res = replay(resolver_fragmented_answers(T0, 30, 40, 40), detector)
    assert int(res.dropped.sum()) == 0


@pytest.mark.xfail(strict=True, reason="F5 (review 13, also on 138c52d): the later fragments of "
                   "answered datagrams count as packets nobody answered (kept: one answer must not "
                   "carry 44 packets of volume); NFS over UDP is blocked")
def test_nfs_over_udp_reads_lose_nothing(detector):
    """An NFS client reading 32 KB blocks over UDP, 100 a second (26 Mbit/s): each request
    answered by one datagram in 23 fragments. Its 2,200 later fragments a second are never
    'answered' (no ports): `packets` 2,200 (bound 2,000), the server blocked, 91.23% of the
    client's inbound packets dropped on 4034f28 and 138c52d."""
    client, server, pk = "10.0.0.31", "198.51.100.70", []
    frames = V._fragment_frames(32768)
    for i in range(30 * 100):
        t = T0 + i * S // 100
        pk.append(Packet(t, client, server, 800, 2049, PROTO_UDP, 0, 150))
        pk += [Packet(t + 1_000_000 + j * 12_000, server, client, 2049 if j == 0 else 0,
                      800 if j == 0 else 0, PROTO_UDP, 0, n) for j, n in enumerate(frames)]
    res = replay(sorted(pk, key=lambda p: p.ts_ns), detector)
    assert [sg.reason for w in res.windows for sg in w.suggestions] == []


@pytest.mark.xfail(strict=True, reason="F6 (review 13, also on 138c52d): fewer than 8 spoofed "
                   "sources a window get source rules, which a spoofer never matches again")
def test_a_slow_random_source_fragmented_flood_is_blocked(detector):
    """5 datagrams of 65,000 bytes a second (225 packets a second), each from a new spoofed
    address: 0 dropped on 4034f28 (no rule) and on 138c52d (150 source rules, none matching
    a later packet)."""
    pk = rand_source_fragment_flood(T0, 30, 5)
    res = replay(pk, detector)
    assert res.dropped.mean() >= 0.90, f"{res.dropped.mean():.4f} dropped"
