"""A flow chunk is written as columns (version 4, services/scorer/flowtable.py) and version-3
records (flows as entries) still decode: both give the same flows, sent hashes and senders, and
the columns refuse what the entry checks refuse."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import DecodeError
from services.detection.features import SRC_FEATURES
from services.scorer.chunks import ENTRIES_VERSION, FLOWS_VERSION, FlowChunk

pytestmark = pytest.mark.unit
T0 = 1_700_000_000 * 10**9

u64 = st.integers(0, 2**64 - 1)
addr = st.sampled_from(["10.0.0.1", "10.0.0.2", "192.0.2.7", "2001:db8::1", "2001:db8::2"])
number = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e29, 1e29, allow_nan=False))


@st.composite
def entries(draw) -> list[list]:
    out = []
    for _ in range(draw(st.integers(0, 30))):
        src = draw(addr)
        dst = draw(addr.filter(lambda a: (":" in a) == (":" in src)))
        t = sorted([draw(u64), draw(u64)])
        out.append([src, dst, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)),
                    draw(st.sampled_from([1, 6, 17, 58])), *t, draw(u64), draw(u64),
                    draw(st.integers(0, 255)), draw(u64), draw(st.sampled_from(["a", "b", ""])),
                    *[draw(number) for _ in SRC_FEATURES], draw(u64)])
    return out


@settings(max_examples=200, deadline=None)
@given(entries(), st.lists(st.tuples(u64, u64).map(list), max_size=5),
       st.lists(addr, max_size=3))
def test_columns_and_entries_carry_the_same_flows(flows, sent, senders):
    chunk = FlowChunk(T0, 1, 2, 3, flows, sent, senders)
    v3 = msgpack.packb({"v": ENTRIES_VERSION, "t": "flows", "ws": T0, "sp": 1, "dp": 2, "i": 3,
                        "f": flows, "s": sent, "a": senders}, use_bin_type=True)
    for got in (FlowChunk.decode(chunk.encode()), FlowChunk.decode(v3)):
        assert got.flows == flows and got.sent == sent and got.senders == senders
        assert [type(x) for f in got.flows for x in f] == [type(x) for f in flows for x in f]
        assert got.key() == chunk.key() and len(got) == len(flows)
    assert msgpack.unpackb(chunk.encode())["v"] == FLOWS_VERSION


def _record(**change) -> bytes:
    f = ["10.0.0.1", "10.0.0.2", 1, 2, 6, T0, T0, 3, 60, 2, 0, "node-a",
         *[0.0] * len(SRC_FEATURES), 7]
    rec = msgpack.unpackb(FlowChunk(T0, 0, 0, 0, [f], [[7, 0]], ["10.0.0.1"]).encode())
    rec.update(change)
    return msgpack.packb(rec, use_bin_type=True)


@pytest.mark.parametrize("change, reason", [
    ({"ad": ["10.0.0.1", "2001:db8::2"]}, "different IP families"),
    ({"ad": ["10.0.0.1", "10.0.0.300"]}, "is not one"),
    ({"ad": ["10.0.0.1"]}, "index past its table"),
    ({"nd": [5]}, "node is not a string"),
    ({"fe": [[float("nan")] * len(SRC_FEATURES)]}, "not a finite number"),
    ({"fe": [[1e31] * len(SRC_FEATURES)]}, "not a finite number"),
    ({"fe": [["x"] * len(SRC_FEATURES)]}, "not a number"),
    ({"fe": [[0.0]]}, "feature row"),
    ({"r": b"\0" * 5}, "whole flow rows"),
    ({"sh": b"\0" * 3}, "sent columns"),
    ({"a": ["nope"]}, "sender"),
])
def test_a_bad_columnar_chunk_is_refused_naming_the_problem(change, reason):
    assert FlowChunk.decode(_record())  # the unchanged record decodes
    with pytest.raises(DecodeError, match=reason):
        FlowChunk.decode(_record(**change))


def test_first_after_last_is_refused_in_the_rows():
    rec = msgpack.unpackb(_record())
    chunk = FlowChunk.decode(_record())
    rows = chunk.table.rows.copy()
    rows["first"] = rows["last"] + 1
    rec["r"] = rows.tobytes()
    with pytest.raises(DecodeError, match="first_ns after last_ns"):
        FlowChunk.decode(msgpack.packb(rec, use_bin_type=True))


def test_a_version_3_entry_longer_than_a_flow_entry_reads_its_first_fields_only():
    """Version 3 checked and read an entry's first FLOW_LEN fields; a longer one still does."""
    f = ["10.0.0.1", "10.0.0.2", 1, 2, 6, T0, T0, 3, 60, 2, 0, "node-a",
         *[1.0] * len(SRC_FEATURES), 7]
    def v3(entry):
        return msgpack.packb({"v": ENTRIES_VERSION, "t": "flows", "ws": T0, "sp": 0, "dp": 0,
                              "i": 0, "f": [entry], "s": [], "a": []}, use_bin_type=True)
    assert FlowChunk.decode(v3([*f, "extra", 99])).flows == FlowChunk.decode(v3(f)).flows == [f]
