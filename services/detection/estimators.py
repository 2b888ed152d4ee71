"""The default detector's estimator: an Isolation Forest that also sees "beyond anything benign".

An Isolation Forest fitted on benign rows cannot extrapolate: a value far above the largest
training value falls into the same leaf as that largest value, so a flood with 100x the benign
maximum of distinct sources scores like the busiest benign host. `RangeGuardedForest` adds, for
each feature, how far (in log1p units, relative to the feature's benign range) a row lies above
the benign maximum, and subtracts `gain` times the sum from the forest's decision_function.
Rows inside the benign range score exactly as the plain forest.

Scoring does not go through scikit-learn's `decision_function`: that walks the 200 trees one by
one through joblib and costs ~25 ms per call whatever the number of rows, and the scorer calls
it every tick. `_FlatForest` copies the fitted trees into flat arrays once (lazily, never
pickled) and walks all trees for all rows level by level with numpy; the result equals
scikit-learn's (same float32 comparison, same path-length formula; a unit test holds them
equal). ~0.2 ms for one row, 2 ms for 100; above FLAT_MAX_ROWS rows scikit-learn's own loop
is used (its fixed cost no longer dominates).

Lives in its own small module because joblib pickles it by import path.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest


FLAT_MAX_ROWS = 1500  # measured crossover (200 trees, depth 8): above it scikit-learn is faster


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): average path length of an unsuccessful search in a binary tree of n items
    (Liu et al.; scikit-learn's `_average_path_length`)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class _FlatForest:
    """The trees of a fitted IsolationForest as (trees x nodes) arrays. A leaf points to itself,
    so every row can take `depth` steps whatever leaf it reaches first."""

    def __init__(self, forest: IsolationForest, n_features: int) -> None:
        trees = [e.tree_ for e in forest.estimators_]
        width = max(t.node_count for t in trees)
        T = len(trees)
        nodes = np.arange(T * width, dtype=np.intp).reshape(T, width)
        left, right = nodes.copy(), nodes.copy()
        self.feature = np.zeros((T, width), dtype=np.intp)
        self.threshold = np.full((T, width), np.inf)
        self.value = np.zeros((T, width))
        self.depth = 0
        for i, (t, feats) in enumerate(zip(trees, forest.estimators_features_)):
            n = t.node_count
            inner = t.children_left[:n] >= 0
            base = i * width
            left[i, :n] = np.where(inner, t.children_left[:n] + base, nodes[i, :n])
            right[i, :n] = np.where(inner, t.children_right[:n] + base, nodes[i, :n])
            f = np.where(inner, t.feature[:n], 0)
            # a tree fitted on a feature subset names columns of that subset
            self.feature[i, :n] = f if len(feats) == n_features else np.asarray(feats)[f]
            self.threshold[i, :n] = np.where(inner, t.threshold[:n], np.inf)
            depths = t.compute_node_depths()[:n]
            self.value[i, :n] = depths + _average_path_length(t.n_node_samples[:n]) - 1.0
            self.depth = max(self.depth, int(t.max_depth))
        # child[2 * node + (x > threshold)]: the next node, a leaf pointing to itself
        self.child = np.stack([left.ravel(), right.ravel()], axis=1).ravel()
        self.feature, self.threshold = self.feature.ravel(), self.threshold.ravel()
        self.value = self.value.ravel()
        self.roots = nodes[:, 0][None, :]
        self.denominator = T * float(_average_path_length(np.array([forest.max_samples_]))[0])
        self.offset = float(forest.offset_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """IsolationForest.decision_function of float64 rows X (n, features)."""
        # scikit-learn's trees compare float32 inputs with float64 thresholds
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        n, width = X.shape
        flat = X.ravel()
        base = (np.arange(n, dtype=np.intp) * width)[:, None]
        nodes = np.repeat(self.roots, n, axis=0)
        for _ in range(self.depth):
            right = flat[base + self.feature[nodes]] > self.threshold[nodes]
            nodes = self.child[2 * nodes + right]
        depths = self.value[nodes].sum(axis=1)
        scores = 2.0 ** (-depths / self.denominator) if self.denominator else np.ones(n)
        return -scores - self.offset


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

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_flat", None)  # rebuilt on first use: keeps the file small and deterministic
        return state

    def excess(self, X) -> np.ndarray:
        Z = np.log1p(np.asarray(X, dtype=np.float64))
        return np.clip((Z - self.hi_) / self.span_, 0, None).sum(axis=1)

    def decision_function(self, X) -> np.ndarray:
        Z = np.log1p(np.asarray(X, dtype=np.float64))
        guard = np.clip((Z - self.hi_) / self.span_, 0, None).sum(axis=1)
        if len(Z) > FLAT_MAX_ROWS:  # scikit-learn's per-tree loop wins on big batches
            return self.forest_.decision_function(Z) - self.gain * guard
        flat = self.__dict__.get("_flat")
        if flat is None:
            flat = self._flat = _FlatForest(self.forest_, Z.shape[1])
        return flat.decision_function(Z) - self.gain * guard


class PlainForest(BaseEstimator):
    """The original tool's method: an Isolation Forest on the raw features (no log, no range guard),
    scored through `_FlatForest` like RangeGuardedForest (same numbers as scikit-learn)."""

    def __init__(self, n_estimators: int = 200, max_samples: int | str = 256,
                 random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       random_state=self.random_state, n_jobs=1).fit(X)
        self.n_features_in_ = X.shape[1]
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_flat", None)
        return state

    def decision_function(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if len(X) > FLAT_MAX_ROWS:
            return self.forest_.decision_function(X)
        flat = self.__dict__.get("_flat")
        if flat is None:
            flat = self._flat = _FlatForest(self.forest_, X.shape[1])
        return flat.decision_function(X)
