"""The default detector's estimator: an Isolation Forest that also sees "beyond anything benign".

An Isolation Forest fitted on benign rows cannot extrapolate: a value far above the largest
training value falls into the same leaf as that largest value, so a flood with 100x the benign
maximum of distinct sources scores like the busiest benign host. `RangeGuardedForest` adds, for
each feature, how far (in log1p units, relative to the feature's benign range) a row lies above
the benign maximum, and subtracts `gain` times the sum from the forest's decision_function.
Rows inside the benign range score exactly as the plain forest.

Lives in its own small module because joblib pickles it by import path.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest


class RangeGuardedForest(BaseEstimator):
    def __init__(self, n_estimators: int = 200, max_samples: int | str = 256, gain: float = 0.5,
                 random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.gain = gain
        self.random_state = random_state

    def fit(self, X, y=None):
        Z = np.log1p(np.asarray(X, dtype=np.float64))
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       random_state=self.random_state, n_jobs=1).fit(Z)
        self.hi_ = Z.max(axis=0)
        self.span_ = np.maximum(self.hi_ - Z.min(axis=0), 1.0)
        self.n_features_in_ = Z.shape[1]
        return self

    def excess(self, X) -> np.ndarray:
        Z = np.log1p(np.asarray(X, dtype=np.float64))
        return np.clip((Z - self.hi_) / self.span_, 0, None).sum(axis=1)

    def decision_function(self, X) -> np.ndarray:
        Z = np.log1p(np.asarray(X, dtype=np.float64))
        return self.forest_.decision_function(Z) - self.gain * self.excess(X)
