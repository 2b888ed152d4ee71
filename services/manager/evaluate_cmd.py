"""`xdpguard evaluate`: train on part of labelled captures, replay the rest, ours beside the original
tool's method (docs/origins.md)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from services.common.errors import ConfigError

from .progress import task_progress

EPILOG = """examples:
  xdpguard evaluate --manifest ../shared/data/pcaps/manifest.csv \\
      --manifest ../shared/data/corpus/manifest.csv --sustain 30 --out docs/evaluation
  xdpguard evaluate --manifest m.csv --split time --train-frac 0.5 --out /tmp/eval
  xdpguard evaluate --manifest m.csv --split time --model models/site.joblib --out /tmp/eval
--split file (default): the captures are dealt into --folds fixed folds by file name
(services/offline/folds.py); for each fold a model (forest, threshold, evidence bounds) is
trained on the benign captures of the other folds and the fold's captures are replayed whole.
--split time: one model trained on the first --train-frac of every capture, the rest replayed;
with --model, that model is replayed as it is (the part after its own train_frac, or the second
half); without benign captures to train on, the shipped model is.
--sustain S repeats every attack capture, back to back, until it spans S seconds.
Writes DIR/report.md, DIR/report.png and DIR/report.json (`overall`, `by_kind`, `by_file`,
`merged`, `folds`, `seed_method`).
"""


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="measure detection on labelled captures", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, action="append",
                   help="CSV with file,label,kind columns (repeat for several)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--split", choices=("file", "time"), default="file", help="default: file")
    p.add_argument("--folds", type=int, default=5, help="folds of the split by file (default 5)")
    p.add_argument("--sustain", type=float, default=0.0, metavar="SECONDS",
                   help="repeat every attack capture until it spans SECONDS (default: as captured)")
    p.add_argument("--model", default=None,
                   help="with --split time: replay this model instead of training one")
    p.add_argument("--train-frac", type=float, default=None,
                   help="--split time: share of each capture trained on (default 0.5, or --model's)")
    p.add_argument("--target-fpr", type=float, default=None,
                   help="training: threshold's false-positive rate (default: the shipped model's)")
    p.add_argument("--trees", type=int, default=200, help="training: trees (default 200)")
    p.add_argument("--window", type=float, default=1.0, help="window seconds (default 1)")
    p.add_argument("--reaction", type=float, default=1.0,
                   help="seconds from window end to rule in force (default 1)")
    p.add_argument("--no-seed", action="store_true", help="skip the seed-method baseline")
    p.add_argument("--no-merged", action="store_true",
                   help="skip replaying each attack over all benign captures")
    p.set_defaults(func=cmd_evaluate)


def checked_manifest(path: str) -> list[dict]:
    """The manifest's rows (services.offline.training.read_manifest), each naming a capture
    that exists; ConfigError naming the line otherwise, or when it lists no capture."""
    from services.offline import training as T

    rows = T.read_manifest(path)
    if not rows:
        raise ConfigError(f"{path} lists no capture (only its header line)")
    base = Path(path).resolve().parent
    for line, row in enumerate(rows, start=2):
        if not (base / row["file"]).is_file():
            raise ConfigError(f"{path}:{line}: no such capture {row['file']} (relative to "
                              f"{base})")
    return rows


def read_captures(load, what: str):
    """`load()` (captures from pcap/pcapng files or logs), a file that is not a readable
    capture being a ConfigError naming `what` (the manifest, or the files given)."""
    from scapy.error import Scapy_Exception

    try:
        return load()
    except (OSError, ValueError, EOFError, Scapy_Exception) as exc:
        raise ConfigError(f"{what}: a capture cannot be read: {exc}") from None


def _trainer(args, features: str, fpr: float):
    from services.offline import training as T

    def train(benign):
        if not benign:
            raise ValueError("no benign capture to train it on")
        res = T.train(benign, features=features, target_fpr=fpr, window_s=args.window,
                      n_estimators=args.trees)
        return res.detector(f"{'xdpguard' if features == 'full' else 'seed'}-fold")
    return train


def _check_args(args) -> None:
    """ConfigError for flags that do not go together or are out of range, and for an --out
    that cannot be made: found before any capture is read, not after minutes of replay."""
    if args.model and args.split != "time":
        raise ConfigError("--model replays a trained model: it goes with --split time")
    if args.window <= 0 or args.reaction < 0:
        raise ConfigError("--window must be above 0 and --reaction 0 or more")
    if args.folds < 2 or args.sustain < 0:
        raise ConfigError("--folds must be at least 2 and --sustain not negative")
    if args.train_frac is not None and args.split != "time":
        raise ConfigError("--train-frac splits each capture in time: it goes with --split time")
    if args.train_frac is not None and not 0 < args.train_frac < 1:
        raise ConfigError("--train-frac must be in (0, 1) to leave a test part")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {args.out}: {exc.strerror}") from None


def cmd_evaluate(args) -> int:
    """Read the manifests, train and replay per the split (EPILOG), write the report."""
    from services.detection.detect import DetectParams
    from services.detection.model import DEFAULT_MODEL, load_model, read_meta
    from services.offline import training as T
    from services.offline.evaluation import EvalConfig, evaluate, evaluate_folds
    from services.offline.folds import assign_folds
    from services.offline.report import write_report

    _check_args(args)
    shipped = read_meta(args.model or DEFAULT_MODEL).get("params", {})
    fpr = args.target_fpr or float(shipped.get("target_fpr", T.DEFAULT_TARGET_FPR))
    caps = []
    for m in args.manifest:
        rows = checked_manifest(m)
        with task_progress(f"reading {m}", len(rows)) as step:
            caps += read_captures(lambda: T.load_manifest(m, progress=step), m)
    T.unique_names(caps)
    cfg = EvalConfig(window_s=args.window, reaction_s=args.reaction, sustain_s=args.sustain,
                     merged=not args.no_merged)
    seed_cfg = EvalConfig(args.window, args.reaction, DetectParams(flow_only=True), args.sustain,
                          not args.no_merged)
    methods = [("xdpguard", "full", cfg)] + ([] if args.no_seed else [("seed method", "seed", seed_cfg)])
    reports = {}
    n_benign = sum(c.label == "benign" for c in caps)
    if args.split == "file":
        if n_benign < args.folds:
            raise ConfigError(f"--split file trains each of the {args.folds} folds on the benign "
                              f"captures of the others: {n_benign} benign given; give more, "
                              "fewer --folds, or --split time (the shipped model or --model)")
        folds = assign_folds(caps, args.folds)
        for name, features, c in methods:
            with task_progress(f"folds ({name})", None) as step:
                reports[name] = _optional(name, lambda: evaluate_folds(
                    caps, folds, _trainer(args, features, fpr), c, progress=step))
        split = (f"by file: {args.folds} fixed folds (file name groups ordered by sha256, dealt "
                 "round robin, benign and attack apart; listed under Folds); each fold replayed "
                 "whole with a model trained and calibrated on the benign captures of the "
                 "other folds only")
    else:
        frac = args.train_frac
        det = load_model(args.model) if args.model else None
        if det is None and not n_benign:
            print("no benign capture to train on: the shipped model is replayed", file=sys.stderr)
            det = load_model(DEFAULT_MODEL)
        if frac is None:  # the model's own split; one trained on whole captures: halves
            frac = float(det.meta.get("training", {}).get("train_frac", 0.5)) if det else 0.5
            frac = frac if 0 < frac < 1 else 0.5
        train = [c.split(frac)[0] for c in caps]
        test = [c.split(frac)[1] for c in caps]
        benign = [c for c in train if c.label == "benign"]
        for name, features, c in methods:
            with task_progress(f"training and replaying ({name})", None) as step:
                reports[name] = _optional(name, lambda: evaluate(
                    test, det if (det and features == "full")
                    else _trainer(args, features, fpr)(benign), c, progress=step))
        split = (f"time order within each capture; the first {frac:.0%} of its packets were "
                 f"available for training, the remaining {1 - frac:.0%} (replayed here) were not")
    command = ("xdpguard " + " ".join(shlex.quote(a) for a in sys.argv[1:])
               if sys.argv[1:2] == ["evaluate"]
               else "xdpguard evaluate " + " ".join(f"--manifest {m}" for m in args.manifest)
               + f" --out {args.out}")
    ours = reports["xdpguard"]
    try:
        write_report(args.out, ours, reports.get("seed method"), command=command, split=split)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {args.out}: {exc.strerror}") from None
    o = ours["overall"]
    worst = o["worst_benign_capture"] or {}
    print(f"wrote {args.out}/report.md, report.json, report.png")
    worst_text = f" (worst capture {_pct(worst['share'])}: {worst['name']})" if worst else ""
    print(f"benign packets dropped {_pct(o['benign_packet_drop_share'])}{worst_text}, "
          f"attack packets dropped: mean over "
          f"kinds {_pct(o['attack_packet_drop_share'])}, lowest kind "
          f"{_pct(o['attack_packet_drop_share_min_kind'])}; ROC-AUC {_num(o['roc_auc'])}")
    return 0


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _optional(name: str, run):
    """`run()`; too little data (ValueError) is a ConfigError for ours, and for the original
    tool's method (an optional baseline) one line saying it was skipped and None."""
    try:
        return run()
    except ValueError as exc:
        if name == "xdpguard":
            raise ConfigError(f"cannot evaluate: {exc}") from None
        print(f"seed-method baseline skipped: {exc}", file=sys.stderr)
        return None
