"""scoring.score_batch scores a big tick's rows in blocks (fresh 50 MB temporaries per call cost
more than the model here: docs/benchmarks.md, issue 17): the scores are the one call's, to the
bit, in window order."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from services.detection.features import FEATURE_NAMES
from services.scorer import scoring


def test_a_batch_scored_in_blocks_gets_the_one_call_scores_to_the_bit(detector, monkeypatch):
    rng = np.random.default_rng(17)
    windows = [SimpleNamespace(matrix=rng.integers(0, 50, (n, len(FEATURE_NAMES))).astype(float)
                               * rng.random((n, len(FEATURE_NAMES))))
               for n in (2500, 1, 6000, 0, 3400)]
    X = np.concatenate([w.matrix for w in windows])
    whole = detector.score_rows(X)
    calls = []
    real = detector.score_rows
    monkeypatch.setattr(detector, "score_rows", lambda rows: calls.append(len(rows)) or real(rows))
    monkeypatch.setattr(scoring, "SCORE_BLOCK_ROWS", 4000)
    got = scoring.score_batch(detector, windows)
    assert calls == [3967, 3967, 3967]  # 11,901 rows in 3 blocks: none under FLAT_MAX_ROWS
    assert [len(s) for s in got] == [2500, 1, 6000, 0, 3400]
    assert np.concatenate(got).tobytes() == whole.tobytes()
    calls.clear()
    monkeypatch.setattr(scoring, "SCORE_BLOCK_ROWS", 12000)  # one block: one call, as before
    assert np.concatenate(scoring.score_batch(detector, windows)).tobytes() == whole.tobytes()
    assert calls == [11901]
