"""Stage 2's model rows as one 2-D array per window instead of a list per flow. Pure: no Kafka,
no faust.

`flow_feature_matrix` gives features.flow_features of many flows at once from their state
columns; `agg_rows` the aggregate features of the sources (stage 1) or destinations (stage 2)
of many flows (features.agg_features of the aggregates built flow by flow, the distinct counts
being the number of distinct sketch positions per address, found with np.unique instead of
three 64-word sketches per address); `window_matrix` puts a window's rows together (flow features, the source features
stage 1 shipped, the source's and the destination's features) by gathering per-source and
per-destination rows with index arrays. Both equal the per-flow functions to the bit
(tests/unit/test_scorer_rows.py): where numpy's float arithmetic could round differently from
Python's (int / int above 2**53, log1p), the Python value is used.
"""
from __future__ import annotations

import math
from itertools import repeat
from typing import Sequence

import numpy as np

from services.detection.evidence import REFLECTOR_PORTS
from services.detection.features import (SEED_FEATURES, SKETCH_BITS, _cached_pos, _linear_count,
                                         agg_values)
from services.records.packet import (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH,
                                     TCP_RST, TCP_SYN, TCP_URG)

_EXACT = 2**53  # integers below convert to float64 exactly: numpy's quotient is Python's
# evidence.REFLECTOR_PORTS as an array, for np.isin on port columns (stage 1's sender hashes,
# stage 2's reflected answers)
REFLECTOR_ARRAY = np.array(sorted(REFLECTOR_PORTS), dtype=np.int64)
# features.sketch's linear count of every possible number of set bits, looked up
_LINEAR = [_linear_count(k) for k in range(SKETCH_BITS + 1)]
_FLAGS = (TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG)


def _u64(values: Sequence[int]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(np.uint64, copy=False)
    return np.fromiter(values, dtype=np.uint64, count=len(values))


def _i64(values: Sequence[int]) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(np.int64)
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _ints(values: Sequence[int]) -> Sequence[int]:
    """`values` as Python integers (exact arithmetic past 2**64)."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def _total_below(values: Sequence[int], limit: int) -> bool:
    """Whether the sum of `values` (non-negative integers) is below `limit`, exactly."""
    if isinstance(values, np.ndarray):
        if not values.size or int(values.max()) * values.size < limit:
            return True
        values = values.tolist()
    return sum(values) < limit


def flow_feature_matrix(first: Sequence[int], last: Sequence[int], packets: Sequence[int],
                        nbytes: Sequence[int], flags: Sequence[int], proto: Sequence[int],
                        sport: Sequence[int], dport: Sequence[int]) -> np.ndarray:
    """features.flow_features of n flows as an (n, len(SEED_FEATURES)) float64 array, from
    their state columns (integers: times in ns with first <= last, counters below 2**64,
    flags, protocol and ports). Equal to the per-flow function to the bit."""
    n = len(packets)
    out = np.empty((n, len(SEED_FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    t0, t1 = _u64(first), _u64(last)
    d = (t1 - t0).astype(np.float64) / 1e9  # first <= last: no wrap
    d[d == 0] = 0.001
    p, b = _u64(packets), _u64(nbytes)
    pf, bf = p.astype(np.float64), b.astype(np.float64)
    pr, fl, sp, dp = _i64(proto), _i64(flags), _i64(sport), _i64(dport)
    tcp = pr == PROTO_TCP
    fl = np.where(tcp, fl, 0)
    out[:, 0] = d
    out[:, 1] = pf
    out[:, 2] = bf
    out[:, 3] = bf / np.maximum(pf, 1.0)
    big = (p >= _EXACT) | (b >= _EXACT)
    if big.any():  # Python divides the exact integers: one rounding, not three
        for i in np.flatnonzero(big).tolist():
            out[i, 3] = int(nbytes[i]) / max(int(packets[i]), 1)
    out[:, 4] = pf / np.maximum(d, 1e-3)
    out[:, 5] = [math.log1p(x) for x in bf.tolist()]
    out[:, 6] = [math.log1p(x) for x in pf.tolist()]
    out[:, 7] = tcp
    out[:, 8] = pr == PROTO_UDP
    out[:, 9] = pr == PROTO_ICMP
    for j, bit in enumerate(_FLAGS, start=10):
        out[:, j] = (fl & bit) > 0
    for j, ports in ((16, sp), (19, dp)):
        out[:, j] = ports
        out[:, j + 1] = ports < 1024
        out[:, j + 2] = ports > 49151
    return out


def window_matrix(seed: np.ndarray, shipped: np.ndarray, src_of: np.ndarray,
                  src_rows: np.ndarray, dst_of: np.ndarray, dst_rows: np.ndarray) -> np.ndarray:
    """One window's model rows: per flow its `seed` row (flow_feature_matrix), its `shipped`
    source features, then row `src_of[i]` of `src_rows` and row `dst_of[i]` of `dst_rows`
    (the source's and the destination's features), side by side."""
    return np.concatenate([seed, shipped, src_rows[src_of], dst_rows[dst_of]], axis=1)


def group_index(group: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct addresses of `group` in order of first appearance, each entry's index
    among them as an intp array); C loops only (dict.fromkeys, map)."""
    names = list(dict.fromkeys(group))
    at = dict(zip(names, range(len(names))))
    return names, np.fromiter(map(at.__getitem__, group), dtype=np.intp, count=len(group))


def agg_rows(group: Sequence[str], peer: Sequence[str], packets: Sequence[int],
             nbytes: Sequence[int], syn: Sequence[int], proto: Sequence[int],
             dport: Sequence[int], flow_hash: Sequence[int]) -> tuple[dict[str, list[float]],
                                                                        list[int]]:
    """(features.agg_features of every address's aggregate, by address in order of first
    appearance; each flow's peer's sketch position) of flows given as columns: the address the
    aggregate is kept for (`group`: the source in stage 1, the destination in stage 2) and the
    peer (the other end), packets, bytes, SYN-without-ACK packets, protocol, destination port
    and hash64 of the 5-tuple; counters below 2**64, sums exact past it. An aggregate is what
    adding each flow to features.agg_new() gives (tests/support/dst_reference.agg_add_flow):
    counters summed, the flow's hash, its peer and its protocol/port in three sketches."""
    names, of = group_index(group)
    peer_pos = list(map(_cached_pos, peer))
    aggs, _, _ = agg_by_index(of, len(names), np.array(peer_pos, dtype=np.int64), packets,
                              nbytes, syn, proto, dport, flow_hash)
    return dict(zip(names, aggs)), peer_pos


def agg_by_index(of: np.ndarray, m: int, peer_pos: np.ndarray, packets: Sequence[int],
                 nbytes: Sequence[int], syn: Sequence[int], proto: Sequence[int],
                 dport: Sequence[int], flow_hash: Sequence[int]
                 ) -> tuple[list[list[float]], list[int], np.ndarray]:
    """agg_rows for flows whose address is given as an index (`of`, intp, each < `m`) and
    whose peer as its sketch position (`peer_pos`, int64): (the m aggregates' features by
    index; each address's packets summed, exact; the distinct (address, peer position) pairs
    as sorted codes address * SKETCH_BITS + position, what horizon_from reads)."""
    pr = _i64(proto)
    p = _u64(packets)
    icmp = np.where((pr == PROTO_ICMP) | (pr == PROTO_ICMPV6), p, 0)
    udp = np.where(pr == PROTO_UDP, p, 0)
    if all(_total_below(c, 2**64) for c in (packets, nbytes, syn)):  # no uint64 wrap
        sums = [_sum_by(of, col, m) for col in (p, _u64(nbytes), _u64(syn), icmp, udp)]
    else:
        sums = [_sum_slow(of.tolist(), _ints(col), m) for col in
                (packets, nbytes, syn, icmp, udp)]
    flows = _count_codes(_codes(of, _u64(flow_hash) % SKETCH_BITS), m)
    peer_codes = _codes(of, peer_pos)
    peers = _count_codes(peer_codes, m)
    ports, back = np.unique(pr * 65536 + _i64(dport), return_inverse=True)
    port_pos = np.array([_cached_pos(f"{c >> 16}/{c & 65535}") for c in ports.tolist()],
                        dtype=np.int64)
    ports = _count_codes(_codes(of, port_pos[back.reshape(-1)]), m)
    lc = _LINEAR.__getitem__
    rows = list(map(agg_values, *sums, map(max, map(lc, flows), repeat(1.0)), map(lc, peers),
                    map(lc, ports)))
    return rows, sums[0], peer_codes


def _sum_by(group: np.ndarray, values: np.ndarray, m: int) -> list[int]:
    out = np.zeros(m, dtype=np.uint64)
    np.add.at(out, group, values)
    return out.tolist()


def _sum_slow(group: list[int], values: Sequence[int], m: int) -> list[int]:
    """Per-group sums of Python integers (past 2**64 when a hostile record makes them so)."""
    out = [0] * m
    for g, v in zip(group, values):
        out[g] += v
    return out


def _codes(group: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """The distinct (group, sketch position) pairs as sorted codes group * SKETCH_BITS + pos:
    the bits each group's sketch would have set."""
    return np.unique(group.astype(np.int64) * SKETCH_BITS + pos.astype(np.int64))


def _count_codes(codes: np.ndarray, m: int) -> list[int]:
    """Distinct sketch positions per group (of m) in `codes` (_codes)."""
    return np.bincount(codes // SKETCH_BITS, minlength=m).tolist()


def horizon_entries(group: Sequence[str], packets: Sequence[int],
                    peer_pos: Sequence[int]) -> dict[str, list]:
    """What features.horizon_count gives counting flows one by one: per address of `group`
    (in order of first appearance) [its flows' packets summed (exact), the set of its peers'
    sketch positions `peer_pos`]; one dict entry and one set per address, not per flow."""
    if not len(group):
        return {}
    names, of = group_index(group)
    m = len(names)
    sums = _sum_by(of, _u64(packets), m) if _total_below(packets, 2**64) else \
        _sum_slow(of.tolist(), _ints(packets), m)
    return horizon_from(names, sums, _codes(of, np.asarray(peer_pos, dtype=np.int64)))


def horizon_from(names: list[str], packets: list[int], peer_codes: np.ndarray) -> dict[str, list]:
    """horizon_entries from what agg_by_index gives: per address of `names` [`packets`[i], the
    set of the peer positions of its codes]; C loops only."""
    ends = np.searchsorted(peer_codes // SKETCH_BITS, np.arange(1, len(names) + 1)).tolist()
    pos = (peer_codes % SKETCH_BITS).tolist()
    peers = map(set, map(pos.__getitem__, map(slice, [0, *ends[:-1]], ends)))
    return dict(zip(names, map(list, zip(packets, peers))))
