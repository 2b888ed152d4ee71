"""Stage 2's window evidence from flow columns: evidence.assess's marks and measures computed
with numpy (bit operations per flow, group-bys with np.unique / np.add.at per source and
destination) instead of a Python call per flow. Pure: no Kafka, no faust.

Equal to evidence.assess to the bit and to the type (tests/unit/test_scorer_evidence_columns.py):
the lookups that hash (`Answers.answered`, `solicited`) run in Python, but only for the flows
that can match (a destination that sent something; a UDP flow from a reflector port), and a
source's probe_other is weighted with Python's arithmetic.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from services.detection.evidence import (_BARE, ANSWERED, DHCP, FRAGMENT, GRACE_NS, GROUP,
                                         FIRST_FRAGMENT_BYTES, FRAGMENTS_PER_DATAGRAM,
                                         HALF_OPEN, INITIATED,
                                         ONE_WAY, ONE_WAY_PORTS, ONE_WAY_VOLUME, PROBE,
                                         REFLECTED, RST_ONLY,
                                         SOLICITED, SOLICITED_PACKETS, SOLICITED_SOURCES,
                                         SOLICITED_VOLUME, SYNACK, UNANSWERED,
                                         UNANSWERED_FIRST_MIN, Answers,
                                         ProbeFates, WindowEvidence, hold_tallied, is_group,
                                         probe_groups, probe_tally)
from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN

from .rows import REFLECTOR_ARRAY, _i64, _ints, _sum_slow, _total_below, _u64

_ONE_WAY = np.array(sorted(ONE_WAY_PORTS), dtype=np.int64)
# destination measures from source sets, DST_MEASURES order: half-open, SYN-ACK, RST, reflector
_DST_SETS = (HALF_OPEN, SYNACK, RST_ONLY, REFLECTED)


def assess_columns(keys: list[tuple], packets: Sequence[int], nbytes: Sequence[int],
                   flags: Sequence[int], syn: Sequence[int], last: Sequence[int],
                   answers: Answers, window_end_ns: int, src_own: Mapping[str, list],
                   fates: ProbeFates | None = None, ws: int = 0) -> WindowEvidence:
    """evidence.assess of distinct flows `keys` (5-tuples) whose states are given as columns
    (arrays or sequences of integers): packets, bytes, flags, SYN-without-ACK packets and last
    packet time (ns); `fates` and `ws` as there (the tally is taken of the flows that can carry
    a probe fate only)."""
    n = len(keys)
    answers.note_requests(keys)
    if not n:
        return WindowEvidence({}, {}, {})
    sport, dport, proto = (np.fromiter((k[i] for k in keys), dtype=np.int64, count=n)
                           for i in (2, 3, 4))
    d_at: dict[str, int] = {}
    d_of = np.fromiter((d_at.setdefault(k[1], len(d_at)) for k in keys), dtype=np.intp, count=n)
    s_at: dict[str, int] = {}
    s_of = np.fromiter((s_at.setdefault(k[0], len(s_at)) for k in keys), dtype=np.intp, count=n)
    marks = _marks(keys, d_at, d_of, s_of, len(s_at), sport, dport, proto, _u64(packets),
                   _i64(flags), _u64(syn), _u64(last), answers, window_end_ns)
    by_key = dict(zip(keys, marks.tolist()))
    # evidence.known_probe of every flow
    known = (marks & PROBE != 0) & (marks & (ANSWERED | UNANSWERED) != 0) & (proto != PROTO_TCP)
    src = _src(s_at, s_of, known, packets, marks, src_own)
    tally = probe_tally([keys[i] for i in np.flatnonzero(known).tolist()], by_key, src_own)
    held = {}
    if fates is not None:
        held = hold_tallied(tally, probe_groups(tally, src_own), src, fates, ws)
    return WindowEvidence(by_key, src, _dst(d_at, d_of, s_of, len(s_at), packets, nbytes, marks,
                                            proto == PROTO_UDP), held,
                          tally)


def _marks(keys, d_at, d_of, s_of, n_src, sport, dport, proto, packets, flags, syn, last,
           answers, window_end_ns) -> np.ndarray:
    """evidence.flow_marks of every flow, as an int64 array."""
    n = len(keys)
    group = np.array([is_group(d) for d in d_at], dtype=bool)[d_of]
    sent = np.array([d in answers.addresses for d in d_at], dtype=bool)[d_of]
    answered = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(sent).tolist():
        answered[i] = answers.answered(keys[i])
    udp = proto == PROTO_UDP
    reflector = udp & np.isin(sport, REFLECTOR_ARRAY)
    sol = np.zeros(n, dtype=bool)  # a reply to a request D sent (evidence.flow_marks)
    for i in np.flatnonzero(reflector & ~answered & (packets <= SOLICITED_PACKETS)).tolist():
        sol[i] = answers.solicited(keys[i])
    if sol.any():  # evidence.crowded
        g = len(d_at)
        busy = np.array([n > SOLICITED_SOURCES or v > SOLICITED_VOLUME for n, v in
                         zip(_distinct(d_of, s_of, n_src, sol, g), _sums(d_of, packets, sol, g))],
                        dtype=bool)
        sol &= ~busy[d_of]
    answered |= sol
    limit = window_end_ns - GRACE_NS
    done = last <= np.uint64(limit) if limit >= 0 else np.zeros(n, dtype=bool)
    m = np.where(answered, ANSWERED, np.where(group, GROUP, np.where(done, UNANSWERED, 0)))
    m |= np.where(udp & (m & UNANSWERED != 0) & np.isin(dport, _ONE_WAY), ONE_WAY, 0)
    m |= np.where((packets <= 2) & ~group, PROBE, 0)
    tcp = proto == PROTO_TCP
    initiated = tcp & (syn != 0)
    m |= np.where(initiated, INITIATED, 0)
    m |= np.where(initiated & (flags & TCP_ACK == 0) & done, HALF_OPEN, 0)
    quiet = tcp & ~initiated & ~answered
    synack = tcp & ~initiated & (flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK) & (flags & _BARE == 0)
    reset = np.zeros(n, dtype=bool)  # answered by a refusal alone (evidence.flow_marks)
    for i in np.flatnonzero(synack & answered).tolist():
        reset[i] = not answers.answered(keys[i], refusals=False)
    m |= np.where(synack & (~answered | reset), SYNACK, 0)
    m |= np.where(quiet & ~synack & (flags & TCP_RST != 0) & (flags & TCP_SYN == 0), RST_ONLY, 0)
    m |= np.where(reflector & ~group & ~answered, REFLECTED, 0)
    m |= np.where(sol, SOLICITED, 0)
    m |= np.where(udp & (sport == 68) & (dport == 67), DHCP, 0)
    m |= np.where((tcp | udp) & (sport == 0) & (dport == 0), FRAGMENT, 0)
    return m


def _sums(of: np.ndarray, packets, mask: np.ndarray, groups: int) -> list[int]:
    """Per group the exact sum of `packets` where `mask` (Python integers)."""
    p = _u64(packets)
    if _total_below(p, 2**64):
        out = np.zeros(groups, dtype=np.uint64)
        np.add.at(out, of[mask], p[mask])
        return out.tolist()
    return _sum_slow(of[mask].tolist(), _ints(p[mask]), groups)


def _distinct(of: np.ndarray, members: np.ndarray, size: int, mask: np.ndarray,
              groups: int) -> list[int]:
    """Per group the number of distinct `members` (indexes below `size`) where `mask`."""
    codes = np.unique(of[mask].astype(np.int64) * size + members[mask])
    return np.bincount(codes // size, minlength=groups).tolist()


def _fragments(d_of, s_of, n_src, packets, nbytes, marks, udp, groups: int) -> list[int]:
    """Per destination its non-first fragments beyond the same source's budget there:
    FRAGMENTS_PER_DATAGRAM per first fragment its UDP flows that are not REFLECTED can hold
    (evidence.dst_measures, fragments.pair_budgets), as Python integers."""
    frag = marks & FRAGMENT != 0
    if not frag.any():
        return [0] * groups
    give = (marks & (FRAGMENT | REFLECTED) == 0) & udp
    sel = np.flatnonzero(frag | give)
    pair = d_of[sel].astype(np.int64) * n_src + s_of[sel]
    p, f = _u64(packets)[sel], frag[sel]
    # 44 per first fragment held: below 44 x 2**64 / 1200 < 2**60, exact in uint64
    held = np.minimum(p, _u64(nbytes)[sel] // np.uint64(FIRST_FRAGMENT_BYTES))
    codes, inv = np.unique(pair, return_inverse=True)
    # fragments.pair_budgets: a pair's unanswered flows buy only when they hold
    # UNANSWERED_FIRST_MIN first fragments together (summed clipped at it: no overflow)
    alone = ~f & (marks[sel] & ANSWERED == 0)
    together = np.zeros(len(codes), np.int64)
    np.add.at(together, inv[alone], np.minimum(held[alone], UNANSWERED_FIRST_MIN).astype(np.int64))
    held = np.where(alone & (together[inv] < UNANSWERED_FIRST_MIN), np.uint64(0), held)
    give_n = np.where(f, np.uint64(0), held * np.uint64(FRAGMENTS_PER_DATAGRAM))
    if _total_below(p[f], 2**64) and _total_below(give_n, 2**64):
        have, budget = np.zeros(len(codes), np.uint64), np.zeros(len(codes), np.uint64)
        np.add.at(have, inv[f], p[f])
        np.add.at(budget, inv, give_n)
        out = np.zeros(groups, dtype=np.uint64)
        np.add.at(out, codes // n_src, np.where(have > budget, have - budget, 0).astype(np.uint64))
        return out.tolist()  # each destination's count is at most the fragments' sum
    have_l, budget_l = [0] * len(codes), [0] * len(codes)
    for i, n, b, is_frag in zip(inv.tolist(), _ints(p), _ints(give_n), f.tolist()):
        if is_frag:
            have_l[i] += n
        else:
            budget_l[i] += b
    out_l = [0] * groups
    for c, h, b in zip(codes.tolist(), have_l, budget_l):
        out_l[c // n_src] += max(0, h - b)
    return out_l


def _dst(d_at, d_of, s_of, n_src, packets, nbytes, marks, udp) -> dict[str, list]:
    """evidence.dst_measures from the marks."""
    g = len(d_at)
    sets = [_distinct(d_of, s_of, n_src, marks & bit != 0, g) for bit in _DST_SETS]
    one_way = marks & ONE_WAY != 0
    loud = np.array([v > ONE_WAY_VOLUME for v in _sums(d_of, packets, one_way, g)], dtype=bool)
    unsolicited = _distinct(d_of, s_of, n_src, (marks & UNANSWERED != 0) & ~(one_way & ~loud[d_of]), g)
    frag = _fragments(d_of, s_of, n_src, packets, nbytes, marks, udp, g)
    dhcp = _sums(d_of, packets, (marks & DHCP != 0) & (marks & FRAGMENT == 0), g)
    volume = _sums(d_of, packets, marks & (ANSWERED | GROUP) == 0, g)
    return {d: [sets[0][i], sets[1][i], sets[2][i], sets[3][i], frag[i], dhcp[i],
                unsolicited[i], float(volume[i])] for d, i in d_at.items()}


def _src(s_at, s_of, known, packets, marks, own) -> dict[str, list]:
    """evidence.src_measures from the marks, the known-probe mask and the sources' stage 1
    measures `own`."""
    g = len(s_at)
    volume = _sums(s_of, packets, marks & (ANSWERED | GROUP) == 0, g)
    probes = np.bincount(s_of[known], minlength=g).tolist()
    quiet = np.bincount(s_of[known & (marks & UNANSWERED != 0)], minlength=g).tolist()
    zero = (0, 0, 0, 0)
    out = {}
    for s, i in s_at.items():
        o = own.get(s) or zero
        c0 = probes[i]
        out[s] = [o[0], o[1], o[2] * quiet[i] / c0 if c0 else 0.0, o[3], volume[i]]
    return out
