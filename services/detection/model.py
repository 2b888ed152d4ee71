"""Model files: a joblib estimator beside a JSON metadata file, verified before unpickling.

    models/xdpguard-if.joblib      the fitted scikit-learn estimator (a Pipeline)
    models/xdpguard-if.json        metadata: format, model_id, feature_names (order matters),
                                   threshold, score sign, sklearn version, sha256 of the joblib
                                   file, training data digest, training metrics, parameters

joblib is pickle, so `load_model` reads the JSON first, hashes the joblib file and refuses
(ModelError) a missing/changed file, another scikit-learn version or unknown feature names
BEFORE anything is unpickled.

Score sign: `Detector.score(X)` is the NEGATED `decision_function` of the estimator, so HIGHER
means MORE anomalous, and a row is anomalous when `score >= threshold`.
`wide_threshold` (>= threshold) gates source-prefix and destination-limit rules.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from services.common.errors import ModelError
from .bounds import EvidenceBounds
from .features import FEATURE_NAMES, HORIZON_WINDOWS
from services.common.paths import MODELS_DIR

FORMAT = "xdpguard-model/1"
DEFAULT_MODEL = MODELS_DIR / "xdpguard-if.joblib"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def meta_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def _sklearn_version() -> str:
    import sklearn
    return sklearn.__version__


@dataclass
class Detector:
    """A loaded, verified model. `score(X)` takes rows whose columns are `feature_names`;
    `score_rows(X)` takes full rows in features.FEATURE_NAMES order and selects the columns."""
    estimator: Any
    threshold: float
    feature_names: tuple[str, ...]
    model_id: str
    meta: dict = field(default_factory=dict)
    wide_threshold: float | None = None  # for source/destination rules (None: = threshold)

    def __post_init__(self) -> None:
        unknown = [n for n in self.feature_names if n not in FEATURE_NAMES]
        if unknown:
            raise ModelError(f"model uses unknown features {unknown}")
        self._cols = np.array([FEATURE_NAMES.index(n) for n in self.feature_names])

    @property
    def horizon_windows(self) -> int:
        """The source horizon (windows) the model was trained with: rows must be built alike."""
        return int((self.meta.get("params") or {}).get("horizon_windows", HORIZON_WINDOWS))

    @property
    def evidence(self) -> EvidenceBounds:
        """The evidence bounds calibrated with the model (metadata `evidence`; a model without
        them gets the floors, services.detection.bounds)."""
        b = self.__dict__.get("_evidence")
        if b is None:
            b = self._evidence = EvidenceBounds.from_dict(self.meta.get("evidence"))
        return b

    def score(self, X: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got {X.shape}")
        if len(X) == 0:
            return np.zeros(0)
        return -self.estimator.decision_function(X)

    def score_rows(self, rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0:
            return np.zeros(0)
        return self.score(rows[:, self._cols])


def save_model(estimator: Any, path: str | os.PathLike, *, threshold: float,
               feature_names: Sequence[str], wide_threshold: float | None = None,
               training: dict | None = None,
               metrics: dict | None = None, params: dict | None = None,
               evidence: dict | None = None, name: str = "xdpguard-if") -> dict:
    """Write the joblib file and its metadata JSON (atomically each); returns the metadata."""
    import joblib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    joblib.dump(estimator, tmp, compress=3)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; services running as other users read it
    os.replace(tmp, path)
    digest = sha256_file(path)
    meta = {
        "format": FORMAT,
        "model_id": f"{name}-{digest[:12]}",
        "model_file": path.name,
        "sha256": digest,
        "feature_names": list(feature_names),
        "threshold": float(threshold),
        "wide_threshold": None if wide_threshold is None else float(wide_threshold),
        "score": "higher is more anomalous: -decision_function; anomalous when score >= threshold",
        "sklearn_version": _sklearn_version(),
        "training": training or {},
        "metrics": metrics or {},
        "params": params or {},
        "evidence": evidence or {},
    }
    mp = meta_path(path)
    tmp_meta = mp.with_suffix(".json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_meta, mp)
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    mp = meta_path(path)
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise ModelError(f"model metadata {mp} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"model metadata {mp} is unreadable: {exc}") from None
    for key in ("format", "model_id", "sha256", "feature_names", "threshold", "sklearn_version"):
        if key not in meta:
            raise ModelError(f"model metadata {mp} lacks {key!r}")
    if meta["format"] != FORMAT:
        raise ModelError(f"model metadata {mp} has format {meta['format']!r}, expected {FORMAT!r}")
    return meta


def load_model(path: str | os.PathLike | None = None, *, allow_sklearn_mismatch: bool = False
               ) -> Detector:
    """Verify `path` (the .joblib, or its .json) against its metadata, then unpickle it."""
    path = Path(path) if path else DEFAULT_MODEL
    if path.suffix == ".json":
        path = path.with_suffix(".joblib")
    meta = read_meta(path)
    if not path.is_file():
        raise ModelError(f"model file {path} is missing")
    digest = sha256_file(path)
    if digest != meta["sha256"]:
        raise ModelError(f"model file {path} has sha256 {digest[:16]}…, its metadata says "
                         f"{meta['sha256'][:16]}…: refusing to load a changed file")
    have = _sklearn_version()
    if have != meta["sklearn_version"] and not allow_sklearn_mismatch:
        raise ModelError(f"model {path.name} was written by scikit-learn {meta['sklearn_version']}, "
                         f"this is {have}: retrain it (xdpguard train)")
    import joblib

    try:
        estimator = joblib.load(path)
    except (ModuleNotFoundError, AttributeError) as exc:
        # an estimator pickled by an older xdpguard names classes at their old import path
        # (e.g. services.common.estimators before the package split)
        missing = getattr(exc, "name", None) or str(exc)
        raise ModelError(f"model file {path} was saved by an older xdpguard (it names {missing!r}, "
                         "which this version does not have): retrain it (xdpguard train)") from None
    n_in = getattr(estimator, "n_features_in_", len(meta["feature_names"]))
    if n_in != len(meta["feature_names"]):
        raise ModelError(f"model expects {n_in} features, metadata names {len(meta['feature_names'])}")
    wide = meta.get("wide_threshold")
    return Detector(estimator, float(meta["threshold"]), tuple(meta["feature_names"]),
                    meta["model_id"], meta, None if wide is None else float(wide))
