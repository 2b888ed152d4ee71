"""Review 15 (helper-52, on ecf4e9a) of two fragment-evidence changes: 40cf965 (an UNANSWERED UDP
flow buys a fragment budget only from UNANSWERED_FIRST_MIN = 2 first fragments) and acb4228
(`fragments.answer_fragments`, acb4228, taken out since: a non-first UDP fragment flow covered by the budget of its
source's ANSWERED UDP flows to the destination loses UNANSWERED, so its source no longer counts
in `unsolicited_srcs`). notes/review-helper-52.md has the figures. Each strict xfail is a finding
left open: it fails on ecf4e9a and passes once fixed.

- G1: a spoofed-source flood of large datagrams at a UDP service of the victim that answers
  each datagram (one small reply to the spoofed address): each spoofed address's first
  fragment is ANSWERED, buys 44 fragments, and since acb4228 its later fragments no longer make
  it an unsolicited source. Under 2,000 later fragments a window (`packets`) it gets no rule:
  4,000-byte datagrams at 700 a second (2,100 packets/s, 22 Mbit/s): 0 dropped (92.27% on
  4034f28 and 138c52d, unsolicited_srcs); 65,000-byte datagrams at 40 or 46 a second: 0
  (88.52% / 88.93% on both older commits).
- G2: 40cf965 applied UNANSWERED_FIRST_MIN per flow (5-tuple), not per source and destination:
  a host sending large datagrams one way, each from a new source port (a new socket per
  message: logger/nc -u in a loop, an SNMP trap or GELF sender), holds one first fragment per
  flow and bought nothing, however many datagrams a second: 8,000-byte datagrams at 5 a second
  93.67% dropped, 25 of 4,000 bytes 93.93%, 2 of 65,000 bytes 96.67% (0 on 4034f28; the same
  stream from one source port: 0 on both). Fixed (the minimum counts a pair's unanswered
  first fragments together): a spoofed address's one datagram still buys nothing.
- G3 (accepted in docs/detection.md by 40cf965, held here to stay visible): one large datagram
  a window per source and destination, unanswered, buys nothing, as before the budget: a
  one-way stream of one 65,000- or 30,000-byte datagram a second 93.33% dropped; 10 hosts each
  sending one 8,000-byte datagram a second to a collector 76.00% (30 hosts: 96.19%); 0 on
  4034f28, the same on 138c52d.
- Parity: evidence_columns.assess_columns equals evidence.assess on windows mixing several
  sources and destinations (IPv4, IPv6, a group), answered, solicited and unanswered large UDP
  flows from reflector ports and not, UDP and TCP fragment flows on both sides of the budget,
  counters near 2**64 (passes: no finding); the strategy is checked to draw cleared fragment
  flows, kept ones beside a budget, and cleared ones whose budget passes 2**53.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.detection.answers import asked_key
from services.detection.evidence import (FIRST_FRAGMENT_BYTES, FRAGMENT, FRAGMENTS_PER_DATAGRAM,
                                         UNANSWERED, Answers, assess)
from services.detection.features import hash64, hash64_keys
from services.offline.replay import replay
from services.records.packet import PROTO_UDP, Packet
from tests.support import synthetic_services as V
from tests.support.synthetic_traffic import _public
from tests.support.evidence_parity import assert_columns_match
from tests.support.replay_checks import first_block_s

pytestmark = pytest.mark.unit

S = 10**9
T0 = 1_800_000_000 * S + 370_000_000
VICTIM = "10.0.0.77"


def answered_spoofed_fragment_flood(t0: int, seconds: float, per_s: int, datagram: int,
                                    victim: str = VICTIM, dport: int = 53,
                                    seed: int = 5) -> list[Packet]:
    """`per_s` datagrams a second of `datagram` bytes, each from a new spoofed address and source
    port to the victim's UDP service at `dport`, in IP fragments over a 1,500-byte MTU; the
    service answers each datagram once it is reassembled (one 100-byte reply to the spoofed
    address and port, 0.3 ms after the last fragment): what any UDP service that answers
    anything (a DNS server's FORMERR, a game or STUN server) does."""
    rnd, pk = random.Random(seed), []
    frames = V._fragment_frames(datagram)
    for i in range(int(seconds * per_s)):
        t, src, sp = t0 + i * S // per_s, _public(rnd), rnd.randrange(1024, 65536)
        for j, n in enumerate(frames):
            pk.append(Packet(t + j * 10_000, src, victim, sp if j == 0 else 0, dport if j == 0 else 0,
                             PROTO_UDP, 0, n))
        pk.append(Packet(t + len(frames) * 10_000 + 300_000, victim, src, dport, sp, PROTO_UDP, 0,
                         100))
    return sorted(pk, key=lambda p: p.ts_ns)


@pytest.mark.parametrize("per_s,datagram,least", [(700, 4000, 0.90), (46, 65000, 0.88)])
def test_a_spoofed_fragmented_flood_at_an_answering_service_is_blocked(detector, per_s, datagram,
                                                                        least):
    """G1: with acb4228's answer_fragments (taken out since) a spoofed fragmented flood at a UDP
    service that answers it was no unsolicited source and, under 2,000 later fragments a
    window, got no rule (0 dropped; 92.27% / 88.52-88.93% on 4034f28 and 138c52d: the 65,000-byte
    case is under the goal's 90% there too, `least` asserts what it was)."""
    pk = answered_spoofed_fragment_flood(T0, 30, per_s, datagram)
    res = replay(pk, detector)
    inbound = np.array([p.dst == VICTIM for p in pk])
    t = first_block_s(pk, res.dropped)
    assert t is not None and t <= 3.0, t
    assert res.dropped[inbound].mean() >= least, f"{res.dropped[inbound].mean():.4f} dropped"


def test_the_answering_service_flood_above_2000_packets_a_window_is_named(detector):
    """4,000-byte datagrams at 1,000 a second (2,000 later fragments a window): named by its
    unsolicited sources (and, with acb4228's answer_fragments, by `packets` alone: 89.68%
    dropped, first block 2.65 s). Asserts a rule within 3 s, not the goal."""
    pk = answered_spoofed_fragment_flood(T0, 30, 1000, 4000)
    res = replay(pk, detector)
    reasons = [sg.reason for w in res.windows for sg in w.suggestions]
    assert any("nobody answered" in r for r in reasons), reasons[:2]
    assert first_block_s(pk, res.dropped) <= 3.0


def one_way_new_socket_stream(t0: int, seconds: float, per_s: int, datagram: int, dport: int,
                              src: str = "10.1.0.5", dst: str = "10.0.0.50") -> list[Packet]:
    """A host sending `per_s` datagrams of `datagram` bytes a second one way, each from a new
    ephemeral source port (a new socket per message), in fragments over a 1,500-byte MTU."""
    rnd, pk = random.Random(4), []
    frames = V._fragment_frames(datagram)
    for i in range(int(seconds * per_s)):
        t, sp = t0 + i * S // per_s, rnd.randrange(32768, 61000)
        for j, n in enumerate(frames):
            pk.append(Packet(t + j * 10_000, src, dst, sp if j == 0 else 0, dport if j == 0 else 0,
                             PROTO_UDP, 0, n))
    return sorted(pk, key=lambda p: p.ts_ns)


@pytest.mark.parametrize("per_s,datagram,dport", [(5, 8000, 12201), (25, 4000, 5001),
                                                  (2, 65000, 5001), (5, 8000, 162)])
def test_a_one_way_stream_of_new_sockets_is_not_blocked(detector, per_s, datagram, dport):
    """G2: 93.67%, 93.93%, 96.67%, 93.67% dropped on ecf4e9a (0 on 4034f28)."""
    pk = one_way_new_socket_stream(T0, 60, per_s, datagram, dport)
    res = replay(pk, detector)
    assert not res.dropped.any(), f"{res.dropped.mean():.4f} dropped"
    assert not [sg for w in res.windows for sg in w.suggestions]


def test_a_spoofed_address_with_one_datagram_still_buys_nothing():
    """The pair minimum keeps F1 (review 13): one first fragment per (source, destination),
    unanswered, buys nothing; two flows of one first fragment each from that source buy 88."""
    from services.detection.evidence import DST_MEASURES
    at, d = DST_MEASURES.index("fragments"), "10.0.0.77"

    def frags(sports):
        flows = {}
        for sp in sports:
            flows[("198.51.100.7", d, sp, 9, 17)] = {"first": 0, "last": 0, "packets": 1,
                                                     "bytes": 1514, "flags": 0, "syn": 0}
        flows[("198.51.100.7", d, 0, 0, 17)] = {"first": 0, "last": 0, "packets": 88,
                                                "bytes": 88 * 1514, "flags": 0, "syn": 0}
        return assess(list(flows), flows, Answers({d}, [], []), END, {}).dst[d][at]
    assert frags([4000]) == 88
    assert frags([4000, 4001]) == 0
    assert frags([4000, 4001, 4002]) == 0


@pytest.mark.xfail(strict=True, reason="G3 (review 15, accepted in docs/detection.md since 40cf965): "
                   "one unanswered large datagram a window per source buys nothing; 93.33% / 76.00% "
                   "dropped, 0 on 4034f28")
@pytest.mark.parametrize("hosts,datagram", [(1, 65000), (10, 8000)])
def test_one_large_datagram_a_second_per_host_is_not_blocked(detector, hosts, datagram):
    pk = []
    for h in range(hosts):
        pk += one_way_new_socket_stream(T0 + h * S // hosts, 60, 1, datagram, 9000,
                                        src=f"10.2.0.{h + 1}")
    pk.sort(key=lambda p: p.ts_ns)
    res = replay(pk, detector)
    assert not res.dropped.any(), f"{res.dropped.mean():.4f} dropped"


# ---- parity: columns == per-flow assessment on mixed fragment windows ----

END = 2_000_000_000
SRCS = ["192.0.2.1", "192.0.2.2", "10.0.0.2", "2001:db8::9"]
DSTS = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "224.0.0.5"]
BIG = [2**63, 2**64 - 2, 2**64 - 1]


@st.composite
def mixed_fragment_windows(draw):
    """Several sources and destinations (IPv4, IPv6, a group address, a host that is both); per
    pair: port-bearing UDP flows from a reflector port (53, 123) or not (5001, 40000), small,
    MTU-sized, jumbo or 2**64 - 1 bytes, 1-3, 44, 45 or near-2**64 packets, settled or not,
    answered, solicited (a request the destination sent, without an answer flow) or neither;
    UDP and TCP fragment flows (ports 0) of 1-200, 44, 45, 88, 89 or near-2**64 packets."""
    flows, answer, ask = {}, [], []
    pairs = draw(st.lists(st.tuples(st.sampled_from(SRCS), st.sampled_from(DSTS)), min_size=1,
                          max_size=6, unique=True))
    for s, d in pairs:
        if s == d:
            continue
        for sport in draw(st.lists(st.sampled_from([53, 123, 5001, 40000]), max_size=3, unique=True)):
            k = (s, d, sport, draw(st.sampled_from([53, 5001, 40000])), 17)
            packets = draw(st.one_of(st.integers(1, 3), st.sampled_from([44, 45] + BIG)))
            per = draw(st.sampled_from([60, FIRST_FRAGMENT_BYTES - 1, FIRST_FRAGMENT_BYTES, 1514,
                                        9014]))
            nbytes = min(draw(st.sampled_from([packets * per, packets * per - 1, 2**64 - 1])),
                         2**64 - 1)
            flows[k] = {"first": 0, "packets": packets, "bytes": max(nbytes, 0), "flags": 0,
                        "syn": 0, "proto": 17, "sport": k[2], "dport": k[3],
                        "last": draw(st.sampled_from([0, END - 250_000_000 + 1, END]))}
            how = draw(st.sampled_from(["answered", "solicited", "neither"]))
            if how == "answered":
                answer.append((d, s, k[3], k[2], 17))
            elif how == "solicited":
                ask.append(hash64(asked_key(k)))
        for proto in draw(st.lists(st.sampled_from([17, 6]), max_size=2, unique=True)):
            k = (s, d, 0, 0, proto)
            n = draw(st.one_of(st.integers(1, 200),
                               st.sampled_from([FRAGMENTS_PER_DATAGRAM, FRAGMENTS_PER_DATAGRAM + 1,
                                                2 * FRAGMENTS_PER_DATAGRAM,
                                                2 * FRAGMENTS_PER_DATAGRAM + 1] + BIG)))
            flows[k] = {"first": 0, "last": draw(st.sampled_from([0, END])), "packets": n,
                        "bytes": min(n * 1514, 2**64 - 1), "flags": 0, "syn": 0, "proto": proto,
                        "sport": 0, "dport": 0}
            if draw(st.integers(0, 9)) == 0:  # fragments both ways answer each other
                answer.append((d, s, 0, 0, proto))
    keys = list(flows)
    # every destination but one sent something (an address that sent nothing answers nothing)
    addresses = {k[1] for k in keys if draw(st.integers(0, 4))} | {a[0] for a in answer}
    answers = Answers(addresses, hash64_keys(answer), ask, hashed=True)
    return keys, flows, answers, {}


@settings(max_examples=400, deadline=None)
@given(mixed_fragment_windows())
def test_columns_equal_the_per_flow_assessment_on_mixed_fragment_windows(window):
    assert_columns_match(*window, END)


def test_the_mixed_strategy_draws_unanswered_fragments_beside_a_budget():
    """The strategy generates unanswered UDP fragment flows beside an answered flow's budget
    (covered by it, and beyond it), budgets past 2**53 (where a float sum would be inexact; one
    pair's budget cannot pass 2**64: 44 x (2**64 - 1) // 1,200 per flow), solicited flows, and
    pairs with 2 unanswered flows of one first fragment each (the pair minimum, G2) (else the
    parity says nothing of them)."""
    from services.detection.marks import ANSWERED, REFLECTED, SOLICITED
    seen = {"covered": 0, "beyond a budget": 0, "budget past 2**53": 0,
            "solicited": 0, "pair of unanswered single first fragments": 0}

    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mixed_fragment_windows())
    def sample(w):
        keys, flows, answers, own = w
        got = assess(keys, flows, answers, END, own).marks
        single: dict = {}
        for k in keys:
            f = flows[k]
            if (k[4] == 17 and k[2:4] != (0, 0) and not got[k] & (ANSWERED | REFLECTED)
                    and min(f["packets"], f["bytes"] // FIRST_FRAGMENT_BYTES) == 1):
                single[k[:2]] = single.get(k[:2], 0) + 1
        seen["pair of unanswered single first fragments"] += sum(n >= 2 for n in single.values())
        for k in keys:
            seen["solicited"] += bool(got[k] & SOLICITED)
            if not (got[k] & FRAGMENT and got[k] & UNANSWERED and k[4] == 17):
                continue
            budget = sum(FRAGMENTS_PER_DATAGRAM * min(flows[j]["packets"],
                                                      flows[j]["bytes"] // FIRST_FRAGMENT_BYTES)
                         for j in keys if j[:2] == k[:2] and j[4] == 17 and j[2:4] != (0, 0)
                         and got[j] & ANSWERED)
            if budget:
                seen["covered" if flows[k]["packets"] <= budget else "beyond a budget"] += 1
                seen["budget past 2**53"] += budget > 2**53
    sample()
    assert all(seen.values()), seen
