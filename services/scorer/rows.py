"""Stage 2's model rows as one 2-D array per window instead of a list per flow. Pure: no Kafka,
no faust.

`flow_feature_matrix` gives features.flow_features of many flows at once from their state
columns; `window_matrix` puts a window's rows together (flow features, the source features
stage 1 shipped, the source's and the destination's features) by gathering per-source and
per-destination rows with index arrays. Both equal the per-flow functions to the bit
(tests/unit/test_scorer_rows.py): where numpy's float arithmetic could round differently from
Python's (int / int above 2**53, log1p), the Python value is used.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from services.detection.features import SEED_FEATURES
from services.records.packet import (PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH,
                                     TCP_RST, TCP_SYN, TCP_URG)

_EXACT = 2**53  # integers below convert to float64 exactly: numpy's quotient is Python's
_FLAGS = (TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG)


def _u64(values: Sequence[int]) -> np.ndarray:
    return np.fromiter(values, dtype=np.uint64, count=len(values))


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
    pr = np.fromiter(proto, dtype=np.int64, count=n)
    fl = np.fromiter(flags, dtype=np.int64, count=n)
    sp = np.fromiter(sport, dtype=np.int64, count=n)
    dp = np.fromiter(dport, dtype=np.int64, count=n)
    tcp = pr == PROTO_TCP
    fl = np.where(tcp, fl, 0)
    out[:, 0] = d
    out[:, 1] = pf
    out[:, 2] = bf
    out[:, 3] = bf / np.maximum(pf, 1.0)
    big = (p >= _EXACT) | (b >= _EXACT)
    if big.any():  # Python divides the exact integers: one rounding, not three
        for i in np.flatnonzero(big).tolist():
            out[i, 3] = nbytes[i] / max(packets[i], 1)
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
