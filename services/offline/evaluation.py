"""Evaluation: replay the TEST part of every capture through the live logic and measure.

Replays (each on its own timestamps, `replay.replay`):
  - every capture alone (benign ones give the false-alarm figures, attack ones the catch rate);
  - per attack capture, ALL benign test parts merged with it (each shifted to start at the same
    instant), which gives the collateral damage while an attack is going on. The addresses of
    each benign capture are renumbered into its own space (10.(200+i).0.0/16, fd00:0:i::/48), or
    the overlay would fuse hosts that several captures share (the same phone's IPv6 address,
    every capture's 192.168.1.2) into one impossible host doing the work of five.
Measures per replay: attack/benign packet drop share, benign flow drop share (a flow = 5-tuple
over the replay, dropped if any of its packets was), time from the first attack packet to the
first dropped one, the blocked share per second, and the (score, label) of every flow-window.
ROC-AUC / PR-AUC weight every capture equally (attack files hold far more rows than benign).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace as dc_replace
from typing import Callable, Sequence

import numpy as np

from services.detection.detect import DetectParams
from services.records.packet import Packet
from .replay import replay
from .training import LabelledCapture

METRICS = ("attack_packet_drop_share", "benign_packet_drop_share", "benign_flow_drop_share",
           "roc_auc", "pr_auc", "time_to_first_block_s", "detection_recall", "detection_fpr")


@dataclass(frozen=True)
class EvalConfig:
    window_s: float = 1.0
    reaction_s: float = 1.0
    params: DetectParams = DetectParams()


@dataclass
class ReplayStats:
    name: str
    kind: str
    counts: dict          # attack/benign packets and dropped, benign flows and dropped
    ttfb_s: float | None
    scores: np.ndarray
    labels: np.ndarray    # 1 = attack row
    weights: np.ndarray
    flagged: np.ndarray   # score >= threshold
    timeline: list        # [second, attack share blocked, benign share blocked]


def _shift(packets: Sequence[Packet], to_ns: int) -> list[Packet]:
    if not packets:
        return []
    d = to_ns - packets[0].ts_ns
    return [dc_replace(p, ts_ns=p.ts_ns + d) for p in packets]


def _renumber(packets: Sequence[Packet], index: int) -> list[Packet]:
    import ipaddress

    table: dict[str, str] = {}

    def new(addr: str) -> str:
        if addr not in table:
            n = len(table)
            if ipaddress.ip_address(addr).version == 4:
                table[addr] = f"10.{200 + index % 50}.{n // 250}.{n % 250 + 1}"
            else:
                table[addr] = f"fd00:0:{index:x}::{n + 1:x}"
        return table[addr]

    return [dc_replace(p, src=new(p.src), dst=new(p.dst)) for p in packets]


def run_replay(name: str, kind: str, parts: Sequence[LabelledCapture], detector, cfg: EvalConfig
               ) -> ReplayStats:
    """Merge `parts` (shifted to a common start), replay, measure."""
    t0 = 1_700_000_000 * 10**9
    tagged = []
    for i, c in enumerate(parts):
        att = c.label == "attack"
        pk = c.packets if att or len(parts) == 1 else _renumber(c.packets, i)
        tagged.extend((p, att) for p in _shift(pk, t0))
    tagged.sort(key=lambda x: x[0].ts_ns)
    packets = [p for p, _ in tagged]
    is_att = np.array([a for _, a in tagged], dtype=bool)
    res = replay(packets, detector, window_s=cfg.window_s, reaction_s=cfg.reaction_s,
                 params=cfg.params)
    drop = res.dropped
    flow_label: dict[tuple, bool] = {}
    benign_flows: dict[tuple, bool] = {}
    for p, a, d in zip(packets, is_att, drop):
        k = p.flow_key()
        flow_label[k] = flow_label.get(k, False) or bool(a)
        if not a:
            benign_flows[k] = benign_flows.get(k, False) or bool(d)
    counts = {"attack_packets": int(is_att.sum()), "attack_dropped": int((drop & is_att).sum()),
              "benign_packets": int((~is_att).sum()), "benign_dropped": int((drop & ~is_att).sum()),
              "benign_flows": len(benign_flows), "benign_flows_dropped": sum(benign_flows.values())}
    # the best any detector could do: block everything once the first attack window has
    # closed and the reaction time has passed
    if is_att.any():
        first_ts = packets[int(np.argmax(is_att))].ts_ns
        width = int(cfg.window_s * 1e9)
        ready = first_ts - first_ts % width + width + int(cfg.reaction_s * 1e9)
        att_ts = np.array([p.ts_ns for p, a in zip(packets, is_att) if a])
        counts["attack_blockable"] = int((att_ts >= ready).sum())
    else:
        counts["attack_blockable"] = 0
    ttfb = None
    if is_att.any() and (drop & is_att).any():
        first = packets[int(np.argmax(is_att))].ts_ns
        ttfb = (packets[int(np.argmax(drop & is_att))].ts_ns - first) / 1e9
    scores, labels = [], []
    for w in res.windows:
        scores.append(w.scores)
        labels.append([flow_label.get(k, False) for k in w.keys])
    scores = np.concatenate(scores) if scores else np.zeros(0)
    labels = np.concatenate(labels).astype(int) if labels else np.zeros(0, dtype=int)
    weights = np.zeros(len(labels))
    for lab in (0, 1):  # each replay contributes weight 1 per class present
        m = labels == lab
        if m.any():
            weights[m] = 1.0 / m.sum()
    secs = (np.array([p.ts_ns for p in packets]) - t0) // 10**9 if packets else np.zeros(0)
    timeline = []
    for s in np.unique(secs):
        m = secs == s
        a, b = m & is_att, m & ~is_att
        timeline.append([int(s), float(drop[a].mean()) if a.any() else None,
                         float(drop[b].mean()) if b.any() else None])
    flagged = scores >= detector.threshold
    return ReplayStats(name, kind, counts, ttfb, scores, labels, weights, flagged, timeline)


def _aucs(stats: Sequence[ReplayStats]) -> tuple[float | None, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.concatenate([s.labels for s in stats])
    if len(set(y.tolist())) < 2:
        return None, None
    sc = np.concatenate([s.scores for s in stats])
    w = np.concatenate([s.weights for s in stats])
    return float(roc_auc_score(y, sc, sample_weight=w)), float(average_precision_score(y, sc, sample_weight=w))


def _rates(stats: Sequence[ReplayStats]) -> dict:
    """Share of attack / benign flow-windows scored at or above the threshold (no timing: what
    the detector sees, before reaction time decides what the data plane can still stop)."""
    out = {}
    for name, lab in (("detection_recall", 1), ("detection_fpr", 0)):
        per = [float(np.mean(s.flagged[s.labels == lab])) for s in stats if (s.labels == lab).any()]
        out[name] = float(np.mean(per)) if per else None
    return out


def summarize(stats: Sequence[ReplayStats]) -> dict:
    c = defaultdict(int)
    for s in stats:
        for k, v in s.counts.items():
            c[k] += v
    roc, pr = _aucs(stats)
    det = _rates(stats)
    ttfb = [s.ttfb_s for s in stats if s.counts["attack_packets"]]
    return {
        "attack_packet_drop_share": c["attack_dropped"] / c["attack_packets"] if c["attack_packets"] else None,
        "attack_drop_upper_bound": c["attack_blockable"] / c["attack_packets"] if c["attack_packets"] else None,
        "benign_packet_drop_share": c["benign_dropped"] / c["benign_packets"] if c["benign_packets"] else None,
        "benign_flow_drop_share": c["benign_flows_dropped"] / c["benign_flows"] if c["benign_flows"] else None,
        "roc_auc": roc, "pr_auc": pr, **det,
        "time_to_first_block_s": (None if not ttfb or any(t is None for t in ttfb) else max(ttfb)),
        "counts": dict(c)}


def evaluate(test: Sequence[LabelledCapture], detector, cfg: EvalConfig = EvalConfig(), *,
             progress: Callable[[str], None] | None = None) -> dict:
    """Report dict: `overall`, `by_kind`, `by_file`, `merged`, `timelines`, `roc` (curve points)."""
    benign = [c for c in test if c.label == "benign" and c.packets]
    attack = [c for c in test if c.label == "attack" and c.packets]
    alone: list[ReplayStats] = []
    for c in benign + attack:
        if progress:
            progress(c.name)
        alone.append(run_replay(c.name, c.kind if c.label == "attack" else "benign", [c], detector, cfg))
    merged: list[ReplayStats] = []
    for c in attack:
        if progress:
            progress(f"benign + {c.name}")
        merged.append(run_replay(f"benign + {c.name}", c.kind, benign + [c], detector, cfg))
    b_alone = [s for s in alone if s.kind == "benign"]
    by_kind = {}
    for kind in sorted({c.kind for c in attack}):
        a = [s for s in alone if s.kind == kind]
        m = summarize([s for s in merged if s.kind == kind])
        k = summarize(a + b_alone)
        k["attack_packet_drop_share"] = summarize(a)["attack_packet_drop_share"]
        k["attack_drop_upper_bound"] = summarize(a)["attack_drop_upper_bound"]
        k["time_to_first_block_s"] = summarize(a)["time_to_first_block_s"]
        # collateral damage measured while this attack runs (merged replay)
        k["benign_packet_drop_share"] = m["benign_packet_drop_share"]
        k["benign_flow_drop_share"] = m["benign_flow_drop_share"]
        k["merged_attack_packet_drop_share"] = m["attack_packet_drop_share"]
        by_kind[kind] = k
    overall = summarize(alone)
    kinds = [v["attack_packet_drop_share"] for v in by_kind.values()]
    overall["attack_packet_drop_share_pooled"] = overall["attack_packet_drop_share"]
    overall["attack_packet_drop_share"] = float(np.mean(kinds)) if kinds else None
    overall["attack_packet_drop_share_min_kind"] = float(min(kinds)) if kinds else None
    bounds = [v["attack_drop_upper_bound"] for v in by_kind.values()]
    overall["attack_drop_upper_bound"] = float(np.mean(bounds)) if bounds else None
    mo = summarize(merged) if merged else {}
    overall["merged_benign_packet_drop_share"] = mo.get("benign_packet_drop_share")
    overall["merged_benign_flow_drop_share"] = mo.get("benign_flow_drop_share")
    return {
        "config": {"window_s": cfg.window_s, "reaction_s": cfg.reaction_s,
                   "params": cfg.params.__dict__, "model_id": getattr(detector, "model_id", "")},
        "overall": overall, "by_kind": by_kind,
        "by_file": {s.name: {**summarize([s]), "kind": s.kind} for s in alone},
        "merged": {s.name: {**summarize([s]), "kind": s.kind} for s in merged},
        "timelines": {s.name: s.timeline for s in alone if s.kind != "benign"},
        "_stats": alone,
    }
