"""`xdpguard evaluate`: replay the test part of labelled captures, ours beside the original tool's
method (docs/origins.md)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from services.common.errors import ConfigError

from .progress import task_progress

EPILOG = """examples:
  xdpguard evaluate --manifest ../shared/data/pcaps/manifest.csv --out /tmp/eval
  xdpguard evaluate --manifest m.csv --out /tmp/eval --model models/site.joblib --reaction 0.2
Writes DIR/report.md, DIR/report.png and DIR/report.json (`overall`, `by_kind`, `by_file`,
`merged`, `seed_method`). Only the part of each capture after --train-frac (default: the
model's own) is replayed; the original tool's method is trained on the part before it.
"""


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="measure detection on labelled captures", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="CSV with file,label,kind columns")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--train-frac", type=float, default=None,
                   help="test part = what follows this share of each capture (default: model's)")
    p.add_argument("--window", type=float, default=1.0, help="window seconds (default 1)")
    p.add_argument("--reaction", type=float, default=1.0,
                   help="seconds from window end to rule in force (default 1)")
    p.add_argument("--no-seed", action="store_true", help="skip the seed-method baseline")
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


def cmd_evaluate(args) -> int:
    from services.offline import training as T
    from services.detection.detect import DetectParams
    from services.offline.evaluation import EvalConfig, evaluate
    from services.detection.model import Detector, load_model
    from services.offline.report import write_report

    if args.window <= 0 or args.reaction < 0:
        raise ConfigError("--window must be above 0 and --reaction 0 or more")
    det = load_model(args.model)
    frac = args.train_frac
    if frac is None:
        frac = float(det.meta.get("training", {}).get("train_frac", 0.5))
    if not 0 < frac < 1:
        raise ConfigError("--train-frac must be in (0, 1) to leave a test part")
    rows = checked_manifest(args.manifest)
    with task_progress("reading captures", len(rows)) as step:
        caps = read_captures(lambda: T.load_manifest(args.manifest, progress=step),
                             args.manifest)
    train = [c.split(frac)[0] for c in caps]
    test = [c.split(frac)[1] for c in caps]
    cfg = EvalConfig(window_s=args.window, reaction_s=args.reaction)
    n = 2 * sum(c.label == "attack" for c in test) + sum(c.label == "benign" for c in test)
    with task_progress("replaying (xdpguard)", n) as step:
        ours = evaluate(test, det, cfg, progress=step)
    seed = None
    benign_train = [c for c in train if c.label == "benign"]
    if not args.no_seed and not benign_train:
        print("seed-method baseline skipped: no benign capture to train it on", file=sys.stderr)
    elif not args.no_seed:
        fpr = float(det.meta.get("params", {}).get("target_fpr", 0.005))
        try:
            with task_progress("training the original tool's method", None):
                res = T.train(benign_train, features="seed", target_fpr=fpr, window_s=args.window)
        except ValueError as exc:  # too little benign data: the baseline is optional
            print(f"seed-method baseline skipped: {exc}", file=sys.stderr)
            res = None
        if res is not None:
            seed_det = Detector(res.estimator, res.threshold, res.feature_names, "seed-method")  # flow rules only
            with task_progress("replaying (seed method)", n) as step:
                seed = evaluate(test, seed_det, EvalConfig(args.window, args.reaction,
                                                           DetectParams(flow_only=True)), progress=step)
    command = ("xdpguard " + " ".join(shlex.quote(a) for a in sys.argv[1:])
               if sys.argv[1:2] == ["evaluate"]
               else f"xdpguard evaluate --manifest {args.manifest} --out {args.out}")
    split = (f"time order within each capture; the first {frac:.0%} of its packets were available "
             f"for training/tuning, the remaining {1 - frac:.0%} (replayed here) were not")
    try:
        write_report(args.out, ours, seed, command=command, split=split)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {args.out}: {exc.strerror}") from None
    o = ours["overall"]
    print(f"wrote {args.out}/report.md, report.json, report.png")
    print(f"attack dropped (mean over kinds) {_fmt(o['attack_packet_drop_share'], '.1%')}, benign "
          f"packets {_fmt(o['benign_packet_drop_share'], '.2%')}, benign flows "
          f"{_fmt(o['benign_flow_drop_share'], '.2%')}, ROC-AUC {_fmt(o['roc_auc'], '.3f')}")
    return 0


def _fmt(value, spec: str) -> str:
    """A figure of the summary line; "n/a" where the captures give none (e.g. no benign capture)."""
    return "n/a" if value is None else format(value, spec)
