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
        self.restored = Counter(p + "rules_restored", "rules restored from the rules topic",
                                registry=r)
        self.dry_run = Counter(p + "dry_run_actions", "actions only logged (dry run)", registry=r)
        self.deadletters = Counter(p + "deadletters", "records sent to deadletter (undecodable, "
                                   "or not applicable to the maps)", registry=r)
        self.model_rules = Gauge(p + "model_rules", "model rules installed now", registry=r)
        self.occupancy = Gauge(p + "map_occupancy", "entries in each rule map", ["map"], registry=r)
        self.capacity = Gauge(p + "map_capacity", "capacity of each rule map", ["map"], registry=r)
        self.verdict_to_rule = Histogram(
            p + "verdict_to_rule_seconds", "verdict creation to rule installed", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
