"""The `fragments` destination evidence (evidence.dst_measures, fragments.pair_budgets): a source's
non-first IP fragments to a destination count beyond FRAGMENTS_PER_DATAGRAM per first fragment
its port-bearing UDP flows there can hold (packets of FIRST_FRAGMENT_BYTES or more), unsolicited
reflector answers (REFLECTED) buying nothing. On 138c52d the budget was 44 per packet of the
source's ANSWERED UDP flows, which
- blocked a one-way stream of datagrams larger than the MTU (iperf3 -u -l 4000: nobody answers
  it; the frag capture lost 87.40% of its packets), and
- let an answered SMALL packet buy 44 fragments (helper-46, F5: 10 answered 60-byte queries a
  second per source hid 380 fragments a second from 5 sources).
Each test named for one of those fails there. A one-source fragmented UDP flood is now judged
like an unfragmented one: by the packets nobody answered."""
from __future__ import annotations

import numpy as np
import pytest

from services.detection import evidence as E
from services.offline.replay import replay
from tests.support import synthetic_services as V
from tests.support import synthetic_traffic as G
from tests.support.replay_checks import first_block_s

pytestmark = pytest.mark.unit

W0 = 1_800_000_000 * 10**9
T0 = W0 + 370_000_000  # windows do not line up with the traffic
S = 10**9
D = "10.0.0.59"
AT = E.DST_MEASURES.index("fragments")


def fragments(flows: dict, sent: tuple = ()) -> int:
    """dst_measures' `fragments` of D for `flows` (5-tuple -> (packets, bytes)) when D sent the
    flows `sent` (their reverse 5-tuples answer)."""
    st = {k: {"packets": n, "bytes": b, "flags": 0, "syn": 0, "last": W0}
          for k, (n, b) in flows.items()}
    st.update({k: {"packets": 1, "bytes": 60, "flags": 0, "syn": 0, "last": W0} for k in sent})
    ans = E.Answers.of_keys(st, None, 0)
    marks = {k: E.flow_marks(k, st[k], ans, W0 + S) for k in st}
    return E.dst_measures(st, st, marks)[D][AT]


def test_a_one_way_stream_of_large_datagrams_buys_its_own_fragments():
    """25 datagrams of 4,000 bytes, nobody answering: 25 first fragments of 1,514 bytes with the
    ports, 50 later ones. On 138c52d all 50 counted (frag.pcap: `fragments` 50, bound 20)."""
    s = "198.51.100.40"
    assert fragments({(s, D, 45000, 5201, 17): (25, 25 * 1514), (s, D, 0, 0, 17): (50, 25 * 2596)}) == 0


def test_small_answered_packets_buy_no_fragments():
    """F5: 10 answered 60-byte queries of a source beside 76 of its non-first fragments (on
    138c52d they bought 440: none counted)."""
    s = "198.51.100.41"
    sent = tuple((D, s, 53, 30000 + i, 17) for i in range(10))
    flows = {(s, D, 30000 + i, 53, 17): (1, 60) for i in range(10)}
    assert fragments({**flows, (s, D, 0, 0, 17): (76, 76 * 1514)}, sent) == 76


@pytest.mark.parametrize("packets,nbytes,frags,counted", [
    (2, 2 * 1514, 88, 0), (2, 2 * 1514, 89, 1),  # two first fragments: 88
    (2, 2 * E.FIRST_FRAGMENT_BYTES - 1, 45, 45),  # one held: unanswered, nothing (F1)
    (1, 9014, 45, 45),  # a jumbo frame is one packet: one held, nothing unanswered
    (3, 3 * 9014, 133, 1),  # three jumbo frames: 3 x 44, not 3 x 7 x 44
    (3, 3 * 100, 5, 5)])  # small packets: nothing
def test_the_budget_is_44_per_packet_the_flow_can_hold_of_mtu_size(packets, nbytes, frags, counted):
    s = "198.51.100.42"
    flows = {(s, D, 45000, 5201, 17): (packets, nbytes), (s, D, 0, 0, 17): (frags, frags * 1514)}
    assert fragments(flows) == counted


def test_unsolicited_reflector_answers_buy_nothing_solicited_ones_do():
    """An amplification's first fragments (UDP from port 53, 123, ... that D never asked for:
    REFLECTED) buy no budget, however large; the same answer to D's query does; a TCP flow of
    the source buys nothing."""
    s = "198.51.100.43"
    big = (s, D, 53, 8080, 17)
    frag = {(s, D, 0, 0, 17): (40, 40 * 1514)}
    assert fragments({big: (10, 10 * 1514), **frag}) == 40
    assert fragments({(s, D, 123, 8080, 17): (10, 10 * 1514), **frag}) == 40
    assert fragments({big: (10, 10 * 1514), **frag}, sent=((D, s, 8080, 53, 17),)) == 0
    assert fragments({(s, D, 40000, 443, 6): (10, 10 * 1514), **frag}) == 40


def test_orphan_fragments_and_other_sources_budgets_still_count():
    """Fragments with no first fragment of their source count; another source's budget is not
    theirs."""
    s, t = "198.51.100.44", "198.51.100.45"
    assert fragments({(s, D, 0, 0, 17): (30, 30 * 1514)}) == 30
    assert fragments({(t, D, 45000, 5201, 17): (25, 25 * 1514), (s, D, 0, 0, 17): (30, 30 * 1514)}) == 30


STREAMS = {  # a one-way stream of 4,000-byte datagrams: 3 packets each, nobody answers
    "iperf3 -u -l 4000 -b 800k (25 datagrams/s)": lambda: V.udp_stream_fragmented(T0, 30),
    "video over UDP, 600 datagrams/s (1,800 packets a window)":
        lambda: V.udp_stream_fragmented(T0, 30, per_s=600),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_one_way_fragmented_stream_loses_nothing(detector, name):
    pk = STREAMS[name]()
    assert sum(p.sport == 0 for p in pk) >= 50 * 30  # on 138c52d: `fragments` 50+ a window
    res = replay(pk, detector)
    assert [sg.reason for w in res.windows for sg in w.suggestions] == []
    assert int(res.dropped.sum()) == 0


ATTACKS = {  # name: (packets, the attacker's, the reason's measure, latest first block (s))
    "F5: 5 sources' fragments beside 10 answered small queries a second each":
        (lambda: V.fragments_beside_queries(T0, 30), lambda p: p.src != D, "non-first fragments", 3.0),
    "DNS amplification in IP fragments, 300 reflectors":
        (lambda: G.fragmented_amplification(T0, 30), lambda p: True, "non-first fragments", 3.0),
    "DNS amplification in IP fragments, 5 reflectors":
        (lambda: V.udp_flood_fragments_few(T0, 30), lambda p: True, "non-first fragments", 3.0),
    # 1,000 datagrams of 4,000 bytes a second (3,000 packets): judged like an unfragmented flood
    "one source's fragmented UDP flood, 3,000 packets a second":
        (lambda: V.udp_stream_fragmented(T0, 30, per_s=1000), lambda p: True, "nobody answered", 3.0),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_fragment_attack_is_blocked(detector, name):
    make, mine, measure, by_s = ATTACKS[name]
    pk = make()
    res = replay(pk, detector)
    reasons = [sg.reason for w in res.windows for sg in w.suggestions]
    assert reasons and measure in reasons[0], reasons[:1]
    t = first_block_s(pk, res.dropped)
    assert t is not None and t <= by_s, t
    sel = np.array([mine(p) for p in pk])
    assert res.dropped[sel].mean() >= 0.90, f"{name}: {res.dropped[sel].mean():.3f} dropped"


def test_one_first_fragment_buys_44_when_answered_and_none_when_not():
    """A resolver's answer comes one datagram per 5-tuple: answered (D asked), its one first
    fragment buys 44. The same flow unanswered is a spoofed address's one datagram (review 13,
    F1: a random-source fragmented flood paid for its own fragments): it buys nothing."""
    s = "198.51.100.44"
    answer = {(s, D, 53, 30000, 17): (1, 1514), (s, D, 0, 0, 17): (45, 45 * 1514)}
    assert fragments(answer, sent=((D, s, 30000, 53, 17),)) == 1
    one_way = {(s, D, 40000, 30000, 17): (1, 1514), (s, D, 0, 0, 17): (45, 45 * 1514)}
    assert fragments(one_way) == 45
