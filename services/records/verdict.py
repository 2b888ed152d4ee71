"""The verdict record: what the scorer asks enforcers to do, and why.

A verdict carries the Rule it asks for (scope, action, TTL as the rule's expiry), the score and
threshold that triggered it, the model id, the event-time window it was computed over, the node
it is for (ALL_NODES for every enforcer) and a human-readable reason. `verdict_id` is unique per
(model, rule, window, node): a window re-scored after a worker failover yields the same id, so an
enforcer that remembers ids applies each verdict at most once.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from .rules import Rule

ALL_NODES = "*"
_LEGACY_ALL_NODES = ("", "all")  # older spellings of ALL_NODES, still accepted on input


def is_all_nodes(node: str) -> bool:
    """True when a verdict's `node` addresses every enforcer: ALL_NODES, or the legacy "" / "all"
    (producers write ALL_NODES; consumers accept all three)."""
    return node == ALL_NODES or node in _LEGACY_ALL_NODES


def targets(node_field: str, node_id: str) -> bool:
    """Whether a verdict or order whose `node` field is `node_field` is for the enforcer of
    node id `node_id`: every node (is_all_nodes) or that node by name."""
    return is_all_nodes(node_field) or node_field == node_id


def make_verdict_id(model_id: str, rule: Rule, window_start_ns: int, node: str) -> str:
    """Deterministic id: the same decision about the same window always has the same id."""
    text = f"{model_id}|{rule.key()}|{rule.action.value}|{window_start_ns}|{node}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Verdict:
    rule: Rule
    score: float
    threshold: float
    model_id: str
    window_start_ns: int
    window_end_ns: int
    node: str = ALL_NODES
    reason: str = ""
    created_ns: int = field(default_factory=time.time_ns)
    verdict_id: str = ""

    def __post_init__(self) -> None:
        if not self.verdict_id:
            object.__setattr__(self, "verdict_id", make_verdict_id(
                self.model_id, self.rule, self.window_start_ns, self.node))
