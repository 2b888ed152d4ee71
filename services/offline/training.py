"""Training: captures -> split -> window feature rows -> Isolation Forest -> calibrated threshold.

Split (documented in docs/detection.md): every capture is cut by TIME ORDER at `train_frac` of
its packets; the first part may be used for training and tuning, the rest is the untouched test
part that `evaluation` replays. Attack kinds have one or two files each, so a split by file would
leave some kinds with nothing to test (or nothing to tune on).

The detector is trained on BENIGN rows only (novelty detection): within each benign capture's
training part the first `1 - calib_frac` of its windows fit the forest and the last `calib_frac`
are held back; the threshold is the (1 - target_fpr) quantile of the held-back benign scores, so
about `target_fpr` of unseen benign flow-windows score above it. Rules wider than one flow
(source prefix, destination limit) use `wide_threshold`, the (1 - wide_fpr) quantile, by
default the highest held-back benign score: no held-back benign flow would have caused one.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from services.detection.features import FEATURE_NAMES, HORIZON_WINDOWS, SEED_FEATURES
from services.records.packet import Packet
from .replay import Pipeline

FEATURE_SETS = {"full": FEATURE_NAMES, "seed": SEED_FEATURES}


@dataclass
class LabelledCapture:
    """One capture's packets in time order with its label ("benign"/"attack") and kind (e.g.
    "syn_flood"), read from a pcap, a log in the original tool's format or the packets topic."""
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
    from sklearn.ensemble import IsolationForest

    from services.detection.estimators import RangeGuardedForest

    if features == "seed":
        return IsolationForest(n_estimators=n_estimators, max_samples=max_samples,
                               random_state=seed, n_jobs=1)
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


def train(benign: Sequence[LabelledCapture], *, features: str = "full", target_fpr: float = 0.005,
          calib_frac: float = 0.3, window_s: float = 1.0, n_estimators: int = 200,
          max_samples: int = 256, seed: int = 0, gain: float = 0.5, wide_fpr: float = 0.0,
          attack: Sequence[LabelledCapture] = ()) -> TrainResult:
    """Fit on benign rows, calibrate the threshold on held-back benign rows. `attack` captures
    (training parts only) are scored for the training-time metrics, never fitted."""
    names = FEATURE_SETS[features]
    cols = [FEATURE_NAMES.index(n) for n in names]
    fit_parts, cal_parts = [], []
    for c in benign:
        X = window_rows(c.packets, window_s)[:, cols]
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
               "target_fpr": target_fpr,
               "calibration_fpr": float(np.mean(cal_scores >= threshold)),
               "wide_fpr": wide_fpr, "calibration_wide_fpr": float(np.mean(cal_scores > wide))}
    if attack:
        from sklearn.metrics import roc_auc_score

        X_att = np.vstack([window_rows(c.packets, window_s)[:, cols] for c in attack])
        att = -est.decision_function(X_att)
        metrics["train_attack_rows"] = int(len(X_att))
        metrics["train_attack_recall"] = float(np.mean(att >= threshold))
        metrics["train_attack_wide_recall"] = float(np.mean(att >= wide))
        y = np.r_[np.zeros(len(cal_scores)), np.ones(len(att))]
        metrics["train_roc_auc_calib_vs_attack"] = float(roc_auc_score(y, np.r_[cal_scores, att]))
    training = {"captures": [{"name": c.name, "label": c.label, "kind": c.kind,
                              "packets": len(c.packets)} for c in list(benign) + list(attack)],
                "data_digest": data_digest(list(benign)), "window_s": window_s,
                "fitted_on": "benign rows only", "calib_frac": calib_frac}
    params = {"features": features, "n_estimators": n_estimators, "max_samples": max_samples,
              "seed": seed, "target_fpr": target_fpr, "window_s": window_s,
              "horizon_windows": HORIZON_WINDOWS,
              "range_guard_gain": gain if features != "seed" else None}
    return TrainResult(est, threshold, wide, tuple(names), metrics, training, params)
