"""The scorer's two-stage streaming windows give the same rows as the training pipeline, close
on watermark and on idle time, and tolerate replays."""
from __future__ import annotations

import numpy as np

from services.wire.codec import decode_packet_columns
from services.records.verdict import ALL_NODES
from services.scorer.scoring import VerdictPolicy, score_batch, verdicts_for
from services.scorer.dst_windows import DstPartition
from services.scorer.windows import SourcePartition
from tests.support.packet_records import encode_packets
from tests.support.scorer_stages import T0, W, Clock, run_stages
from tests.support.scorer_traffic import benign, syn_flood, udp_sweep, with_seq

SWEEPER = "10.66.0.1"
N = 4


def reference_rows(packets):
    """The replay's (and training's) rows: services.offline.replay.Pipeline."""
    from services.offline.replay import Pipeline

    return {(w.start_ns, k): r for w in Pipeline(None).run(packets) for k, r in zip(w.keys, w.rows)}


def test_streaming_rows_equal_training_rows():
    """One partition: every row equal. Several: equal but for the weight of a source's
    non-TCP probes (the share nobody answered is read from the flows each partition holds)."""
    from services.detection.features import FEATURE_NAMES

    packets = with_seq(sorted(benign(T0, 3.5, clients=15) + syn_flood(T0 + W // 2, 1.0, pps=400)
                              + udp_sweep(T0, 3.5), key=lambda p: p.ts_ns))
    want = reference_rows(packets)
    local = FEATURE_NAMES.index("src_h_probe_other")
    for n in (1, N):
        got = {(w.window_ns, k): r for w in run_stages(packets, n=n) for k, r in zip(w.keys, w.rows)}
        assert got.keys() == want.keys()
        for k in want:
            g, r = np.asarray(got[k]), np.asarray(want[k])
            if n > 1:
                g[local] = r[local]
            np.testing.assert_allclose(g, r, rtol=1e-9)
    closed = run_stages(packets)
    got = {(w.window_ns, k): r for w in closed for k, r in zip(w.keys, w.rows)}
    # the horizon carried over windows: the sweep's last window counts every host it probed
    from services.detection.features import FEATURE_NAMES
    last = max(ws for ws, k in got if k[0] == SWEEPER)
    row = next(r for (ws, k), r in got.items() if ws == last and k[0] == SWEEPER)
    assert round(row[FEATURE_NAMES.index("src_h_peers")]) == 35


def test_watermark_closes_only_passed_windows_and_counts_late_events():
    clock = Clock()
    part = SourcePartition(0, W, W // 10, clock)
    part.add(0, decode_packet_columns(encode_packets(benign(T0, 0.9, clients=3))))
    assert part.due() == []
    clock.t += 0.3  # no traffic for 0.3 s: watermark moves on with the wall clock
    assert part.due() == [] or part.watermark() >= T0 + W + W // 10
    clock.t += 1.0
    assert part.due() == [T0]
    chunks, done = part.close(T0, N)
    assert chunks and done == [0] and part.closed_upto == T0
    late = benign(T0 + W // 2, 0.1, clients=1)
    assert part.add(1, decode_packet_columns(encode_packets(late))) == 0 and part.late == len(late)


def _window_t0_closed(partition: int, clock: Clock) -> tuple[SourcePartition, list]:
    """A source partition fed 0.5 s of benign traffic from T0, its window T0 closed for one stage
    2 partition and sent: (the partition, the window's flow chunks)."""
    part = SourcePartition(partition, W, 0, clock)
    part.add(0, decode_packet_columns(encode_packets(benign(T0, 0.5, clients=2))))
    chunks, _ = part.close(T0, 1)
    part.sent(T0)
    return part, chunks


def test_resent_chunk_replaces_first_copy_and_late_chunk_is_dropped():
    clock = Clock()
    part, chunks = _window_t0_closed(0, clock)
    dst = DstPartition(0, W, 1, 5.0, clock)
    assert dst.add(chunks[0].key(), chunks[0]) and dst.add(chunks[0].key(), chunks[0])
    assert dst.due() == []
    dst.mark(0, part.progress(0))
    w = dst.close(dst.due()[0])
    assert len(w.keys) == len(chunks[0].flows)
    assert not dst.add(chunks[0].key(), chunks[0]) and dst.late == len(chunks[0].flows)


def test_stage2_waits_for_every_source_partition_then_gives_up_after_max_wait():
    clock = Clock()
    src = SourcePartition(1, W, 0, clock)
    src.add(0, decode_packet_columns(encode_packets(benign(T0, 0.5, clients=2))))
    assert src.progress(T0 + 5 * W) == T0 - W  # an open window holds progress back
    chunks, _ = src.close(T0, 1)
    src.sent(T0)
    dst = DstPartition(0, W, 3, 2.0, clock)
    dst.add(chunks[0].key(), chunks[0])
    dst.mark(1, src.progress(0))
    dst.mark(0, T0)
    assert dst.due() == []          # partition 2 has not reported
    idle = SourcePartition(2, W, 0, clock)
    dst.mark(2, idle.progress(T0 + W + 1))  # no events: the wall clock says T0 has passed
    assert dst.due() == [T0]
    dst2 = DstPartition(0, W, 3, 2.0, clock)
    dst2.add(chunks[0].key(), chunks[0])
    clock.t += 1.5
    dst2.mark(0, T0 - W)  # partition 0 is busy (repeats its mark), 1 and 2 fall silent
    clock.t += 1.0
    assert dst2.due() == []
    clock.t += 1.5
    dst2.mark(0, T0)  # 0 keeps marking: 1 and 2, silent for 4 s beside it, are not waited for
    assert dst2.due() == [T0]


def test_stage2_does_not_close_windows_because_this_worker_itself_stalled():
    """Every source silent at once means this worker was stalled (a long scoring call on a
    busy CPU), not that every owner died: nothing closes before the marks say so."""
    clock = Clock()
    _, chunks = _window_t0_closed(1, clock)
    dst = DstPartition(0, W, 3, 2.0, clock)
    dst.add(chunks[0].key(), chunks[0])
    for p in range(3):
        dst.mark(p, T0 - W)
    clock.t += 10
    assert dst.due() == []
    for p in range(3):
        dst.mark(p, T0)
    assert dst.due() == [T0]


class FakeDetector:
    threshold = 0.5
    model_id = "fake"

    def score_rows(self, X):
        from services.detection.features import FEATURE_NAMES
        return (np.asarray(X)[:, FEATURE_NAMES.index("dst_peers")] > 100).astype(float)


def test_flood_gives_one_limit_verdict_and_benign_none():
    packets = with_seq(benign(T0, 1.0, clients=10) + syn_flood(T0, 0.9, pps=500))
    closed = [w for w in run_stages(packets) if w.rows]
    scores = score_batch(FakeDetector(), closed)
    verdicts = [v for w, s in zip(closed, scores)
                for v in verdicts_for(w, s, threshold=0.5, model_id="fake", policy=VerdictPolicy())]
    assert [(v.rule.scope.value, v.rule.dst, v.rule.tcp_flags, v.node) for v in verdicts] == \
        [("dst_limit", "10.99.0.10", 2, ALL_NODES)]
    v = verdicts[0]
    assert v.rule.expires_ns - v.rule.created_ns == 600 * 10**9 and "half-open" in v.reason
    passes = [v for w, s in zip(closed, scores)
              for v in verdicts_for(w, s, threshold=0.5, model_id="fake",
                                    policy=VerdictPolicy(emit_pass=True, pass_ttl_s=5))]
    n_benign = sum(1 for w in closed for k in w.keys if k[1] != "10.99.0.10")
    assert sum(v.rule.action.value == "pass" for v in passes) == n_benign


def test_a_partition_with_unread_records_does_not_let_the_clock_vouch_for_them():
    clock = Clock()
    waiting = SourcePartition(3, W, 0, clock)
    waiting.backlog = True  # records are fetched but none folded in yet
    assert waiting.progress(T0 + 5 * W) == -1
    waiting.add(0, decode_packet_columns(encode_packets(benign(T0, 0.5, clients=2))))
    assert waiting.progress(T0 + 5 * W) == T0 - W  # now its own windows hold it back
    waiting.backlog = False
    idle = SourcePartition(4, W, 0, clock)
    assert idle.progress(T0 + 5 * W) > T0  # caught up and empty: the event clock moves it


def test_a_quiet_caught_up_partition_follows_the_event_clock_not_its_old_lag():
    clock = Clock()
    part = SourcePartition(5, W, 0, clock)
    part.add(0, decode_packet_columns(encode_packets(benign(T0, 0.5, clients=2))))
    part.close(T0, 1)
    part.sent(T0)
    # Its last record was read late; its own watermark keeps that lag (~now - T0) for good.
    far_later = T0 + 20 * W
    assert part.progress(far_later) >= far_later - 2 * W
    part.backlog = True  # unread records: only event time counts, the clock does not
    assert part.progress(far_later) < T0 + W


def test_progress_never_passes_a_window_whose_chunks_are_still_being_sent():
    # The ingest agent and the timer both close windows: while one awaits the sends of window
    # W's chunks, the other must not announce W done, or stage 2 closes W before they arrive
    # (CI saw 27-56 late flows per run on a loaded machine).
    clock = Clock()
    part = SourcePartition(1, W, 0, clock)
    part.add(0, decode_packet_columns(encode_packets(benign(T0, 2.5, clients=4))))
    part.add(1, decode_packet_columns(encode_packets(benign(T0 + 3 * W, 0.5, clients=1))))
    clock.t += 10.0
    first, second = part.due()[:2]
    assert (first, second) == (T0, T0 + W)
    chunks, _ = part.close(first, 2)
    assert chunks and part.progress(T0 + 9 * W) == first - W  # W's chunks in transit
    part.close(second, 2)
    part.sent(second)  # a later window done first: still held by the one in transit
    assert part.progress(T0 + 9 * W) == first - W
    part.sent(first)
    assert part.progress(T0 + 9 * W) == T0 + W  # now the next open window (T0 + 2W) holds it
    for ws in part.due():
        part.close(ws, 2)
        part.sent(ws)
    assert part.progress(T0 + 9 * W) >= T0 + 7 * W  # nothing open or in transit: the clock


def test_quiet_time_counts_only_up_to_the_last_fetch_response():
    # A busy worker's fetches came 0.3 s+ apart: records appended meanwhile existed unfetched,
    # and a watermark moved by the wall clock closed their window (bench: late events in 4 of 9
    # two-worker runs). Quietness is now trusted only as of the newest fetch response.
    clock = Clock()
    part = SourcePartition(2, W, 0, clock, idle_ns=0)
    part.add(0, decode_packet_columns(encode_packets(benign(T0, 0.5, clients=2))))
    start = part.watermark()
    part.polled_at = clock.t  # the response that brought the record
    clock.t += 5.0
    assert part.watermark() == start and part.due() == []  # 5 s, but no response since
    part.polled_at = clock.t - 2.0  # a response 3 s after the record: quiet for those 3 s
    assert part.watermark() == start + 3 * W
    part.polled_at = None  # not tracked: the wall clock alone
    assert part.watermark() == start + 5 * W
