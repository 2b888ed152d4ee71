"""The enforcer's Prometheus metrics, in a registry of their own (one per service instance)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EnforcerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "xdpguard_enforcer_"
        self.verdicts = Counter(p + "verdicts", "verdicts seen, by outcome", ["outcome"], registry=r)
        self.applied = Counter(p + "rules_applied", "model rules installed", registry=r)
        self.refreshed = Counter(p + "rules_refreshed", "installed rules whose TTL was extended",
                                 registry=r)
        self.refused = Counter(p + "rules_refused", "verdicts refused by the policy, by reason",
                               ["reason"], registry=r)
        self.expired = Counter(p + "rules_expired", "rules removed at expiry (and tombstoned)",
                               registry=r)
        self.evicted = Counter(p + "rules_evicted", "model rules evicted to stay within bounds",
                               registry=r)
        self.kept_manual = Counter(p + "rules_replaced_by_manual", "tracked model rules found "
                                   "replaced by a manual rule (xdpguard add) before the sweep "
                                   "mirrored it: untracked, the manual rule kept", registry=r)
        self.restored = Counter(p + "rules_restored", "rules restored from the rules topic",
                                registry=r)
        self.dry_run = Counter(p + "dry_run_actions", "actions only logged (dry run)", registry=r)
        self.deadletters = Counter(p + "deadletters", "records sent to deadletter (undecodable, "
                                   "or not applicable to the maps)", registry=r)
        self.model_rules = Gauge(p + "model_rules", "model rules installed now", registry=r)
        self.occupancy = Gauge(p + "map_occupancy", "entries in each rule map", ["map"], registry=r)
        self.capacity = Gauge(p + "map_capacity", "capacity of each rule map", ["map"], registry=r)
        # learning mode (learning.py): what the model would have done, by rule action and scope
        self.learning_active = Gauge(p + "learning_active", "1 while in learning mode (model "
                                     "rules only logged), else 0", registry=r)
        self.learning_ends = Gauge(p + "learning_ends_timestamp_seconds", "end of the learning "
                                   "period (ENFORCER_LEARN_UNTIL), Unix seconds; 0 = none",
                                   registry=r)
        self.would_apply = Counter(p + "learning_would_apply", "model rules that would have been "
                                   "installed (not written: learning mode)", ["action", "scope"],
                                   registry=r)
        self.learning_verdicts = Counter(p + "learning_verdicts", "verdicts the policy accepted "
                                         "but learning mode only logged (repeats included)",
                                         ["action", "scope"], registry=r)
        self.would_apply_rules = Gauge(p + "learning_would_apply_rules", "rules that would be "
                                       "installed now (learning mode)", ["action", "scope"],
                                       registry=r)
        self.would_apply_seconds = Counter(p + "learning_would_apply_seconds", "seconds the "
                                           "would-apply rules would have been installed, counted "
                                           "as each ends", ["action", "scope"], registry=r)
        self.verdict_to_rule = Histogram(
            p + "verdict_to_rule_seconds", "verdict creation to rule installed", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
