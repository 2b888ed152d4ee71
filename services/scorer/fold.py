"""Stage 1's fold of one packet record into per-flow window state, vectorised. Pure: numpy only.

`fold_columns` groups a decoded record's events by (window, 5-tuple): window starts from the
timestamps with numpy, a group id per event from one dict pass over the 5-tuples (C loops: the id
is the position of the key's first event), one stable sort by id, then per group
`np.add.reduceat` for packets, bytes and SYN-without-ACK packets, `bitwise_or.reduceat` for TCP
flags and `minimum`/`maximum` for the first and last timestamps. `merge_folded` adds the groups
to a partition's windows (`windows.SourcePartition.windows`: window start -> 5-tuple -> flow
state). No Python bytecode runs per event (zip, map and dict methods loop in C); per group, a
flow the window already holds is updated in Python.

The result is the per-event fold's to the bit (tests/unit/test_scorer_fold.py checks it against
the reference, tests/support/fold_reference.py, on random traffic): the same windows, flows and
flow states (a flow's node is that of its first event in record order), the same insertion order
of windows and flows, the same counts of late and future events. Sums that could pass 2**64 in a
record (hostile lengths times sample rates) are summed as Python ints instead, and every
counter of a flow state saturates at COUNTER_MAX: a flow chunk carries unsigned 64-bit counters,
and a hostile record must not stop a window from closing (msgpack cannot pack 2**64).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import compress, count
from operator import is_not, itemgetter

import numpy as np

from services.records.packet import PROTO_TCP
from services.wire.codec import PacketColumns

_U64 = np.uint64
_TCP_SYN_ACK, _TCP_SYN = 0x12, 0x02
COUNTER_MAX = 2**64 - 1  # packets, bytes and SYN-without-ACK of a flow state saturate here


@dataclass(slots=True)
class FoldedRecord:
    """One record's accepted events grouped by (window, flow), groups in the order of their
    first event. Per group: `windows` (window start, ns), `keys` (src, dst, sport, dport,
    proto), `first`/`last` (event time, ns), `packets` and `bytes` (sample-rate weighted),
    `flags` (OR of TCP flags), `syn` (SYN-without-ACK packets, weighted), `node` (capture node
    of its first event). `accepted`, `late` (events of windows up to `closed`), `future`
    (node -> events past the limit), `max_ts` / `newest` (newest accepted event time / window
    start; -1 if none)."""
    windows: list[int]
    keys: list[tuple]
    first: list[int]
    last: list[int]
    packets: list[int]
    bytes: list[int]
    flags: list[int]
    syn: list[int]
    node: list[str]
    accepted: int = 0
    late: int = 0
    future: dict[str, int] | None = None
    max_ts: int = -1
    newest: int = -1


def _pick(values: list, idx: np.ndarray) -> list:
    """values[i] for i in idx, as a list (operator.itemgetter: one C call)."""
    if idx.size == 1:
        return [values[int(idx[0])]]
    return list(itemgetter(*idx.tolist())(values))


def _column(c: PacketColumns, attr: str, dtype) -> np.ndarray:
    """Integer column `attr` of `c` as an array of `dtype` (no per-element Python when the
    decoder kept the wire arrays)."""
    if c.arrays is None:
        return np.array(getattr(c, attr), dtype=dtype)
    raw = c.arrays[attr]
    return np.frombuffer(raw, dtype=raw.typecode).astype(dtype)


def _accepted(c: PacketColumns, ts: np.ndarray, width: int, closed: int,
              limit: int) -> tuple[np.ndarray | None, np.ndarray | int, int, dict[str, int]]:
    """(indices of the accepted events, None for all; their window starts, an int when the
    record lies in one window; late events; future events per node). Future: stamped past
    `limit`; late: of a window <= `closed`. Elementwise work only where a record needs it."""
    lo, hi = int(ts.min()), int(ts.max())
    future: dict[str, int] = {}
    keep = None
    if hi > limit:
        fut = ts > _U64(limit) if limit >= 0 else np.ones(ts.size, bool)
        for i in np.flatnonzero(fut).tolist():
            future[c.node[i]] = future.get(c.node[i], 0) + 1
        keep = ~fut
    first_ws = lo - lo % width
    ws = first_ws if hi < first_ws + width else ts - ts % _U64(width)
    late = 0
    if first_ws <= closed:
        old = np.full(ts.size, True) if type(ws) is int else ws <= _U64(closed)
        if keep is not None:
            old &= keep
        late = int(np.count_nonzero(old))
        keep = ~old if keep is None else keep & ~old
    if keep is None:
        return None, ws, late, future
    idx = np.flatnonzero(keep)
    return idx, (ws if type(ws) is int else ws[idx]), late, future


def fold_columns(c: PacketColumns, width: int, closed: int, limit: int) -> FoldedRecord:
    """Group record `c`'s events by (window of `width` ns, 5-tuple). Events stamped past
    `limit` (ns) count in `future` per node, those of windows up to `closed` (a window start,
    -1: none) in `late`; neither is grouped."""
    ts = _column(c, "ts_ns", _U64)
    idx, ws, late, future = _accepted(c, ts, width, closed, limit)
    out = FoldedRecord([], [], [], [], [], [], [], [], [], 0, late, future)
    if idx is not None and idx.size == 0:
        return out

    def accepted(a: np.ndarray) -> np.ndarray:
        return a if idx is None else a[idx]

    keys = zip(c.src, c.dst, c.sport, c.dport, c.proto)
    if idx is not None:
        keep = np.zeros(ts.size, bool)
        keep[idx] = True
        keys = compress(keys, keep.tolist())
    if type(ws) is not int:
        keys = zip(keys, ws.tolist())
    # Group ids by one dict pass (C loops): each key's id is the position of its first event,
    # so sorting by id puts the groups in first-event order and the dict lists them so.
    first_of: dict = {}
    gid = np.fromiter(map(first_of.setdefault, keys, count()), dtype=np.int64,
                      count=ts.size if idx is None else idx.size)
    order = np.argsort(gid, kind="stable")
    sorted_gid = gid[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_gid[1:] != sorted_gid[:-1])))

    def reduce(ufunc, values, *more):  # `more`: further ufuncs over the same gathered values
        values = values[order]
        return [u.reduceat(values, starts).tolist() for u in (ufunc, *more)]

    ts = accepted(ts)
    n = ts.size
    proto, flags = accepted(_column(c, "proto", np.uint8)), accepted(_column(c, "tcp_flags", np.uint8))
    weight = accepted(_column(c, "sample_rate", _U64))
    weight[weight == 0] = 1
    nbytes = accepted(_column(c, "length", _U64)) * weight  # each < 2**32: the product fits
    if int(nbytes.max()) * n >= 2**64:                       # the sums might not: Python ints
        nbytes = nbytes.astype(object)
    syn = np.where((proto == PROTO_TCP) & (flags & _TCP_SYN_ACK == _TCP_SYN), weight, _U64(0))
    if type(ws) is int:
        out.keys, out.windows = list(first_of), [ws] * len(first_of)
    else:
        out.keys, out.windows = [k for k, _ in first_of], [w for _, w in first_of]
    out.first, out.last = reduce(np.minimum, ts, np.maximum)
    (out.packets,), (out.bytes,) = reduce(np.add, weight), reduce(np.add, nbytes)
    if nbytes.dtype == object:
        out.bytes = [min(b, COUNTER_MAX) for b in out.bytes]
    (out.flags,), (out.syn,) = reduce(np.bitwise_or, flags), reduce(np.add, syn)
    if c.node.count(c.node[0]) == len(c.node):  # the usual record: one capture node
        out.node = [c.node[0]] * len(first_of)
    else:
        firsts = np.fromiter(first_of.values(), np.int64, len(first_of))
        out.node = _pick(c.node, firsts if idx is None else idx[firsts])
    out.accepted, out.max_ts = n, int(ts.max())
    out.newest = ws if type(ws) is int else int(ws.max())
    return out


def merge_folded(windows: dict[int, dict[tuple, list]], f: FoldedRecord) -> None:
    """Add record `f`'s groups to `windows` (window start -> 5-tuple -> flow state
    [first_ns, last_ns, packets, bytes, flags, syn_noack, node]); new windows and new flows
    enter in the order of their first event."""
    # flow states as lists straight from zip (its tuple is reused: none made per group)
    states = map(list, zip(f.first, f.last, f.packets, f.bytes, f.flags, f.syn, f.node))
    if not f.keys:
        return
    if f.windows.count(f.windows[0]) == len(f.windows):  # the usual record: one window
        runs = [(f.windows[0], f.keys, list(states))]
    else:
        per: dict[int, tuple[list, list]] = {}
        for w, k, st in zip(f.windows, f.keys, states):
            run = per.get(w)
            if run is None:
                run = per[w] = ([], [])
            run[0].append(k)
            run[1].append(st)
        runs = [(w, ks, sts) for w, (ks, sts) in per.items()]
    for w, keys, new in runs:
        flows = windows.get(w)
        if flows is None:
            windows[w] = dict(zip(keys, new))
            continue
        # setdefault inserts the flows not held yet (in order) and returns the held ones
        held = list(map(flows.setdefault, keys, new))
        for st, add in compress(zip(held, new), map(is_not, held, new)):
            if add[0] < st[0]:
                st[0] = add[0]
            if add[1] > st[1]:
                st[1] = add[1]
            st[2] += add[2]
            st[3] += add[3]
            st[4] |= add[4]
            st[5] += add[5]
            if st[3] > COUNTER_MAX or st[2] > COUNTER_MAX:  # hostile records only
                st[2], st[3], st[5] = min(st[2], COUNTER_MAX), min(st[3], COUNTER_MAX), \
                    min(st[5], COUNTER_MAX)
