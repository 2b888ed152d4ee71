"""`xdpguard train`: fit the detector on captures, logs in the original tool's format
(docs/origins.md) or the Kafka packets topic."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

from services.common.errors import ConfigError

from .progress import task_progress
from .ruleargs import bounded

# packet events a --kafka-from read may hold (about 3 GB as Packets; docs/operations.md)
MAX_PACKETS = 10_000_000
# --max-packets' type: 0 would refuse every range, so argparse's line names 1 as the lowest
MAX_PACKETS_FLAG = bounded(int, 1, 2**31 - 1)

EPILOG = """examples:
  xdpguard train --manifest ../shared/data/pcaps/manifest.csv \
      --manifest ../shared/data/corpus/manifest.csv --out models/xdpguard-if.joblib  # shipped
  xdpguard train --pcap office.pcapng --seed-log firewall_log.json --out models/site.joblib
  xdpguard train --kafka-from 2026-11-26T10:00:00Z --kafka-to 2026-11-26T11:00:00Z --out site.joblib
Inputs are treated as benign traffic, except manifest rows labelled attack (scored for the
training metrics, never fitted). Of the benign captures, --calib-frac of them (by the sha256 of
their name) are held back whole to calibrate the threshold; the evidence bounds come from all
of them. --train-frac below 1 keeps only the first part (time order) of every capture.
`xdpguard evaluate` trains its own models on the part it does not replay.
"""


def add_kafka_range_flags(p) -> None:
    """--kafka-from, --kafka-to and --max-packets: the packets-topic range `collect` reads
    (train and learn)."""
    p.add_argument("--kafka-from", help="start of the packets-topic time range (ISO 8601)")
    p.add_argument("--kafka-to", help="end of the range (ISO 8601, default now)")
    p.add_argument("--max-packets", type=MAX_PACKETS_FLAG, default=MAX_PACKETS,
                   help="refuse a packets-topic range holding more packet events than this "
                        f"(held in memory, about 300 bytes each; default {MAX_PACKETS:,})")


def register(sub) -> None:
    p = sub.add_parser("train", help="train and calibrate the detector", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", action="append", default=[],
                   help="manifest CSV (file,label,kind) of pcap/pcapng captures (repeatable)")
    p.add_argument("--pcap", nargs="*", default=[], help="benign pcap/pcapng files")
    p.add_argument("--seed-log", nargs="*", default=[], help="benign seed-format JSON logs")
    add_kafka_range_flags(p)
    p.add_argument("--train-frac", type=float, default=1.0,
                   help="share of each capture (time order) used for training (default 1: all)")
    p.add_argument("--target-fpr", type=float, default=None,
                   help="false-positive rate on held-back benign flow-windows (default 0.02)")
    p.add_argument("--calib-frac", type=float, default=0.3,
                   help="share of the benign captures held back for the threshold (default 0.3)")
    p.add_argument("--features", choices=("full", "seed"), default="full",
                   help="full (the original tool's 22 + window aggregates) or its 22 "
                        "only (docs/origins.md)")
    p.add_argument("--window", type=float, default=1.0, help="window seconds (default 1)")
    p.add_argument("--trees", type=int, default=200, help="Isolation Forest trees (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True,
                   help="model file to write (never a default: a relative one in a checkout "
                        "would overwrite the shipped model)")
    p.add_argument("--reference-out",
                   help="also write the reference set (the benign captures trained on and the "
                        "attack captures, packet headers only) that `xdpguard learn` merges with "
                        "and validates against: <model>.reference.npz beside the model")
    p.set_defaults(func=cmd_train)


def _parse_time(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1e9)


def _kafka_range(args) -> tuple[int, int] | None:
    """(from_ns, to_ns) of --kafka-from/--kafka-to (to: now by default), None without
    --kafka-from; ConfigError for a time that is not ISO 8601 or an empty range."""
    if not args.kafka_from:
        if args.kafka_to:
            raise ConfigError("--kafka-to needs --kafka-from")
        return None
    from_ns = _parse_time(args.kafka_from)
    to_ns = _parse_time(args.kafka_to) if args.kafka_to else int(datetime.now().timestamp() * 1e9)
    if to_ns <= from_ns:
        raise ConfigError(f"--kafka-to {args.kafka_to or '(now)'} is not after "
                          f"--kafka-from {args.kafka_from}")
    return from_ns, to_ns


def collect(args) -> list:
    from services.offline import training as T

    from .evaluate_cmd import checked_manifest, read_captures

    kafka_range = _kafka_range(args)  # checked before any file or the broker is read
    captures = []
    for m in args.manifest:
        rows = checked_manifest(m)
        with task_progress(f"reading {m}", len(rows)) as step:
            captures += read_captures(lambda: T.load_manifest(m, progress=step), m)
    files = [*args.pcap, *args.seed_log]
    for path in files:
        if not os.path.isfile(path):
            raise ConfigError(f"no such file: {path}")
    captures += read_captures(lambda: T.load_files(args.pcap) + T.load_files(args.seed_log),
                              " ".join(files))
    if args.kafka_from:
        import asyncio

        from services.offline.kafka_packets import read_packets
        from services.common.settings import load_common

        read = asyncio.run(read_packets(load_common(), *kafka_range, max_packets=args.max_packets))
        if read.truncated:
            raise ConfigError(f"the packets topic holds more than {args.max_packets:,} packet "
                              f"events from {args.kafka_from} to {args.kafka_to or 'now'}: give a "
                              f"shorter range, or --max-packets N if the host has the memory "
                              f"(about 300 bytes each)")
        print(f"kafka: {read.records} records, {len(read.packets)} packets, "
              f"{read.undecodable} undecodable", file=sys.stderr)
        captures.append(T.LabelledCapture("kafka:packets", "benign", "live", read.packets))
    if not captures:
        raise ConfigError("nothing to train on: give --manifest, --pcap, --seed-log or --kafka-from")
    T.unique_names(captures)
    return captures


def cmd_train(args) -> int:
    from services.offline import training as T
    from services.detection.model import save_model

    fpr = T.DEFAULT_TARGET_FPR if args.target_fpr is None else args.target_fpr
    if not 0 < args.train_frac <= 1 or not 0 < fpr < 1 or not 0 < args.calib_frac < 1:
        raise ConfigError("--train-frac must be in (0, 1], --target-fpr and --calib-frac in (0, 1)")
    if args.trees < 1 or args.window <= 0:
        raise ConfigError("--trees must be at least 1 and --window above 0")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or not os.path.isdir(out_dir):  # now, not after the fit
        why = "Is a directory" if os.path.isdir(args.out) else f"no folder {out_dir}"
        raise ConfigError(f"cannot write {args.out}: {why}")
    captures = collect(args)
    train_parts = [c.split(args.train_frac)[0] for c in captures]
    benign = [c for c in train_parts if c.label == "benign"]
    attack = [c for c in train_parts if c.label == "attack"]
    try:
        with task_progress("fitting", None):
            res = T.train(benign, features=args.features, target_fpr=fpr,
                          calib_frac=args.calib_frac, window_s=args.window,
                          n_estimators=args.trees, seed=args.seed, attack=attack)
    except ValueError as exc:  # too little data to fit and calibrate on
        raise ConfigError(str(exc)) from None
    res.training["train_frac"] = args.train_frac
    res.training["split"] = ("whole captures" if args.train_frac == 1 else
                             "time order within each capture: first train_frac trains, rest is test")
    try:
        meta = save_model(res.estimator, args.out, threshold=res.threshold,
                          wide_threshold=res.wide_threshold,
                          feature_names=res.feature_names, training=res.training,
                          metrics=res.metrics, params=res.params, evidence=res.evidence,
                          name="xdpguard-if" if args.features == "full" else "seed-if")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    if args.reference_out:
        from services.offline.reference import write_reference

        try:
            write_reference(benign + attack, args.reference_out)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.reference_out}: {exc.strerror}") from None
        print(f"wrote {args.reference_out}: {len(benign)} benign and {len(attack)} attack captures")
    print(f"wrote {args.out} ({meta['model_id']}): threshold {res.threshold:.4f} "
          f"(wide rules {res.wide_threshold:.4f}), "
          f"{res.metrics['fit_rows']} fit rows, calibration FPR {res.metrics['calibration_fpr']:.4f}")
    for k, v in res.metrics.items():
        if k.startswith("train_"):
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0
