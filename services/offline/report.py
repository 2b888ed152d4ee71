"""Evaluation reports: DIR/report.json, DIR/report.md, DIR/report.png (ours beside the original
tool's method, the "seed method" column: docs/origins.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# The goals (docs/detection.md): per benign capture and overall, per attack kind sent at
# 5 packets/s or more (mean over kinds shown; every kind must reach it), ROC-AUC.
GOALS = {"attack_packet_drop_share": (">=", 0.90), "benign_packet_drop_share": ("<=", 0.001),
         "worst_benign_capture_share": ("<=", 0.01), "time_to_first_block_s": ("<=", 3.0),
         "roc_auc": (">=", 0.95)}
GOAL_RATE_PPS = 5.0


def _fmt(v, metric: str = "") -> str:
    if v is None:
        return "n/a"
    if metric == "time_to_first_block_s" or metric.endswith("_s"):
        return f"{v:.2f}"
    if "share" in metric or "bound" in metric:
        return f"{v:.2%}" if v == 0 or v >= 0.001 else f"{v:.4%}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ok(metric: str, v) -> str:
    if metric not in GOALS or v is None:
        return ""
    op, goal = GOALS[metric]
    return " ✓" if (v >= goal if op == ">=" else v <= goal) else " ✗"


def _public(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if not k.startswith("_")}


def _overall(ours: dict, seed: dict | None) -> list[str]:
    lines = ["## Overall\n", "| metric | xdpguard | seed method |", "|---|---|---|"]
    for m in ("benign_packet_drop_share", "benign_flow_drop_share", "worst_benign_capture_share",
              "benign_captures_over_1pct", "benign_captures_with_drops", "benign_captures",
              "attack_packet_drop_share", "attack_packet_drop_share_min_kind",
              "attack_packet_drop_share_pooled", "attack_drop_upper_bound", "time_to_first_block_s",
              "roc_auc", "pr_auc", "detection_recall", "detection_fpr",
              "merged_benign_packet_drop_share", "merged_benign_flow_drop_share"):
        vals = []
        for rep in (ours, seed):
            o = (rep or {}).get("overall", {})
            v = (o.get("worst_benign_capture") or {}).get("share") if m == "worst_benign_capture_share" \
                else o.get(m)
            vals.append(v)
        lines.append(f"| {m} | {_fmt(vals[0], m)}{_ok(m, vals[0])} | {_fmt(vals[1], m)} |")
    worst = ours["overall"].get("worst_benign_capture") or {}
    lines.append(f"\nWorst benign capture: `{worst.get('name')}` ({_fmt(worst.get('share'), 'share')}). "
                 f"attack_packet_drop_share is the mean over the kinds sent at {GOAL_RATE_PPS:.0f} "
                 "packets/s or more (the goal holds for each of them); time_to_first_block_s the "
                 "slowest of those kinds.\n")
    return lines


def _by_kind(ours: dict, seed: dict | None) -> list[str]:
    cols = ("files", "rate_pps_min", "attack_packet_drop_share", "attack_drop_upper_bound",
            "attack_packet_drop_share_min_file", "time_to_first_block_s", "roc_auc",
            "detection_recall")
    lines = ["## By attack kind\n", "| kind | " + " | ".join(cols) + " | seed: dropped / ROC-AUC |",
             "|---|" + "---|" * (len(cols) + 1)]
    for kind, v in ours["by_kind"].items():
        sv = (seed or {}).get("by_kind", {}).get(kind, {})
        goal = v.get("rate_pps_min", 0) >= GOAL_RATE_PPS
        cells = [f"{_fmt(v.get(m), m)}{_ok(m, v.get(m)) if goal else ''}" for m in cols]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {_fmt(sv.get('attack_packet_drop_share'), 'share')}"
                     f" / {_fmt(sv.get('roc_auc'))} |")
    lines.append("\nrate_pps_min: the slowest file of the kind as replayed (goals apply from "
                 f"{GOAL_RATE_PPS:.0f} packets/s); attack_drop_upper_bound: the share of attack "
                 "packets arriving after the first attack window closed plus the reaction time, "
                 "the most any detector could drop with this timing; time_to_first_block_s: from "
                 "the first attack packet until the rule that first dropped attack packets was in "
                 "force, the slowest file of the kind, n/a when one was never blocked; ROC-AUC over the "
                 "kind's files and every benign capture.\n")
    return lines


def _files(ours: dict) -> list[str]:
    bf = ours["by_file"]
    benign = sorted(((v["benign_packet_drop_share"] or 0, n) for n, v in bf.items() if v["kind"] == "benign"),
                    reverse=True)
    hit = [(s, n) for s, n in benign if s > 0]
    lines = ["## Benign captures with packets dropped\n"]
    if hit:
        lines += ["| capture | packets dropped | flows dropped | first rule |", "|---|---|---|---|"]
        for s, n in hit:
            rule = (bf[n].get("rules") or [""])[0]
            lines.append(f"| {n} | {_fmt(s, 'share')} | {_fmt(bf[n]['benign_flow_drop_share'], 'share')} | {rule} |")
    else:
        lines.append(f"None: 0 packets dropped in each of the {len(benign)} benign captures.")
    lines += ["\n## Attack captures\n", "first block: the rule that first dropped attack packets was in force; "
              "first drop: the first attack packet dropped (later when the capture pauses).\n",
              "| capture | kind | packets/s | dropped | first block (s) | first drop (s) | first rule |",
              "|---|---|---|---|---|---|---|"]
    for n, v in bf.items():
        if v["kind"] != "benign":
            rule = (v.get("rules") or [""])[0]
            lines.append(f"| {n} | {v['kind']} | {v.get('rate_pps', 0):.1f} | "
                         f"{_fmt(v['attack_packet_drop_share'], 'share')} | "
                         f"{_fmt(v['time_to_first_block_s'], 'time_to_first_block_s')} | "
                         f"{_fmt(v.get('first_drop_s'), 'time_to_first_block_s')} | {rule} |")
    return lines


def write_report(out: str | Path, ours: dict, seed: dict | None, *, command: str,
                 split: str, extra: dict | None = None) -> dict:
    """Write report.json (both methods' public parts), report.md (goals marked) and report.png
    (ROC curves, blocked share over time) into `out`; returns the JSON document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "split": split, **_public(ours),
           "seed_method": _public(seed) if seed else None, **(extra or {})}
    (out / "report.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    cfg = ours["config"]
    lines = ["# xdpguard evaluation\n", f"Command: `{command}`\n", f"Split: {split}\n",
             f"Config: window {cfg['window_s']} s, reaction {cfg['reaction_s']} s, attacks replayed "
             f"alone sustained to {cfg.get('sustain_s') or 'their own length'} s; model "
             f"{cfg['model_id']}. Seed method: its 22 features, a plain Isolation Forest trained "
             "on the same benign captures, calibrated to the same false-positive rate, "
             "exact-flow rules on every anomalous flow.\n",
             "Goals: at most 0.1% of benign packets dropped overall and 1% in every benign "
             "capture; every attack kind sent at 5 packets/s or more loses at least 90% of its "
             "packets, first block within 3 s; ROC-AUC at least 0.95 (✓/✗ mark ours).\n"]
    lines += _overall(ours, seed) + _by_kind(ours, seed) + _files(ours)
    if ours.get("folds"):
        lines += ["\n## Folds\n", "| fold | captures | trained on (benign) | threshold |", "|---|---|---|---|"]
        for f in ours["folds"]:
            lines.append(f"| {f['fold']} | {len(f['files'])} | {f['trained_on']} | {f['threshold']:.4f} |")
        lines.append("\nFiles per fold: `report.json` → `folds[].files`.")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(out / "report.png", ours, seed)
    return doc


def _plot(path: Path, ours: dict, seed: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for label, rep, style in (("xdpguard", ours, "-"), ("seed method", seed, "--")):
        if not rep:
            continue
        st = rep["_stats"]
        y = np.concatenate([s.labels for s in st])
        if len(set(y.tolist())) == 2:
            fpr, tpr, _ = roc_curve(y, np.concatenate([s.scores for s in st]),
                                    sample_weight=np.concatenate([s.weights for s in st]))
            ax1.plot(fpr, tpr, style, label=f"{label} (AUC {rep['overall']['roc_auc']:.3f})")
    ax1.plot([0, 1], [0, 1], ":", color="grey")
    ax1.set(xlabel="false-positive rate (benign flow-windows)", ylabel="true-positive rate",
            title="ROC, held-out captures, every file weighted equally")
    if ax1.get_legend_handles_labels()[0]:  # no ROC without both labels
        ax1.legend(loc="lower right")
    for name, tl in ours["timelines"].items():
        xs = [t[0] for t in tl if t[1] is not None]
        ys = [t[1] for t in tl if t[1] is not None]
        ax2.plot(xs, ys, marker=".", label=name.rsplit("/", 1)[-1])
    ax2.set(xlabel="seconds since first packet", ylabel="attack packets dropped (share)",
            title=f"xdpguard: blocked share over time (reaction {ours['config']['reaction_s']} s)",
            ylim=(-0.02, 1.02))
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
