"""Stage 1's vectorised fold (services/scorer/fold.py, windows.SourcePartition.add) equals the
per-event reference (tests/support/fold_reference.py) to the bit on random traffic: the same
windows, flows and flow states in the same order, the same late, future and skew counts, the
same flow chunks (flows, source aggregates, horizon and evidence features) and the same stage 2
feature rows, with windows closed mid-stream so later events arrive late."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.records.packet import Packet
from services.scorer.chunks import FlowChunk
from services.scorer.dst_windows import DstPartition
from services.scorer.fold import COUNTER_MAX
from services.scorer.windows import SourcePartition
from services.wire.codec import decode_packet_columns
from tests.support.fold_reference import ReferencePartition
from tests.support.packet_records import encode_packets
from tests.support.scorer_stages import T0, W

DST_PARTITIONS = 2
WALL = T0 + 3 * W          # the partitions' host clock when bounded ...
MAX_FUTURE = W             # ... so events past T0 + 4 W are future
V4 = ["10.0.0.1", "10.0.0.2", "192.168.1.9", "::ffff:10.0.0.1", "172.16.5.4"]
V6 = ["2001:db8::1", "2001:db8::2", "fe80::7", "::1"]
PORTS = [0, 22, 53, 80, 123, 443, 1023, 1024, 49151, 49152, 65535]
PROTOS = [6, 6, 6, 17, 17, 1, 58, 47, 132]

offsets = st.one_of(st.integers(-W, 5 * W),
                    st.sampled_from([0, 1, W - 1, W, W + 1, 2 * W - 1, 2 * W, 4 * W, 4 * W + 1]))
lengths = st.one_of(st.integers(40, 1514), st.sampled_from([0, 2**32 - 1]))
# sample rates up to 2**20: a flow's bytes stay below 2**64, which a flow chunk can carry
# (sums past it: test_sums_past_64_bits_and_times_past_63_stay_exact)
rates = st.one_of(st.integers(1, 4), st.just(2**20))  # 1-in-N, N >= 1: 0 is refused by the codec


@st.composite
def events(draw) -> Packet:
    pool = draw(st.sampled_from([V4, V6]))
    return Packet(T0 + draw(offsets), draw(st.sampled_from(pool)), draw(st.sampled_from(pool)),
                  draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS)),
                  draw(st.sampled_from(PROTOS)), draw(st.integers(0, 255)), draw(lengths),
                  0, draw(rates), draw(st.sampled_from(["a", "b", "c"])))


@st.composite
def streams(draw) -> tuple[list[list[Packet]], list[bool], int, bool]:
    """(records, close the oldest window after each, closed_upto at start, wall clock?)."""
    pkts = draw(st.lists(events(), min_size=1, max_size=300))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(pkts)), max_size=8))) | {len(pkts)})
    records = [pkts[a:b] for a, b in zip([0] + cuts, cuts) if b > a]
    closes = draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
    closed = draw(st.sampled_from([-1, T0 - W, T0, T0 + W]))
    return records, closes, closed, draw(st.booleans())


def pair(closed: int, bounded: bool) -> tuple[SourcePartition, SourcePartition]:
    kw = {"wall": (lambda: WALL), "max_future_ns": MAX_FUTURE} if bounded else {}
    parts = (ReferencePartition(0, W, 0, lambda: 0.0, **kw), SourcePartition(0, W, 0, lambda: 0.0, **kw))
    for p in parts:
        p.closed_upto = closed
    return parts


def state(p: SourcePartition) -> tuple:
    return ([(ws, list(flows.items())) for ws, flows in p.windows.items()], p.late, p.future,
            p.skew_ns, p.max_ts, list(p.records.items()))


def close_both(ref: SourcePartition, got: SourcePartition, ws: int) -> list:
    (want, want_done), (have, have_done) = ref.close(ws, DST_PARTITIONS), got.close(ws, DST_PARTITIONS)
    assert [c.encode() for c in have] == [c.encode() for c in want] and have_done == want_done
    ref.sent(ws)
    got.sent(ws)
    return have


def stage_two_rows(chunks: list) -> bytes:
    """Every stage 2 row of `chunks` (all windows closed), as float64 bytes."""
    rows = []
    for q in range(DST_PARTITIONS):
        dst = DstPartition(q, W, 1, 30.0, lambda: 0.0)
        for c in chunks:
            if c.dst_partition == q:
                dst.add(c.key(), c)
        dst.mark(0, T0 + 100 * W)
        rows += [r for ws in dst.due() for r in dst.close(ws).rows]
    return np.asarray(rows, dtype=np.float64).tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(streams())
def test_vectorised_fold_equals_the_per_event_fold(stream):
    records, closes, closed, bounded = stream
    ref, got = pair(closed, bounded)
    chunks = []
    for offset, (pkts, close) in enumerate(zip(records, closes)):
        cols = decode_packet_columns(encode_packets(pkts))
        assert got.add(offset, cols) == ref.add(offset, cols)
        assert state(got) == state(ref)
        if close and got.windows:
            chunks += close_both(ref, got, min(got.windows))
    for ws in sorted(got.windows):
        chunks += close_both(ref, got, ws)
    assert state(got) == state(ref)
    if chunks:
        want = stage_two_rows([c for c in chunks])
        assert stage_two_rows(chunks) == want and want


def test_sums_past_64_bits_saturate_and_the_window_still_closes():
    """Hostile but decodable: bytes summing past 2**64 in one record, event times near 2**64.
    The flow's bytes saturate at COUNTER_MAX (both folds), and its window closes into a chunk
    that encodes and decodes (msgpack cannot pack 2**64: the window once raised instead)."""
    big = [Packet(T0 + i, "10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 2**32 - 1, 0, 2**32 - 1, "a")
           for i in range(3)]
    late = [Packet(2**64 - 1 - i, "10.0.0.3", "10.0.0.4", 1, 2, 6, 0x02, 60, 0, 1, "a")
            for i in range(2)]
    ref, got = pair(-1, False)
    for offset, pkts in enumerate((big, late, big[:1])):
        cols = decode_packet_columns(encode_packets(pkts))
        assert got.add(offset, cols) == ref.add(offset, cols)
    assert state(got) == state(ref)
    assert got.windows[T0][("10.0.0.1", "10.0.0.2", 1, 2, 17)][3] == COUNTER_MAX
    chunks, _ = got.close(T0, 4)
    flows = [f for c in chunks for f in FlowChunk.decode(c.encode()).flows]
    assert [f[8] for f in flows if f[:2] == ["10.0.0.1", "10.0.0.2"]] == [COUNTER_MAX]
