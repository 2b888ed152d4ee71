"""Stage 2's rows as one array per window (services/scorer/rows.py, dst_windows.DstPartition.close)
equal the per-flow rows (features.flow_features, tests/support/dst_reference.py) to the bit on
random flow chunks: counters up to 2**64 - 1 (where numpy's quotient and Python's could differ),
times on both sides of 2**63, every protocol and flag, re-sent flows (a key in two chunks) and
sources and destinations with one flow or many; and a window's flows hashed at once equal
hash64 of each (a tuple's text: its parts joined by "|")."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.detection.features import FEATURE_NAMES, SRC_FEATURES, flow_features, hash64, hash64_keys
from services.scorer.chunks import FlowChunk
from services.scorer.dst_windows import DstPartition
from services.scorer.rows import flow_feature_matrix
from services.scorer.windows import flow_dict
from tests.support.dst_reference import reference_rows
from tests.support.scorer_stages import T0, W

pytestmark = pytest.mark.unit

V4 = ["10.0.0.1", "10.0.0.2", "192.168.1.9", "224.0.0.251", "10.0.0.255"]
V6 = ["2001:db8::1", "2001:db8::2", "ff02::1"]
PORTS = [0, 22, 53, 67, 68, 80, 123, 443, 1023, 1024, 49151, 49152, 65535]
PROTOS = [6, 6, 17, 17, 1, 58, 47]
counters = st.one_of(st.integers(0, 3000), st.integers(0, 2**64 - 1),
                     st.sampled_from([0, 1, 2, 2**53 - 1, 2**53, 2**53 + 1, 2**64 - 1]))
times = st.one_of(st.integers(T0, T0 + W), st.integers(0, 2**64 - 1))
feature = st.one_of(st.floats(-1e30, 1e30), st.integers(-10**6, 10**6))


@st.composite
def states(draw) -> tuple:
    """(src, dst, sport, dport, proto, first, last, packets, bytes, flags, syn_noack, node)."""
    pool = draw(st.sampled_from([V4, V6]))
    t = sorted([draw(times), draw(times)])
    return (draw(st.sampled_from(pool)), draw(st.sampled_from(pool)),
            draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS)),
            draw(st.sampled_from(PROTOS)), *t, draw(counters), draw(counters),
            draw(st.integers(0, 255)), draw(counters), draw(st.sampled_from(["a", "b"])))


@st.composite
def chunks(draw) -> list[FlowChunk]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        flows = [[*s, *[draw(feature) for _ in SRC_FEATURES], draw(st.integers(0, 2**64 - 1))]
                 for s in draw(st.lists(states(), max_size=40))]
        sent = [[f[-1], draw(st.sampled_from([0, f[-1]]))] for f in flows if draw(st.booleans())]
        senders = sorted({f[0] for f in flows if draw(st.booleans())})
        out.append(FlowChunk(T0, i % 2, 0, i, flows, sent, senders))
    return out


def bits(rows) -> bytes:
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)).tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(states(), max_size=60))
def test_flow_feature_matrix_equals_flow_features(flows):
    cols = list(zip(*flows)) or [()] * 12
    got = flow_feature_matrix(cols[5], cols[6], cols[7], cols[8], cols[9], cols[4], cols[2],
                              cols[3])
    want = [flow_features(flow_dict(f[:5], list(f[5:]))) for f in flows]
    assert got.tobytes() == np.asarray(want, dtype=np.float64).reshape(len(flows), 22).tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(chunks())
def test_window_matrix_equals_the_per_flow_rows(window):
    dst = DstPartition(0, W, 2, 30.0, lambda: 0.0)
    for c in window:
        assert dst.add(c.key(), FlowChunk.decode(c.encode()))
    closed = dst.close(T0)
    keys, rows = reference_rows(window, T0 + W)
    assert closed.keys == keys
    assert closed.matrix.shape == (len(keys), len(FEATURE_NAMES))
    assert closed.matrix.tobytes() == bits(rows)


def test_quotients_past_2_53_are_python_s():
    """bytes / packets above 2**53: the float quotient of the rounded integers can differ from
    Python's exact int / int; the row has Python's."""
    p, b = 2**53 + 1, 3 * 2**53 + 5
    assert b / p != float(b) / float(p)
    got = flow_feature_matrix([T0], [T0], [p], [b], [0], [17], [1], [2])
    assert got[0, 3] == b / p


@given(st.lists(states(), max_size=20))
def test_hash64_keys_equals_hash64_of_each_key(flows):
    keys = [tuple(f[:5]) for f in flows]
    assert hash64_keys(keys) == [hash64(k) for k in keys] == [hash64("|".join(map(str, k)))
                                                              for k in keys]
    senders = [(k[0], k[2], k[3], k[4]) for k in keys]  # evidence.sent_from_key: 4 parts
    assert [hash64(k) for k in senders] == [hash64("|".join(map(str, k))) for k in senders]
