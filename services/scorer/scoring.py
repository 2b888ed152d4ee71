"""Closed windows -> one batched model call -> detect's rule suggestions -> verdicts. Pure.

All windows closed in one timer tick are scored with ONE `score_rows` call (the model's cost is
per call as much as per row), then each window's scores, its evidence (dst_windows.DstPartition
computed it) and its partition's escalation memory go through services.detection.detect. The
model's evidence bounds reach the decision through the windows `score_windows` scored.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from services.detection.detect import DetectParams, suggest
from services.detection.features import FEATURE_NAMES, WindowState
from services.records.rules import Action, Rule, Scope
from services.records.verdict import ALL_NODES, Verdict

from .dst_windows import ClosedWindow


@dataclass(frozen=True)
class VerdictPolicy:
    """How the scorer turns suggestions into verdicts: detection parameters (`params`), whether
    flows below the threshold get pass verdicts (`emit_pass`, with a TTL of `pass_ttl_s`
    seconds), and whether exact-flow verdicts go to the capturing node only (`target_origin`)."""
    params: DetectParams = field(default_factory=DetectParams)
    emit_pass: bool = False      # pass verdicts for flows below threshold
    pass_ttl_s: float = 60.0
    target_origin: bool = False  # exact-flow verdicts go to the capturing node only


def score_batch(detector, windows: Sequence[ClosedWindow]) -> list[np.ndarray]:
    """Scores of every window's rows, from a single model call."""
    sizes = [len(w.matrix) for w in windows]
    if sum(sizes) == 0:
        return [np.zeros(0) for _ in windows]
    X = np.concatenate([w.matrix for w in windows]).reshape(sum(sizes), len(FEATURE_NAMES))
    scores = np.asarray(detector.score_rows(X), dtype=np.float64)
    return np.split(scores, np.cumsum(sizes)[:-1])


def score_windows(detector, windows: Sequence[ClosedWindow]) -> list[np.ndarray]:
    """The scores of every window's rows from one model call; each window also gets the
    model's evidence bounds (`bounds`) for verdicts_for."""
    bounds = getattr(detector, "evidence", None)
    for w in windows:
        w.bounds = bounds
    return score_batch(detector, windows)


def verdicts_for(window: ClosedWindow, scores: np.ndarray, *, threshold: float, model_id: str,
                 policy: VerdictPolicy, now_ns: int | None = None, bounds=None,
                 memory=None) -> list[Verdict]:
    """Verdicts of one scored window: detect.suggest with the window's evidence, `memory`
    (default: the window's partition's escalation memory; a shadow model passes a copy) and
    `bounds` (default: those `score_windows` left on the window)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    state = WindowState(window.window_ns)
    state.flows = window.flows  # all suggest reads of the state
    out = []
    for s in suggest(state, window.keys, scores, threshold, window_end_ns=window.end_ns,
                     params=policy.params, bounds=bounds if bounds is not None else window.bounds,
                     evidence=window.evidence,
                     memory=memory if memory is not None else window.memory):
        node = ALL_NODES
        if policy.target_origin and s.rule.scope is Scope.FLOW:
            node = window.nodes.get(_flow_key(s.rule), ALL_NODES) or ALL_NODES
        out.append(Verdict(rule=s.rule, score=s.score, threshold=threshold, model_id=model_id,
                           window_start_ns=window.window_ns, window_end_ns=window.end_ns,
                           node=node, reason=s.reason, created_ns=now_ns))
    if policy.emit_pass:
        for key, score in zip(window.keys, scores):
            if score >= threshold:
                continue
            src, dst, sport, dport, proto = key
            rule = Rule(Scope.FLOW, Action.PASS, src=src, dst=dst, sport=sport, dport=dport,
                        proto=proto).with_times(window.end_ns, policy.pass_ttl_s)
            node = (window.nodes.get(key) or ALL_NODES) if policy.target_origin else ALL_NODES
            out.append(Verdict(rule=rule, score=float(score), threshold=threshold,
                               model_id=model_id, window_start_ns=window.window_ns,
                               window_end_ns=window.end_ns, node=node,
                               reason=f"score {score:.3f} < {threshold:.3f}", created_ns=now_ns))
    return out


def _flow_key(rule: Rule) -> tuple:
    return (rule.src, rule.dst, rule.sport, rule.dport, rule.proto)
