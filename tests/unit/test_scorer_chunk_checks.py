"""A flow chunk's entries are checked a column at a time (chunks._valid_columns) before the
per-entry check (chunks.flow_entry_error) runs: the column check never accepts what the
per-entry check refuses, and accepts the entries stage 1 writes."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.detection.features import SRC_FEATURES
from services.scorer.chunks import FLOW_LEN, MAX_FEATURE, _valid_columns, flow_entry_error

pytestmark = pytest.mark.unit

ADDRESSES = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "::ffff:10.0.0.1", "10.0.0", "x", "", 7]
odd = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.integers(-2**70, 2**70),
                st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ADDRESSES),
                st.just(MAX_FEATURE), st.just(-MAX_FEATURE), st.just(10**30 + 1),
                st.just(math.nextafter(MAX_FEATURE, math.inf)), st.just(2**64), st.lists(st.integers()))


def u(bits: int):
    return st.integers(0, 2**bits - 1)


plausible = st.tuples(
    st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.sampled_from(["10.0.0.3", "10.0.0.4"]),
    u(16), u(16), u(8), u(64), u(64), u(64), u(64), u(8), u(64), st.text(max_size=3),
    *[st.one_of(st.floats(-1e29, 1e29), st.integers(-10**6, 10**6))] * len(SRC_FEATURES),
    u(64)).map(list)


@st.composite
def entries(draw) -> list:
    f = draw(plausible)
    if f[5] > f[6]:
        f[5], f[6] = f[6], f[5]
    # any field, the addresses, times, node and hash more often
    fields = st.one_of(st.integers(0, FLOW_LEN - 1), st.sampled_from([0, 1, 5, 6, 11, FLOW_LEN - 1]))
    for i in draw(st.lists(fields, max_size=2)):
        f[i] = draw(odd)
    shape = draw(st.integers(0, 9))  # now and then too short, or not a list at all
    return f if shape > 1 else f[:draw(st.integers(0, FLOW_LEN - 1))] if shape else draw(odd)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(entries(), max_size=5))
def test_the_column_check_accepts_only_what_every_entry_check_accepts(flows):
    if _valid_columns(flows) is not None:
        assert not any(flow_entry_error(f) for f in flows)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(plausible, max_size=20))
def test_plausible_entries_pass_the_column_check(flows):
    for f in flows:
        f[5], f[6] = sorted(f[5:7])
    assert _valid_columns(flows) is not None
