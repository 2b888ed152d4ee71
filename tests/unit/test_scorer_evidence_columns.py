"""Stage 2's evidence from flow columns (services/scorer/evidence_columns.py) equals
evidence.assess flow by flow: the same marks, source and destination measures, to the bit and
to the type, on random windows (answered and unanswered flows, group addresses, reflector and
DHCP ports, fragments, SYN-only flows on both sides of the grace time, counters near 2**64)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.detection.evidence import Answers, assess, sent_from_key
from services.detection.features import hash64, hash64_keys
from services.scorer.evidence_columns import assess_columns

pytestmark = pytest.mark.unit
END = 2_000_000_000
ADDRS = ["10.0.0.1", "10.0.0.2", "10.0.0.255", "224.0.0.5", "192.0.2.9", "0.0.0.0"]
PORTS = [0, 53, 67, 68, 80, 123, 1900, 40000]


@st.composite
def windows(draw):
    flows = {}
    for _ in range(draw(st.integers(0, 40))):
        key = (draw(st.sampled_from(ADDRS)), draw(st.sampled_from(ADDRS)),
               draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS)),
               draw(st.sampled_from([1, 6, 17])))
        flows[key] = {"first": 0, "last": draw(st.sampled_from([0, END - 250_000_000,
                                                                 END - 250_000_000 + 1, END])),
                      "packets": draw(st.one_of(st.integers(1, 5), st.just(2**64 - 1))),
                      "bytes": 60, "flags": draw(st.integers(0, 255)),
                      "syn": draw(st.integers(0, 2)), "proto": key[4], "sport": key[2],
                      "dport": key[3]}
    keys = list(flows)
    sent = [k for k in keys if draw(st.booleans())]
    sent += [(k[1], k[0], k[3], k[2], k[4]) for k in keys if draw(st.booleans())]
    answers = Answers({k[0] for k in sent}, hash64_keys(sent),
                      [hash64(sent_from_key(k)) for k in sent if draw(st.booleans())], hashed=True)
    own = {k[0]: [draw(st.integers(0, 3)), draw(st.integers(0, 3)),
                  draw(st.sampled_from([0, 1, 1.5, 2])), draw(st.integers(0, 3))]
           for k in keys if draw(st.booleans())}
    return keys, flows, answers, own


@settings(max_examples=300, deadline=None)
@given(windows())
def test_columns_give_the_marks_and_measures_of_the_per_flow_assessment(window):
    keys, flows, answers, own = window
    want = assess(keys, flows, answers, END, own)
    col = {f: np.array([flows[k][f] for k in keys], dtype=np.uint64)
           for f in ("packets", "flags", "syn", "last")}
    got = assess_columns(keys, col["packets"], col["flags"], col["syn"], col["last"], answers,
                         END, own)
    assert got.marks == want.marks and list(got.marks) == list(want.marks)
    assert repr(got.src) == repr(want.src) and repr(got.dst) == repr(want.dst)
