"""Evaluation: replay held-out captures through the live logic and measure what a user lives with.

Replays (each on its own timestamps, `replay.Replayer`, streamed so a sustained flood of
millions of packets is never held in memory):
  - every capture alone: benign ones give the false alarms (per capture: the worst one counts,
    not only the mean), attack ones the catch rate and the time to first block; with
    `sustain_s` every attack capture is repeated back to back until it spans that long
    (folds.sustain: an attack that goes on, at the rate the capture shows);
  - per attack capture, ALL benign captures of the same test set merged with it (each shifted
    to start at the same instant; attacks as captured, not sustained): the collateral damage
    while an attack is going on. The addresses of each benign capture are renumbered into a
    space of its own (`_renumber`: fresh /24s in 100.64.0.0/10, host bits kept), or the overlay
    would fuse hosts that several captures share (the same phone's IPv6 address, every
    capture's 192.168.1.2) into one impossible host doing the work of five.
Measures per replay: attack/benign packet drop share, benign flow drop share (a flow = 5-tuple
over the replay, dropped if any of its packets was), time from the first attack packet to the
first dropped one, the blocked share per second, and the (score, label) of every flow-window.
ROC-AUC / PR-AUC weight every capture equally (attack files hold far more rows than benign).
`evaluate_folds` runs the whole of it per fold of a split by file (services.offline.folds).
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from services.detection.detect import DetectParams
from services.records.packet import Packet
from .folds import sustained
from .replay import Replayer
from .training import LabelledCapture

METRICS = ("attack_packet_drop_share", "benign_packet_drop_share", "benign_flow_drop_share",
           "roc_auc", "pr_auc", "time_to_first_block_s", "detection_recall", "detection_fpr")
T0 = 1_700_000_000 * 10**9


@dataclass(frozen=True)
class EvalConfig:
    window_s: float = 1.0
    reaction_s: float = 1.0
    params: DetectParams = DetectParams()
    sustain_s: float = 0.0     # attacks replayed alone are repeated until they span this long
    merged: bool = True        # also replay every attack over all benign captures


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
    rate_pps: float = 0.0  # attack packets per second as replayed
    rules: list = field(default_factory=list)  # reasons of the first rules (up to 5)
    first_drop_s: float | None = None  # first attack packet to the first one dropped


def _shifted(packets: Iterable[Packet], to_ns: int, index: int) -> Iterator[tuple[Packet, int]]:
    """(packet moved so the first one is at `to_ns`, index) for each packet."""
    d = None
    for p in packets:
        if d is None:
            d = to_ns - p.ts_ns
        yield p.replayed(ts_ns=p.ts_ns + d), index


def _renumber(packets: Sequence[Packet], index: int, prefixes: dict | None = None) -> list[Packet]:
    """The capture's addresses moved into a space of its own, keeping their structure: every
    /24 (IPv6: /64) gets a fresh one in 100.64.0.0/10 (fd00::/16), host bits kept, so hosts of
    two captures never fuse and a capture's peers spread over the Internet stay spread (the
    evidence counts targets per /24). `prefixes` (shared by the captures of one replay) hands
    out the fresh /24s in order.

    What an address is survives the move, since the evidence reads it (watch.is_group,
    detect._blockable): a multicast group goes to a group of a multicast range of its
    own (239.x.y.z, ff05::/16 with the fresh /64), still one group per capture, so the captures'
    discovery traffic neither turns unicast (a query to a host that never answers) nor fuses
    into one impossible LAN; the unspecified address (0.0.0.0, ::: a DHCP client before its
    lease) stays as it is, never a blockable source; 255.255.255.255 becomes the fresh /24's
    .255, a broadcast still."""
    import ipaddress

    prefixes = {} if prefixes is None else prefixes
    table: dict[str, str] = {}

    def new(addr: str) -> str:
        got = table.get(addr)
        if got is None:
            ip = ipaddress.ip_address(addr)
            if ip.is_unspecified:
                got = addr
            elif ip.version == 4:
                net = prefixes.setdefault((index, int(ip) >> 8), len(prefixes))
                fresh = (239 << 24 | net % 65536 << 8) if ip.is_multicast else \
                    (100 << 24 | 64 << 16 | net % 16384 << 8)
                got = str(ipaddress.IPv4Address(fresh | int(ip) & 0xFF))
            else:
                net = prefixes.setdefault((index, int(ip) >> 64), len(prefixes))
                top = 0xFF05 if ip.is_multicast else 0xFD00
                host = int(ip) & (2**64 - 1)
                got = str(ipaddress.IPv6Address((top << 112) + (net << 64) + host))
            table[addr] = got
        return got

    return [p.replayed(src=new(p.src), dst=new(p.dst)) for p in packets]


class _Tally:
    """Running counts of one replay, fed packet by packet."""

    def __init__(self, width_ns: int, reaction_ns: int) -> None:
        self.c = {k: 0 for k in ("attack_packets", "attack_dropped", "attack_blockable",
                                 "benign_packets", "benign_dropped")}
        self.width, self.reaction = width_ns, reaction_ns
        self.first_att = self.first_drop = self.first_rule = self.ready = None
        self.benign_flows: dict[tuple, bool] = {}
        self.attack_flows: set[tuple] = set()
        self.secs: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # att, att drop, ben, ben drop

    def add(self, p: Packet, att: bool, dropped: bool, rule_from: int | None = None) -> None:
        """One replayed packet: attack or benign, dropped or not (by the rule in force from
        `rule_from`, ns)."""
        c, sec = self.c, self.secs[(p.ts_ns - T0) // 10**9]
        if att:
            c["attack_packets"] += 1
            sec[0] += 1
            if self.first_att is None:
                self.first_att = p.ts_ns
                self.ready = p.ts_ns - p.ts_ns % self.width + self.width + self.reaction
            c["attack_blockable"] += p.ts_ns >= self.ready
            self.attack_flows.add(p.flow_key())
            if dropped:
                c["attack_dropped"] += 1
                sec[1] += 1
                if self.first_drop is None:
                    self.first_drop, self.first_rule = p.ts_ns, rule_from
        else:
            c["benign_packets"] += 1
            sec[2] += 1
            k = p.flow_key()
            self.benign_flows[k] = self.benign_flows.get(k, False) or dropped
            if dropped:
                c["benign_dropped"] += 1
                sec[3] += 1


def run_replay(name: str, kind: str, parts: Sequence[LabelledCapture], detector, cfg: EvalConfig,
               sustain_s: float = 0.0) -> ReplayStats:
    """Merge `parts` (shifted to a common start; attacks sustained to `sustain_s`), replay,
    measure."""
    streams, prefixes = [], {}
    for i, c in enumerate(parts):
        att = c.label == "attack"
        pk = c.packets if att or len(parts) == 1 else _renumber(c.packets, i, prefixes)
        if att and sustain_s:
            pk = sustained(pk, sustain_s)
        streams.append(_shifted(pk, T0, i))
    attack = [c.label == "attack" for c in parts]
    r = Replayer(detector, window_s=cfg.window_s, reaction_s=cfg.reaction_s, params=cfg.params)
    t = _Tally(int(cfg.window_s * 1e9), int(cfg.reaction_s * 1e9))
    last = T0
    for p, i in heapq.merge(*streams, key=lambda x: x[0].ts_ns):
        t.add(p, attack[i], r.feed(p), r.enforcer.matched_from)
        last = p.ts_ns
    r.finish()
    c = t.c
    c["benign_flows"] = len(t.benign_flows)
    c["benign_flows_dropped"] = sum(t.benign_flows.values())
    # time to first block: from the first attack packet until the rule that first dropped an
    # attack packet was in force (a capture with a pause shows its first drop only later)
    first_drop = (t.first_drop - t.first_att) / 1e9 if t.first_drop is not None else None
    ttfb = None if first_drop is None else max(0, t.first_rule - t.first_att) / 1e9
    scores = [w.scores for w in r.windows]
    labels = [[k in t.attack_flows for k in w.keys] for w in r.windows]
    scores = np.concatenate(scores) if scores else np.zeros(0)
    labels = np.concatenate(labels).astype(int) if labels else np.zeros(0, dtype=int)
    weights = np.zeros(len(labels))
    for lab in (0, 1):  # each replay contributes weight 1 per class present
        m = labels == lab
        if m.any():
            weights[m] = 1.0 / m.sum()
    timeline = [[s, v[1] / v[0] if v[0] else None, v[3] / v[2] if v[2] else None]
                for s, v in sorted(t.secs.items())]
    span = (last - t.first_att) / 1e9 if t.first_att is not None else 0.0
    rate = (c["attack_packets"] - 1) / span if span > 0 else 0.0
    rules = [sg.reason for w in r.windows for sg in w.suggestions][:5]
    return ReplayStats(name, kind, dict(c), ttfb, scores, labels, weights,
                       scores >= detector.threshold, timeline, rate, rules, first_drop)


def _aucs(stats: Sequence[ReplayStats]) -> tuple[float | None, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.concatenate([s.labels for s in stats]) if stats else np.zeros(0)
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


def _share(a: int, b: int) -> float | None:
    return a / b if b else None


def summarize(stats: Sequence[ReplayStats]) -> dict:
    """Pooled counts, drop shares, AUCs, detection rates and the slowest first block of a set
    of replays (None where a share has no packets)."""
    c = defaultdict(int)
    for s in stats:
        for k, v in s.counts.items():
            c[k] += v
    roc, pr = _aucs(stats)
    ttfb = [s.ttfb_s for s in stats if s.counts.get("attack_packets")]
    return {
        "attack_packet_drop_share": _share(c["attack_dropped"], c["attack_packets"]),
        "attack_drop_upper_bound": _share(c["attack_blockable"], c["attack_packets"]),
        "benign_packet_drop_share": _share(c["benign_dropped"], c["benign_packets"]),
        "benign_flow_drop_share": _share(c["benign_flows_dropped"], c["benign_flows"]),
        "roc_auc": roc, "pr_auc": pr, **_rates(stats),
        "time_to_first_block_s": (None if not ttfb or any(t is None for t in ttfb) else max(ttfb)),
        "counts": dict(c)}


def _replay_all(test: Sequence[LabelledCapture], detector, cfg: EvalConfig,
                progress: Callable[[str], None] | None) -> tuple[list, list]:
    benign = [c for c in test if c.label == "benign" and c.packets]
    attack = [c for c in test if c.label == "attack" and c.packets]
    alone, merged = [], []
    for c in benign + attack:
        if progress:
            progress(c.name)
        att = c.label == "attack"
        alone.append(run_replay(c.name, c.kind if att else "benign", [c], detector, cfg,
                                cfg.sustain_s if att else 0.0))
    if cfg.merged and benign:
        for c in attack:
            if progress:
                progress(f"benign + {c.name}")
            merged.append(run_replay(f"benign + {c.name}", c.kind, benign + [c], detector, cfg))
    return alone, merged


def report(alone: Sequence[ReplayStats], merged: Sequence[ReplayStats], cfg: EvalConfig,
           model_id: str) -> dict:
    """The report dict of a set of replays (see `evaluate`)."""
    b_alone = [s for s in alone if s.kind == "benign"]
    by_kind = {}
    for kind in sorted({s.kind for s in alone if s.kind != "benign"}):
        a = [s for s in alone if s.kind == kind]
        k = summarize(a + b_alone)
        sa = summarize(a)
        for m in ("attack_packet_drop_share", "attack_drop_upper_bound", "time_to_first_block_s"):
            k[m] = sa[m]
        k["files"] = len(a)
        k["rate_pps_min"] = min(s.rate_pps for s in a)
        k["attack_packet_drop_share_min_file"] = min(
            (s.counts["attack_dropped"] / s.counts["attack_packets"] for s in a), default=None)
        m = summarize([s for s in merged if s.kind == kind]) if merged else {}
        k["merged_benign_packet_drop_share"] = m.get("benign_packet_drop_share")
        k["merged_benign_flow_drop_share"] = m.get("benign_flow_drop_share")
        by_kind[kind] = k
    overall = summarize(alone)
    goal_kinds = {k: v for k, v in by_kind.items() if v["rate_pps_min"] >= 5}
    kinds = [v["attack_packet_drop_share"] for v in goal_kinds.values()]
    overall["attack_packet_drop_share_pooled"] = overall["attack_packet_drop_share"]
    overall["attack_packet_drop_share"] = float(np.mean(kinds)) if kinds else None
    overall["attack_packet_drop_share_min_kind"] = float(min(kinds)) if kinds else None
    ttfb = [v["time_to_first_block_s"] for v in goal_kinds.values()]
    overall["time_to_first_block_s"] = None if not ttfb or None in ttfb else max(ttfb)
    per = sorted(((s.counts["benign_dropped"] / s.counts["benign_packets"], s.name) for s in b_alone
                  if s.counts.get("benign_packets")), reverse=True)
    overall["benign_captures"] = len(per)
    overall["worst_benign_capture"] = {"name": per[0][1], "share": per[0][0]} if per else None
    overall["benign_captures_over_1pct"] = sum(v > 0.01 for v, _ in per)
    overall["benign_captures_with_drops"] = sum(v > 0 for v, _ in per)
    mo = summarize(merged) if merged else {}
    overall["merged_benign_packet_drop_share"] = mo.get("benign_packet_drop_share")
    overall["merged_benign_flow_drop_share"] = mo.get("benign_flow_drop_share")
    return {
        "config": {"window_s": cfg.window_s, "reaction_s": cfg.reaction_s, "sustain_s": cfg.sustain_s,
                   "params": cfg.params.__dict__, "model_id": model_id},
        "overall": overall, "by_kind": by_kind,
        "by_file": {s.name: {**summarize([s]), "kind": s.kind, "rate_pps": s.rate_pps,
                             "rules": s.rules, "first_drop_s": s.first_drop_s} for s in alone},
        "merged": {s.name: {**summarize([s]), "kind": s.kind} for s in merged},
        "timelines": {s.name: s.timeline for s in alone if s.kind != "benign"},
        "_stats": list(alone),
    }


def evaluate(test: Sequence[LabelledCapture], detector, cfg: EvalConfig = EvalConfig(), *,
             progress: Callable[[str], None] | None = None) -> dict:
    """Report dict: `overall`, `by_kind`, `by_file`, `merged`, `timelines`, `_stats`."""
    alone, merged = _replay_all(test, detector, cfg, progress)
    return report(alone, merged, cfg, getattr(detector, "model_id", ""))


def evaluate_folds(captures: Sequence[LabelledCapture], folds: dict[str, int], train: Callable,
                   cfg: EvalConfig = EvalConfig(), *,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Split by file: for each fold, `train(benign captures of the other folds)` -> detector,
    then replay the fold's captures with it. One report over all folds, plus `folds` (which
    file is in which fold, and each fold's model id and threshold)."""
    alone, merged, info = [], [], []
    for f in sorted(set(folds.values())):
        held = [c for c in captures if folds[c.name] == f]
        rest = [c for c in captures if folds[c.name] != f and c.label == "benign"]
        if progress:
            progress(f"fold {f}: training on {len(rest)} benign captures")
        det = train(rest)
        a, m = _replay_all(held, det, cfg, progress)
        alone += a
        merged += m
        info.append({"fold": f, "model_id": getattr(det, "model_id", ""),
                     "threshold": float(det.threshold), "trained_on": len(rest),
                     "files": sorted(c.name for c in held)})
    rep = report(alone, merged, cfg, "per fold (see folds)")
    rep["folds"] = info
    return rep
