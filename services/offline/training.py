"""Training: benign captures -> window feature rows -> Isolation Forest -> calibrated threshold
and evidence bounds.

Which captures (or which part of each) training may see is the caller's split: `xdpguard
evaluate` trains one model per fold of a split by FILE (services.offline.folds) or on the first
`train_frac` of every capture (split by time); `xdpguard train` on what it is given.

The detector is trained on BENIGN rows only (novelty detection). Of the benign captures, the
last `calib_frac` by the sha256 of their name (never by their data) are held back whole: the
forest is fitted on the others' rows and the threshold is the (1 - target_fpr) quantile of the
held-back captures' scores, so about `target_fpr` of flow-windows of benign captures the forest
never saw score above it. `wide_threshold`, the (1 - wide_fpr) quantile (by default the highest
held-back score), is kept in the metadata. The evidence bounds (services.detection.bounds) come
from the largest evidence values of every benign capture given. Attack captures are only scored,
for the training metrics.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from services.detection.bounds import MEASURES, EvidenceBounds, widen
from services.detection.features import FEATURE_NAMES, HORIZON_WINDOWS, SEED_FEATURES
from services.detection.outage import OUTAGE_MEMORY_S
from services.records.packet import Packet
from .replay import Pipeline

FEATURE_SETS = {"full": FEATURE_NAMES, "seed": SEED_FEATURES}
MIN_CALIB_FILES = 4  # fewer benign captures: calibrate on the end of each one instead
DEFAULT_TARGET_FPR = 0.02


@dataclass
class LabelledCapture:
    name: str
    label: str          # "benign" or "attack"
    kind: str
    packets: list[Packet] = field(default_factory=list)

    def split(self, train_frac: float) -> tuple["LabelledCapture", "LabelledCapture"]:
        n = int(round(len(self.packets) * train_frac))
        return (LabelledCapture(self.name, self.label, self.kind, self.packets[:n]),
                LabelledCapture(self.name, self.label, self.kind, self.packets[n:]))


def sort_packets(packets: list[Packet]) -> list[Packet]:
    return sorted(packets, key=lambda p: p.ts_ns)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a manifest CSV (columns file, label, kind at least); ConfigError when malformed."""
    from services.common.errors import ConfigError

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"manifest {path} is not a UTF-8 CSV file: {exc}") from None
    for n, r in enumerate(rows, start=2):
        for col in ("file", "label", "kind"):
            if r.get(col) is None:
                raise ConfigError(f"{path}: manifest needs a {col!r} column (line {n})")
        if r["label"] not in ("benign", "attack"):
            raise ConfigError(f"{path}:{n}: label {r['label']!r} is neither benign nor attack")
    return rows


def load_manifest(path: str | os.PathLike, *, progress: Callable[[str], None] | None = None
                  ) -> list[LabelledCapture]:
    from .pcap import read_pcap

    base = Path(path).resolve().parent
    out = []
    for r in read_manifest(path):
        if progress:
            progress(r["file"])
        out.append(LabelledCapture(r["file"], r["label"], r["kind"], sort_packets(read_pcap(base / r["file"]))))
    return out


def unique_names(captures: Sequence[LabelledCapture]) -> None:
    """Make capture names unique in place (a name met again gets "#2", "#3", ...): several
    manifests may name files alike."""
    seen: dict[str, int] = {}
    for c in captures:
        n = seen[c.name] = seen.get(c.name, 0) + 1
        if n > 1:
            c.name = f"{c.name}#{n}"


def load_files(paths: Sequence[str], label: str = "benign", kind: str = "unlabelled") -> list[LabelledCapture]:
    """pcap/pcapng files, or JSON-lines logs in the original tool's format (*.json / *.jsonl), as captures."""
    from .pcap import read_pcap
    from .seedlog import read_log

    out = []
    for p in paths:
        pk = read_log(p).packets if p.endswith((".json", ".jsonl")) else read_pcap(p)
        out.append(LabelledCapture(os.path.basename(p), label, kind, sort_packets(pk)))
    return out


def window_rows(packets: Iterable[Packet], window_s: float = 1.0) -> np.ndarray:
    """Feature rows (FEATURE_NAMES columns) of every flow in every window, in time order."""
    parts = [w.rows for w in Pipeline(None, window_s=window_s).run(packets)]
    return np.vstack(parts) if parts else np.zeros((0, len(FEATURE_NAMES)))


def data_digest(captures: Sequence[LabelledCapture]) -> str:
    h = hashlib.sha256()
    for c in captures:
        h.update(f"{c.name}|{c.label}|{len(c.packets)}\n".encode())
        for p in c.packets:
            h.update(f"{p.ts_ns},{p.src},{p.dst},{p.sport},{p.dport},{p.proto},{p.tcp_flags},"
                     f"{p.length}\n".encode())
    return h.hexdigest()


def make_estimator(features: str = "full", n_estimators: int = 200, max_samples: int | str = 256,
                   seed: int = 0, gain: float = 0.5):
    """"full": log1p + Isolation Forest + range guard (services.detection.estimators); "seed": the
    original tool's method, a plain Isolation Forest on the raw 22 features."""
    from services.detection.estimators import PlainForest, RangeGuardedForest

    if features == "seed":
        return PlainForest(n_estimators, max_samples, seed)
    return RangeGuardedForest(n_estimators, max_samples, gain, seed)


@dataclass
class TrainResult:
    estimator: object
    threshold: float
    wide_threshold: float
    feature_names: tuple[str, ...]
    metrics: dict
    training: dict
    params: dict
    evidence: dict = field(default_factory=dict)  # bounds.EvidenceBounds.to_dict()

    def detector(self, model_id: str = "in-memory"):
        """The result as a Detector, without writing a file."""
        from services.detection.model import Detector

        return Detector(self.estimator, self.threshold, self.feature_names, model_id,
                        {"params": self.params, "evidence": self.evidence}, self.wide_threshold)


_ROWS: dict[tuple, tuple[np.ndarray, dict]] = {}


def capture_windows(c: LabelledCapture, window_s: float = 1.0) -> tuple[np.ndarray, dict]:
    """(feature rows in FEATURE_NAMES columns, largest evidence values per scope and measure)
    of every window of a capture, replayed without rules; remembered per capture content."""
    pk = c.packets
    key = (c.name, len(pk), pk[0].ts_ns if pk else 0, pk[-1].ts_ns if pk else 0, window_s)
    got = _ROWS.get(key)
    if got is None:
        parts, maxima = [], {}
        for w in Pipeline(None, window_s=window_s).run(pk):
            parts.append(w.rows)
            widen(maxima, "src", w.evidence.src)
            widen(maxima, "dst", w.evidence.dst)
        rows = np.vstack(parts) if parts else np.zeros((0, len(FEATURE_NAMES)))
        got = _ROWS[key] = (rows, maxima)
    return got


def _calibration_files(benign: Sequence[LabelledCapture], calib_frac: float) -> set[str]:
    """Names of the captures held back for calibration: the last `calib_frac` of the benign
    captures ordered by the sha256 of their fold group (folds.group_of), never by their data."""
    from .folds import group_of

    order = sorted({group_of(c.name) for c in benign}, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    held = set(order[len(order) - max(1, int(round(len(order) * calib_frac))):])
    return {c.name for c in benign if group_of(c.name) in held}


def train(benign: Sequence[LabelledCapture], *, features: str = "full", target_fpr: float = DEFAULT_TARGET_FPR,
          calib_frac: float = 0.3, window_s: float = 1.0, n_estimators: int = 200,
          max_samples: int = 256, seed: int = 0, gain: float = 0.5, wide_fpr: float = 0.0,
          attack: Sequence[LabelledCapture] = (), fitted: frozenset[str] | set[str] = frozenset()
          ) -> TrainResult:
    """Fit on benign rows, calibrate the threshold on benign rows held back BY FILE (at least
    `MIN_CALIB_FILES` captures; fewer: the last `calib_frac` of every capture's windows), and
    the evidence bounds on every benign capture. Captures named in `fitted` are never held
    back (a site's own traffic, services.offline.sitemodel). `attack` captures are scored for
    the training-time metrics, never fitted."""
    names = FEATURE_SETS[features]
    cols = [FEATURE_NAMES.index(n) for n in names]
    by_file = len({c.name for c in benign}) >= MIN_CALIB_FILES
    held = _calibration_files(benign, calib_frac) - set(fitted) if by_file else set()
    fit_parts, cal_parts, maxima = [], [], {}
    for c in benign:
        rows, mx = capture_windows(c, window_s)
        for scope, vals in mx.items():
            widen(maxima, scope, {c.name: [vals.get(m, 0.0) for m in MEASURES[scope]]})
        X = rows[:, cols]
        if by_file or c.name in fitted:
            (cal_parts if c.name in held else fit_parts).append(X)
        else:
            k = int(round(len(X) * (1 - calib_frac)))
            fit_parts.append(X[:k])
            cal_parts.append(X[k:])
    X_fit, X_cal = np.vstack(fit_parts), np.vstack(cal_parts)
    if len(X_fit) < 10 or len(X_cal) < 10:
        raise ValueError(f"too little benign data: {len(X_fit)} fit rows, {len(X_cal)} held back")
    est = make_estimator(features, n_estimators, min(max_samples, len(X_fit)), seed, gain)
    est.fit(X_fit)
    cal_scores = -est.decision_function(X_cal)
    threshold = float(np.quantile(cal_scores, 1 - target_fpr, method="higher"))
    wide = float(np.quantile(cal_scores, 1 - wide_fpr, method="higher"))
    metrics = {"fit_rows": int(len(X_fit)), "calibration_rows": int(len(X_cal)),
               "calibration_files": len(held), "target_fpr": target_fpr,
               "calibration_fpr": float(np.mean(cal_scores >= threshold)),
               "wide_fpr": wide_fpr, "calibration_wide_fpr": float(np.mean(cal_scores > wide))}
    if attack:
        from sklearn.metrics import roc_auc_score

        X_att = np.vstack([capture_windows(c, window_s)[0][:, cols] for c in attack])
        att = -est.decision_function(X_att)
        metrics["train_attack_rows"] = int(len(X_att))
        metrics["train_attack_recall"] = float(np.mean(att >= threshold))
        metrics["train_attack_wide_recall"] = float(np.mean(att >= wide))
        y = np.r_[np.zeros(len(cal_scores)), np.ones(len(att))]
        metrics["train_roc_auc_calib_vs_attack"] = float(roc_auc_score(y, np.r_[cal_scores, att]))
    training = {"captures": [{"name": c.name, "label": c.label, "kind": c.kind,
                              "packets": len(c.packets), "calibration": c.name in held}
                             for c in list(benign) + list(attack)],
                "data_digest": data_digest(list(benign)), "window_s": window_s,
                "fitted_on": "benign rows only", "calib_frac": calib_frac,
                "calibration_split": "by file" if by_file else "time order within each capture"}
    params = {"features": features, "n_estimators": n_estimators, "max_samples": max_samples,
              "seed": seed, "target_fpr": target_fpr, "window_s": window_s,
              "horizon_windows": HORIZON_WINDOWS, "outage_memory_s": OUTAGE_MEMORY_S,
              "range_guard_gain": gain if features != "seed" else None}
    evidence = EvidenceBounds.calibrate(maxima).to_dict()
    return TrainResult(est, threshold, wide, tuple(names), metrics, training, params, evidence)
