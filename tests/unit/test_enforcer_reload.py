"""A program loaded again under a running enforcer: the enforcer re-opens the maps and puts its
rules back, also when it looks in the middle of the load (config map pinned, program not yet),
which used to crash it (CI: "service failed: unhandled errors in a TaskGroup")."""
from __future__ import annotations

import logging
import time

from services.common.errors import NotLoaded
from services.enforcer.actuator import MapActuator
from services.enforcer.metrics import EnforcerMetrics
from services.enforcer.policy import RulePolicy, RulePolicyConfig
from services.enforcer.reconciler import RulesReconciler
from services.records.rules import Action, Origin, Rule, Scope
from tests.support.fake_dataplane import FakeDataplane
from tests.support.fake_rules_topic import FakeRulesTopic

NOW = time.time_ns()


def actuator(dp: FakeDataplane, policy: RulePolicy, dry_run: bool = False) -> MapActuator:
    metrics = EnforcerMetrics()
    topic = FakeRulesTopic()
    journal = RulesReconciler(policy, topic, metrics, dry_run=dry_run, restore=True,
                              deadletter=topic.deadletter, clock=lambda: NOW)
    return MapActuator(dp, dp.open(), dp.maps_id(), policy, journal, metrics, dry_run=dry_run,
                       clock=lambda: NOW)


def tracked_policy() -> tuple[RulePolicy, list[Rule]]:
    policy = RulePolicy(RulePolicyConfig(node_id="n1", allowlist=("127.0.0.0/8",)))
    rules = [Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24").with_times(NOW, 600),
             Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.0/15",
                  origin=Origin.MANUAL).with_times(NOW, 600)]
    for rule in rules:
        policy.track(rule)
    return policy, rules


def test_a_reload_seen_half_done_is_retried_not_a_crash(caplog):
    dp = FakeDataplane(maps_id=10)
    policy, rules = tracked_policy()
    act = actuator(dp, policy)
    old, opened_at_start = act.maps, dp.opened
    new = dp.reload()  # a new config map is pinned (id 11) ...
    dp.open_errors = [NotLoaded("no xdpguard program pinned"), NotLoaded("still")]  # ... no prog
    with caplog.at_level(logging.WARNING, logger="xdpguard.enforcer"):
        act.check_reload()  # program not pinned yet: keep the old, no crash
        act.check_reload()  # still loading: retried, not said again
        assert act.maps is old and act.maps_id == 10 and not old.closed
        assert sum("cannot be opened yet" in r.message for r in caplog.records) == 1
        act.check_reload()  # fully loaded: opened, every rule put back
    assert act.maps is new and old.closed and act.maps_id == 11
    assert list(new.installed.values()) == rules and new.allowed == ["127.0.0.0/8"]
    assert act.metrics.registry.get_sample_value("xdpguard_enforcer_rules_restored_total") == 2
    assert dp.opened - opened_at_start == 3
    act.check_reload()  # same maps: nothing to do
    assert dp.opened - opened_at_start == 3


def test_a_reload_skips_expired_rules_and_in_dry_run_writes_nothing():
    dp = FakeDataplane(maps_id=10)
    policy, rules = tracked_policy()
    gone = Rule(Scope.SRC_PREFIX, Action.DROP, src="192.0.2.128/25").with_times(NOW - 10**10, 1)
    policy.track(gone)
    act = actuator(dp, policy)
    new = dp.reload()
    act.check_reload()
    assert set(new.installed) == {r.key() for r in rules}

    dry = FakeDataplane(maps_id=10)
    act = actuator(dry, tracked_policy()[0], dry_run=True)
    new = dry.reload()
    act.check_reload()
    assert act.maps is new and new.writes == [] and new.allowed == []
