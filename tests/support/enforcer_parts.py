"""The enforcer's policy, map actuator and reconciler wired as the service wires them, over the
in-memory data plane (fake_dataplane.py) and rules topic (fake_rules_topic.py), for unit tests."""
from __future__ import annotations

import asyncio

from services.enforcer.actuator import MapActuator
from services.enforcer.learning import WouldApplyLedger
from services.enforcer.metrics import EnforcerMetrics
from services.enforcer.policy import Order, Outcome, RulePolicy, RulePolicyConfig
from services.enforcer.reconciler import RulesReconciler
from services.records.rules import Action, Rule, Scope
from services.records.verdict import Verdict
from tests.support.fake_dataplane import FakeDataplane, FakeMaps
from tests.support.fake_rules_topic import FakeRulesTopic

S = 1_000_000_000
T0 = 1_800_000_000 * S


class Parts:
    """An actuator wired as the service wires it, over fakes; `learning`: the would-apply
    ledger of learning mode (None: enforcing); `policy` overrides RulePolicyConfig fields."""

    def __init__(self, maps: FakeMaps | None = None, dry_run: bool = False,
                 learning: WouldApplyLedger | None = None, **policy) -> None:
        policy.setdefault("max_per_second", 10**6)
        policy.setdefault("max_per_minute", 10**6)
        self.dataplane = FakeDataplane(maps)
        self.maps = self.dataplane.maps
        self.topic = FakeRulesTopic()
        self.metrics = EnforcerMetrics()
        self.policy = RulePolicy(RulePolicyConfig(node_id="n1", **policy), self.maps.placement)
        self.reconciler = RulesReconciler(self.policy, self.topic, self.metrics, dry_run=dry_run,
                                          restore=True, deadletter=self.topic.deadletter,
                                          clock=lambda: T0)
        self.act = MapActuator(self.dataplane, self.dataplane.open(), 1, self.policy,
                               self.reconciler, self.metrics, dry_run=dry_run, clock=lambda: T0,
                               learning=learning)

    def verdict(self, rule: Rule, now: int = T0, ttl_s: float = 600,
                reason: str = "test") -> Outcome:
        """Decide on a verdict for `rule` at `now` and carry the decision out."""
        v = Verdict(rule=rule.with_times(now, ttl_s), score=-0.3, threshold=-0.1, model_id="m",
                    window_start_ns=now - S, window_end_ns=now, reason=reason, created_ns=now)
        d = self.policy.decide(Order(id=v.verdict_id, node=v.node, rule=v.rule, ttl_s=ttl_s), now)
        if d.outcome in (Outcome.APPLY, Outcome.REFRESH):
            asyncio.run(self.act.apply(d, v, now))
        return d.outcome

    def metric(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(f"xdpguard_enforcer_{name}", labels) or 0


def prefix(i: int) -> Rule:
    """A model drop rule for the source 203.0.113.i/32."""
    return Rule(Scope.SRC_PREFIX, Action.DROP, src=f"203.0.113.{i}/32")
