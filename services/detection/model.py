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
from .outage import MAX_OUTAGE_MEMORY_S, OUTAGE_MEMORY_S
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
        period = (self.meta.get("params") or {}).get("outage_memory_s", OUTAGE_MEMORY_S)
        if (isinstance(period, bool) or not isinstance(period, (int, float))
                or not 0 <= period <= MAX_OUTAGE_MEMORY_S):
            raise ModelError(f"model {self.model_id}: params outage_memory_s {period!r} is not a "
                             f"number of seconds from 0 to {MAX_OUTAGE_MEMORY_S:.0f}")

    @property
    def horizon_windows(self) -> int:
        """The source horizon (windows) the model was trained with: rows must be built alike."""
        return int((self.meta.get("params") or {}).get("horizon_windows", HORIZON_WINDOWS))

    @property
    def outage_memory_s(self) -> float:
        """How long a probe target that answered a source counts as answered for its probe
        evidence (params `outage_memory_s`, checked at construction: a number of seconds from 0
        to outage.MAX_OUTAGE_MEMORY_S, else ModelError; a model without it: OUTAGE_MEMORY_S)."""
        return float((self.meta.get("params") or {}).get("outage_memory_s", OUTAGE_MEMORY_S))

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
    """Verify `path` (the .joblib, or its .json) against its metadata, unpickle it and
    `sanity_check` it. ModelError (one line) when any step fails: a missing or changed file, a
    pickle that does not load (truncated, not joblib, an older xdpguard's classes), or an object
    that is no usable model (what `load_model_bytes` refuses in a models record)."""
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
    _check_sklearn(meta, path.name, allow_sklearn_mismatch)
    import joblib

    try:
        estimator = joblib.load(path)
    except (ModuleNotFoundError, AttributeError) as exc:
        # an estimator pickled by an older xdpguard names classes at their old import path
        # (e.g. services.common.estimators before the package split)
        missing = getattr(exc, "name", None) or str(exc)
        raise ModelError(f"model file {path} was saved by an older xdpguard (it names {missing!r}, "
                         "which this version does not have): retrain it (xdpguard train)") from None
    except Exception as exc:  # hashes as its metadata says but does not load: one line, no crash
        raise ModelError(f"model file {path} cannot be unpickled ({type(exc).__name__}: "
                         f"{exc})") from None
    det = _detector(estimator, meta)
    sanity_check(det, f"model file {path}")
    return det


def load_model_bytes(data: bytes, meta: dict, name: str = "model record") -> Detector:
    """A Detector from a joblib file's bytes and its metadata (a `models` topic record,
    services/wire/modelrec.py), with every check `load_model` makes (format, sha256, scikit-learn
    version, feature names and count) before or right after unpickling, plus `sanity_check`.
    ModelError (one line naming `name`) when any fails."""
    for key in ("format", "model_id", "sha256", "feature_names", "threshold", "sklearn_version"):
        if key not in meta:
            raise ModelError(f"{name}: metadata lacks {key!r}")
    if meta["format"] != FORMAT:
        raise ModelError(f"{name}: metadata has format {meta['format']!r}, expected {FORMAT!r}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise ModelError(f"{name}: model bytes hash to {digest[:16]}…, its metadata says "
                         f"{str(meta['sha256'])[:16]}…")
    _check_sklearn(meta, name, False)
    import io

    import joblib

    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:  # a pickle that hashes right but does not load: refused, not a crash
        raise ModelError(f"{name}: cannot unpickle the model ({type(exc).__name__}: {exc})") from None
    det = _detector(estimator, meta)
    sanity_check(det, name)
    return det


def sanity_check(det: Detector, name: str = "model") -> None:
    """ModelError unless `det` has a finite threshold (and wide threshold at or above it) and
    scores a row of zeros to one finite number."""
    wide = det.wide_threshold
    if not np.isfinite(det.threshold) or (wide is not None and not (np.isfinite(wide)
                                                                     and wide >= det.threshold)):
        raise ModelError(f"{name}: threshold {det.threshold} / wide threshold {wide} is not usable")
    try:
        s = det.score_rows(np.zeros((1, len(FEATURE_NAMES))))
    except Exception as exc:
        raise ModelError(f"{name}: does not score a row ({type(exc).__name__}: {exc})") from None
    if s.shape != (1,) or not np.isfinite(s).all():
        raise ModelError(f"{name}: scores a row of zeros to {s!r}, not one finite number")


def _check_sklearn(meta: dict, name: str, allow_mismatch: bool) -> None:
    have = _sklearn_version()
    if have != meta["sklearn_version"] and not allow_mismatch:
        raise ModelError(f"model {name} was written by scikit-learn {meta['sklearn_version']}, "
                         f"this is {have}: retrain it (xdpguard train)")


def _detector(estimator: Any, meta: dict) -> Detector:
    """The Detector of an unpickled estimator; ModelError when its feature count is not its
    metadata's."""
    n_in = getattr(estimator, "n_features_in_", len(meta["feature_names"]))
    if n_in != len(meta["feature_names"]):
        raise ModelError(f"model expects {n_in} features, metadata names {len(meta['feature_names'])}")
    wide = meta.get("wide_threshold")
    try:
        threshold = float(meta["threshold"])
        wide = None if wide is None else float(wide)
    except (TypeError, ValueError):
        raise ModelError(f"model {meta.get('model_id')}: threshold {meta['threshold']!r} / "
                         f"wide threshold {wide!r} is not a number") from None
    return Detector(estimator, threshold, tuple(meta["feature_names"]), str(meta["model_id"]),
                    meta, wide)
