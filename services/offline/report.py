"""Evaluation reports: DIR/report.json, DIR/report.md, DIR/report.png (ours beside the original
tool's method, the "seed method" column: docs/origins.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .evaluation import METRICS

GOALS = {"attack_packet_drop_share": (">=", 0.90), "benign_packet_drop_share": ("<=", 0.005),
         "benign_flow_drop_share": ("<=", 0.01), "roc_auc": (">=", 0.95)}


def _fmt(v, metric: str = "") -> str:
    if v is None:
        return "n/a"
    if metric == "time_to_first_block_s":
        return f"{v:.2f}"
    if "share" in metric:
        return f"{v:.2%}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ok(metric: str, v) -> str:
    if metric not in GOALS or v is None:
        return ""
    op, goal = GOALS[metric]
    return " ✓" if (v >= goal if op == ">=" else v <= goal) else " ✗"


def _public(rep: dict) -> dict:
    return {k: v for k, v in rep.items() if not k.startswith("_")}


def write_report(out: str | Path, ours: dict, seed: dict | None, *, command: str,
                 split: str, extra: dict | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "split": split, **_public(ours),
           "seed_method": _public(seed) if seed else None, **(extra or {})}
    (out / "report.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    lines = [f"# xdpguard evaluation\n", f"Command: `{command}`\n", f"Split: {split}\n",
             f"Config: window {ours['config']['window_s']} s, reaction {ours['config']['reaction_s']} s, "
             f"model `{ours['config']['model_id']}`; seed method: 22 features, per-5-tuple "
             f"Isolation Forest trained on the same benign rows, same target FPR, exact-flow "
             f"rules only.\n",
             "Goals: attack packets dropped >= 90% per kind, benign packets <= 0.5%, benign flows "
             "<= 1%, ROC-AUC >= 0.95 (✓/✗ marks ours).\n",
             "## Overall (test part)\n", "| metric | xdpguard | seed method |", "|---|---|---|"]
    for m in METRICS + ("attack_drop_upper_bound", "attack_packet_drop_share_min_kind",
                        "attack_packet_drop_share_pooled",
                        "merged_benign_packet_drop_share", "merged_benign_flow_drop_share"):
        v = ours["overall"].get(m)
        s = seed["overall"].get(m) if seed else None
        lines.append(f"| {m} | {_fmt(v, m)}{_ok(m, v)} | {_fmt(s, m)} |")
    cols = METRICS + ("attack_drop_upper_bound",)
    lines += ["\n## By attack kind (test part; benign shares from the merged benign+attack replay)\n",
              "| kind | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for kind, v in ours["by_kind"].items():
        sv = seed["by_kind"].get(kind, {}) if seed else {}
        cells = [f"{_fmt(v.get(m), m)}{_ok(m, v.get(m))} / {_fmt(sv.get(m), m)}" for m in cols]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("\nCells: xdpguard / seed method. attack_drop_upper_bound: share of attack packets "
                 "that arrive after the first attack window has closed plus the reaction time, "
                 "i.e. the most any detector could drop with this window and reaction time. "
                 "detection_recall / detection_fpr: attack / benign flow-windows scored at or above "
                 "the threshold (mean over files), before timing decides what can still be "
                 "dropped. time_to_first_block_s: the slowest capture of the group, n/a when one "
                 "of them was never blocked.\n")
    lines += ["## By file (replayed alone)\n",
              "| file | kind | attack dropped | benign pkts dropped | benign flows dropped | "
              "first block (s) |", "|---|---|---|---|---|---|"]
    for name, v in ours["by_file"].items():
        lines.append(f"| {name} | {v['kind']} | {_fmt(v['attack_packet_drop_share'], 'share')} | "
                     f"{_fmt(v['benign_packet_drop_share'], 'share')} | "
                     f"{_fmt(v['benign_flow_drop_share'], 'share')} | "
                     f"{_fmt(v['time_to_first_block_s'], 'time_to_first_block_s')} |")
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
            title="ROC, test part, every file weighted equally")
    ax1.legend(loc="lower right")
    for name, tl in ours["timelines"].items():
        xs = [t[0] for t in tl if t[1] is not None]
        ys = [t[1] for t in tl if t[1] is not None]
        ax2.plot(xs, ys, marker=".", label=name.rsplit("/", 1)[-1])
    ax2.set(xlabel="seconds since first packet", ylabel="attack packets dropped (share)",
            title=f"xdpguard: blocked share over time (reaction {ours['config']['reaction_s']} s)",
            ylim=(-0.02, 1.02))
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
