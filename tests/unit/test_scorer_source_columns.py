"""Stage 1's per-source bookkeeping from columns equals the per-flow calls it replaces:
rows.horizon_entries gives what features.horizon_count builds flow by flow, and the flows
windows._watch_candidates leaves out are ones evidence.SourceWatch.count would not count, and
windows._handshakes notes the completed handshakes count notes (the outage memory's)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.detection.evidence import SourceWatch
from services.detection.features import horizon_count
from services.scorer.rows import horizon_entries
import numpy as np

from services.scorer.windows import _handshakes, _watch_candidates

pytestmark = pytest.mark.unit
ADDRS = ["10.0.0.1", "10.0.0.2", "10.0.0.255", "224.0.0.5", "2001:db8::1"]

flow = st.tuples(
    st.tuples(st.sampled_from(ADDRS), st.sampled_from(ADDRS), st.sampled_from([0, 22, 80, 5000]),
              st.sampled_from([0, 22, 53, 80, 3389]), st.sampled_from([1, 6, 17])),
    st.tuples(st.just(0), st.integers(0, 3), st.one_of(st.integers(1, 4), st.just(2**64 - 1)),
              st.just(60), st.integers(0, 255), st.integers(0, 2), st.just("n")))


@settings(max_examples=300, deadline=None)
@given(st.lists(flow, max_size=40), st.lists(st.integers(0, 2047), min_size=40, max_size=40))
def test_horizon_entries_equal_counting_flow_by_flow(flows, positions):
    want: dict = {}
    for (key, s), pos in zip(flows, positions):
        horizon_count(want, key[0], s[2], pos)
    got = horizon_entries([k[0] for k, _ in flows], [s[2] for _, s in flows],
                          positions[:len(flows)])
    assert list(got.items()) == list(want.items())


@settings(max_examples=300, deadline=None)
@given(st.lists(flow, max_size=40), st.integers(-1, 3))
def test_the_watch_counts_the_same_from_its_candidates_only(flows, settle_by):
    flows = dict(flows)
    keys, states = list(flows), list(flows.values())
    want: dict = {}
    got: dict = {}
    want_shakes: dict = {}  # completed handshakes (the outage memory) too
    got_shakes: dict = {}
    for key, s in flows.items():
        SourceWatch.count(want, key, s[2], s[4], s[5], s[1] <= settle_by, want_shakes)
    if keys:
        for i in _watch_candidates(list(zip(*keys)), list(zip(*states)), settle_by).tolist():
            s = states[i]
            SourceWatch.count(got, keys[i], s[2], s[4], s[5], s[1] <= settle_by)
        got_shakes = _handshakes(keys, np.array([k[4] for k in keys]),
                                 np.array([s[4] for s in states]), np.array([s[5] for s in states]))
    assert list(got.items()) == list(want.items())
    assert list(got_shakes.items()) == list(want_shakes.items())
