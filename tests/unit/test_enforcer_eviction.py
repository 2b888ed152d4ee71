"""Making room in a full map (helper-44's review, finding 1): the policy keeps model rules grouped
by where the maps hold them (RuleMaps.placement), so a MapFull asks frees_room only of the rules
in the new rule's map (and, for a host rule, of those in its inline slot), never of every model
rule: with 50,000 model rules that scan blocked the event loop for seconds on each MapFull."""
from __future__ import annotations

import time

from services.dataplane.hostslots import rule_placement
from services.enforcer.policy import Outcome, RulePolicy, RulePolicyConfig
from services.records.rules import Action, Rule, Scope
from tests.support.enforcer_parts import S, T0, Parts, prefix
from tests.support.fake_dataplane import FakeMaps


def model(rule: Rule, i: int) -> Rule:
    return rule.with_times(T0 + i * S, 600)


def test_a_full_map_asks_frees_room_only_of_rules_in_that_map():
    """20,000 older model rules in another map: one frees_room call, not 20,001."""
    p = Parts(FakeMaps(capacity=1, pool=lambda r: "full" if r.src.startswith("198.") else "other"))
    for i in range(20_000):  # tracked, as restored at start (the fake holds them nowhere)
        p.policy.track(model(Rule(Scope.FLOW, Action.DROP, src=f"10.0.{i >> 8}.{i & 255}",
                                  dst="192.0.2.1", proto=6, dport=22), i))
    assert p.verdict(Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.1/32"),
                     now=T0 + 30_000 * S) is Outcome.APPLY
    p.maps.frees_asked = 0
    assert p.verdict(Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.2/32"),
                     now=T0 + 30_001 * S) is Outcome.APPLY
    assert p.maps.frees_asked == 1
    assert p.metric("rules_evicted_total") == 1
    assert "198.51.100.1/32" not in {r.src for r in p.policy.installed()}


def rules_of_every_map(n: int) -> list[Rule]:
    """n model rules spread over every rule map (exact4/6, host4/6, prefix4/6, dst_limit)."""
    out = []
    for i in range(n):
        a, b = i >> 8 & 255, i & 255
        kind = i % 7
        if kind == 0:
            r = Rule(Scope.FLOW, Action.DROP, src=f"10.1.{a}.{b}", dst="192.0.2.1", proto=6, dport=22)
        elif kind == 1:
            r = Rule(Scope.FLOW, Action.DROP, src=f"fd00::1:{i:x}", dst="fd00::2", proto=6, dport=22)
        elif kind == 2:
            r = Rule(Scope.SRC_PREFIX, Action.DROP, src=f"10.2.{a}.{b}/32")
        elif kind == 3:
            r = Rule(Scope.SRC_PREFIX, Action.DROP, src=f"fd00::3:{i:x}/128")
        elif kind == 4:
            r = Rule(Scope.SRC_PREFIX, Action.DROP, src=f"10.{a}.{b}.0/24")
        elif kind == 5:
            r = Rule(Scope.SRC_PREFIX, Action.DROP, src=f"fd00:{i:x}::/64")
        else:
            r = Rule(Scope.DST_LIMIT, Action.LIMIT, dst=f"192.0.{a}.{b}", proto=6, dport=80,
                     rate_pps=100)
        out.append(model(r, i))
    return out


def test_with_the_data_planes_placement_only_the_rules_that_can_free_room_are_asked():
    """Real placement (hostslots.rule_placement): an exact rule's eviction asks only the exact
    rules of its family; a host rule's asks its family's host rules and the hosts of the other
    family in its inline slot (the set frees_room can say yes to), oldest first."""
    rules = rules_of_every_map(14_000)
    p = RulePolicy(RulePolicyConfig(node_id="n1"), rule_placement)
    for r in rules:
        p.track(r)
    for new in (Rule(Scope.FLOW, Action.DROP, src="fd00::9", dst="fd00::2", proto=17, dport=53),
                Rule(Scope.SRC_PREFIX, Action.DROP, src="fd00::9:1/128"),
                Rule(Scope.SRC_PREFIX, Action.DROP, src="10.9.9.9/32"),
                Rule(Scope.SRC_PREFIX, Action.DROP, src="10.9.9.0/24")):
        asked: list[Rule] = []
        started = time.perf_counter()
        assert p.evict_for_full_map(new, lambda v: asked.append(v) or False) is None
        took = time.perf_counter() - started
        name, slot = rule_placement(new)
        want = [r for r in rules if rule_placement(r)[0] == name
                or slot >= 0 and rule_placement(r)[1] == slot]
        assert asked == sorted(want, key=lambda r: r.created_ns)
        assert len(asked) <= 2_000 + 10, (new, len(asked))  # one map's 2,000 (+ a slot's few)
        assert took < 0.5, took
    # the oldest that frees room is the one returned, and a rule that left is never asked
    exact6 = [r for r in rules if rule_placement(r)[0] == "exact6"]
    p.untrack(exact6[0])
    got = p.evict_for_full_map(Rule(Scope.FLOW, Action.DROP, src="fd00::9", dst="fd00::2"),
                               lambda v: True)
    assert got == exact6[1]


def test_evict_delete_and_retry_happen_under_one_hold_of_the_pin_lock():
    """Finding 2: the eviction's delete and the retried add are made inside maps.locked(), so
    another writer cannot take the room in between; the lock is released afterwards."""
    p = Parts(FakeMaps(capacity=1))
    assert p.verdict(prefix(1)) is Outcome.APPLY
    assert p.maps.writes_locked == [True]
    assert p.verdict(prefix(2), now=T0 + S) is Outcome.APPLY
    assert p.maps.writes[1:] == [("delete", prefix(1).key()), ("add", prefix(2).key())]
    assert p.maps.writes_locked == [True, True, True] and p.maps.lock_depth == 0
    assert [k for what, k in p.topic.log if what == "tombstone"] == [prefix(1).key()]
    assert p.metric("rules_evicted_total") == 1


def test_the_actuator_recounts_the_maps_at_start_unless_in_dry_run():
    """Finding 3: the service calls actuator.recount() at start (the slot directory rebuilt)."""
    p = Parts()
    p.act.recount()
    assert p.maps.recounts == 1
    dry = Parts(dry_run=True)
    dry.act.recount()
    assert dry.maps.recounts == 0
    import inspect
    from services.enforcer.service import Enforcer
    start = inspect.getsource(Enforcer.start)
    assert start.index("self.actuator.recount()") < start.index("reconciler.restore")


def test_the_placement_read_from_the_rules_text_is_the_map_keys_one():
    """rule_placement (the rule's canonical text) equals _placed (built from the map key) for
    every kind of rule, v4-mapped sources and the host / prefix boundaries included."""
    from services.dataplane.hostslots import _placed
    rules = rules_of_every_map(700) + [
        Rule(Scope.SRC_PREFIX, Action.DROP, src=s) for s in (
            "::ffff:10.1.2.3/128", "::ffff:10.1.2.0/120", "10.1.2.3/31", "0.0.0.0/0", "fd00::/32",
            "fd00::1/127", "2001:db8::1/128", "::ffff:0:0/96", "1.2.3.4/32")] + [
        Rule(Scope.FLOW, Action.DROP, src="::ffff:10.0.0.1", dst="10.0.0.2", proto=17),
        Rule(Scope.FLOW, Action.PASS, src="fd00::1", dst="fd00::2", proto=6, dport=443)]
    for r in rules:
        assert rule_placement(r) == _placed(r)[::2], r
