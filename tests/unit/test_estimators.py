"""The forests score through flat arrays (estimators._FlatForest), equal to scikit-learn's."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from services.detection.estimators import FLAT_MAX_ROWS, PlainForest, RangeGuardedForest


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = np.abs(rng.standard_cauchy((600, 12))) * 4
    X[:, 3] = rng.integers(0, 2, 600)   # a flag column: most splits land between 0 and 1
    Y = np.abs(rng.standard_cauchy((FLAT_MAX_ROWS + 50, 12))) * 40  # far outside, too
    return X, Y


@pytest.mark.parametrize("make", [lambda: RangeGuardedForest(60, 128, 0.5, 1),
                                  lambda: PlainForest(60, 128, 1)])
def test_flat_scoring_equals_scikit_learn(data, make):
    X, Y = data
    est = make().fit(X)
    for rows in (Y[:1], Y[:200], Y):  # the last is above FLAT_MAX_ROWS: scikit-learn itself
        Z = np.log1p(rows) if isinstance(est, RangeGuardedForest) else rows
        want = est.forest_.decision_function(Z)
        if isinstance(est, RangeGuardedForest):
            want = want - est.gain * est.excess(rows)
        np.testing.assert_allclose(est.decision_function(rows), want, rtol=0, atol=1e-12)


def test_the_flat_copy_is_not_pickled(data):
    est = RangeGuardedForest(20, 64).fit(data[0])
    before = len(pickle.dumps(est))
    est.decision_function(data[0][:3])
    assert "_flat" in est.__dict__ and len(pickle.dumps(est)) == before
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.decision_function(data[0][:5]), est.decision_function(data[0][:5]))
