"""A slow UDP host sweep (the real hs-udpScan capture: ten one-packet probes a second) is
invisible in one window and caught over the source horizon: the scorer's own two-stage windows
with the shipped model emit a source rule for the scanner within a few windows, the replay
pipeline agrees, and the rule drops the rest of the sweep. Test half of the capture only (the
model never saw it)."""
from __future__ import annotations

import pytest

from services.offline.pcap import read_pcap
from services.offline.replay import replay
from services.records.rules import Scope
from services.scorer.scoring import VerdictPolicy, score_windows, verdicts_for
from tests.support.scorer_stages import run_stages

SCANNER = "246.237.45.150"
W = 10**9


@pytest.fixture(scope="module")
def sweep(shared_dir):
    pk = sorted(read_pcap(shared_dir / "data/pcaps/lucaderi+sgr/2022/Favilli/tests/hs-udpScan.pcap"),
                key=lambda p: p.ts_ns)
    half = pk[len(pk) // 2:]
    assert {p.src for p in half} == {SCANNER} and len(half) == 256
    return half


def test_the_scorer_blocks_the_sweeping_source_within_a_few_windows(sweep, detector):
    closed = [w for w in run_stages(sweep) if w.rows]
    first = min(w.window_ns for w in closed)
    blocked_at = None
    for w, scores in zip(closed, score_windows(detector, closed)):
        for v in verdicts_for(w, scores, threshold=detector.threshold, model_id=detector.model_id,
                              policy=VerdictPolicy()):
            if v.rule.scope is Scope.SRC_PREFIX and v.rule.src == f"{SCANNER}/32":
                blocked_at = min(blocked_at or w.window_ns, w.window_ns)
    assert blocked_at is not None, "no source rule for the scanner"
    assert (blocked_at - first) // W <= 3  # the 25 s sweep is caught in its first windows


def test_the_replay_drops_most_of_the_sweep(sweep, detector):
    res = replay(sweep, detector)
    assert res.first_rule_ns is not None
    assert res.dropped.mean() >= 0.8


def test_rows_are_built_with_the_models_own_horizon(sweep, detector):
    """A model trained with another span gets rows over that span (metadata
    `params.horizon_windows`; the scorer sizes its stage 1 horizon from the same property)."""
    import copy

    from services.detection.features import FEATURE_NAMES
    from services.offline.replay import Pipeline

    one = copy.copy(detector)
    one.meta = {**detector.meta, "params": {**detector.meta["params"], "horizon_windows": 1}}
    assert one.horizon_windows == 1 and detector.horizon_windows == 10
    col = FEATURE_NAMES.index("src_h_peers")
    peak = {d.horizon_windows: max(r[col] for w in Pipeline(d).run(sweep) for r in w.rows)
            for d in (one, detector)}
    assert peak[1] <= 11 and peak[10] >= 40  # 10 probes a second, ~2 per host
