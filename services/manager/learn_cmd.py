"""`xdpguard learn`: a site model from the site's own traffic (a time range of the `packets`
topic, or pcap files), merged with the shipped benign baseline and validated before it is
written (services.offline.sitemodel). A model that fails validation is refused: one line per
failed check with its figures, exit 1, nothing written to --out."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from services.common.errors import ConfigError

from .progress import task_progress
from .train_cmd import add_kafka_range_flags

EPILOG = """examples:
  xdpguard learn --kafka-from 2026-11-26T00:00:00Z --kafka-to 2026-12-03T00:00:00Z --out /var/lib/xdpguard/site.joblib
  xdpguard learn --pcap office-mon.pcapng office-tue.pcapng --out site.joblib
  xdpguard learn --pcap site.pcap --holdout 0.5 --merged --out site.joblib   # the goal measurement
The site's traffic is split by time: the first part trains (with the benign baseline shipped
beside the model, <model>.reference.npz), the last --holdout is replayed through the rules to
count false positives. The attack set of the same file is replayed by the shipped model and by
the site model. Refused when more than --fp-budget of the held-back packets are dropped, or when
the site model misses an attack kind the shipped model catches (drops at least --catch-share of
its packets). Roll it out with `xdpguard models ...` (docs/operations.md, "The first week on a
new site").
"""


def register(sub) -> None:
    p = sub.add_parser("learn", help="build and validate a site model from the site's traffic",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcap", nargs="*", default=[], help="the site's pcap/pcapng files (benign)")
    add_kafka_range_flags(p)
    p.add_argument("--holdout", type=float, default=0.3,
                   help="share of the site's traffic (the last, by time) held back for "
                        "validation (default 0.3)")
    p.add_argument("--fp-budget", type=float, default=0.0001,
                   help="share of held-back site packets the model may drop (default 0.0001 = 0.01%%)")
    p.add_argument("--catch-share", type=float, default=0.3,
                   help="share of an attack kind's packets a model must drop to catch it (default 0.3)")
    p.add_argument("--sustain", type=float, default=10.0,
                   help="attack captures are repeated to span this many seconds (default 10; "
                        "the evaluation's 30 takes about three times as long)")
    p.add_argument("--merged", action="store_true",
                   help="also replay every attack over all the held-back site traffic and print "
                        "the benign share dropped meanwhile (slower)")
    p.add_argument("--baseline-model", default=None,
                   help="the model whose reference set is merged and compared with (default: "
                        "the shipped one)")
    p.add_argument("--exclude-baseline", action="append", default=[], metavar="FILE",
                   help="leave the baseline's capture(s) of this file name out (for measuring "
                        "learn on a capture the baseline holds; repeatable)")
    p.add_argument("--target-fpr", type=float, default=None,
                   help="threshold's false-positive rate on held-back flow-windows (default 0.02)")
    p.add_argument("--trees", type=int, default=200, help="Isolation Forest trees (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="model file to write when it passes")
    p.set_defaults(func=cmd_learn, manifest=[], seed_log=[])


def _config(args):
    from services.offline.sitemodel import LearnConfig
    from services.offline.training import DEFAULT_TARGET_FPR

    fpr = DEFAULT_TARGET_FPR if args.target_fpr is None else args.target_fpr
    for name, v in (("--holdout", args.holdout), ("--fp-budget", args.fp_budget),
                    ("--catch-share", args.catch_share), ("--target-fpr", fpr)):
        if not 0 < v < 1:
            raise ConfigError(f"{name} must be in (0, 1), not {v}")
    if args.trees < 1:
        raise ConfigError("--trees must be at least 1")
    if not args.pcap and not args.kafka_from:
        raise ConfigError("nothing to learn from: give --pcap files or --kafka-from")
    if not 1 <= args.sustain <= 3600:  # nan too: 0 or nan replayed no attack at all
        raise ConfigError(f"--sustain must be 1-3600 seconds, not {args.sustain}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or not os.path.isdir(out_dir):  # now, not after the fit
        why = "Is a directory" if os.path.isdir(args.out) else f"no folder {out_dir}"
        raise ConfigError(f"cannot write {args.out}: {why}")
    try:  # a folder that exists but takes no file (/proc, read-only): now too, not after it
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    return LearnConfig(holdout_frac=args.holdout, fp_budget=args.fp_budget,
                       catch_share=args.catch_share, sustain_s=args.sustain, target_fpr=fpr,
                       n_estimators=args.trees, seed=args.seed)


def _pct(c) -> str:
    return f"{c.part:,}/{c.whole:,} ({c.share * 100:.4f}%)"


def print_figures(val, reports: dict) -> None:
    """Both models' figures on the same replays, one line each."""
    print(f"held-back site packets dropped: site model {_pct(val.held_back)}, shipped model "
          f"{_pct(_held(reports['shipped']))}")
    for name in ("shipped", "site"):
        o = reports[name]["overall"]
        if o.get("merged_benign_packet_drop_share") is not None:
            print(f"  {name} model, held-back traffic while an attack runs (merged): "
                  f"{o['merged_benign_packet_drop_share'] * 100:.4f}% of packets dropped")
    for kind in sorted(val.shipped):
        k = {n: reports[n]["by_kind"][kind] for n in ("shipped", "site")}
        ttfb = {n: "none" if v["time_to_first_block_s"] is None else f"{v['time_to_first_block_s']:.2f} s"
                for n, v in k.items()}
        print(f"attack {kind}: shipped {_pct(val.shipped[kind])} first block {ttfb['shipped']}; "
              f"site {_pct(val.site.get(kind))} first block {ttfb['site']}")


def _held(rep: dict):
    from services.offline.sitemodel import replay_figures

    return replay_figures(rep)[0]


def cmd_learn(args) -> int:
    from services.detection.model import DEFAULT_MODEL, load_model, save_model
    from services.offline.reference import load_reference
    from services.offline.sitemodel import learn

    from .train_cmd import collect

    cfg = _config(args)
    base = args.baseline_model or DEFAULT_MODEL
    if os.path.realpath(args.out) == os.path.realpath(base):  # its reference set would not match
        raise ConfigError(f"--out {args.out} is the baseline model: write the site model elsewhere")
    shipped = load_model(base)
    ref = load_reference(base, shipped.meta)
    if args.exclude_baseline:
        from services.offline.folds import group_of

        drop = {group_of(n) for n in args.exclude_baseline}
        ref.benign = [c for c in ref.benign if group_of(c.name) not in drop]
    site = collect(args)
    if not any(c.packets for c in site):  # now, not after training on the baseline alone
        raise ConfigError(f"no site packet to learn from in {', '.join(c.name for c in site)}")
    with task_progress("learning", None) as step:
        try:
            res, val, reports = learn(site, ref, shipped, cfg, merged=args.merged, progress=step)
        except ValueError as exc:  # too little data to fit and calibrate on
            raise ConfigError(str(exc)) from None
    print_figures(val, reports)
    if not val.ok:
        for line in val.failures:
            print(f"xdpguard learn: refused: {line}", file=sys.stderr)
        return 1
    try:
        meta = save_model(res.estimator, args.out, threshold=res.threshold,
                          wide_threshold=res.wide_threshold, feature_names=res.feature_names,
                          training=res.training, metrics=res.metrics, params=res.params,
                          evidence=res.evidence, name="site-if")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {args.out} ({meta['model_id']}): threshold {res.threshold:.4f}, "
          f"passed validation")
    return 0
