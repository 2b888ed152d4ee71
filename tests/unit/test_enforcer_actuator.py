"""The map actuator over an in-memory data plane: decisions carried out on the maps and recorded
in the rules topic, a full map making room by evicting the oldest model rule (never a manual one),
dry run writing nothing, expiry removing and tombstoning, the allowlist kept in the kernel, and
the occupancy gauges."""
from __future__ import annotations

import asyncio

from services.enforcer.policy import Outcome
from services.records.rules import Action, Origin, Rule, Scope
from tests.support.enforcer_parts import S, T0, Parts, prefix
from tests.support.fake_dataplane import FakeMaps


def test_applied_rules_are_in_the_maps_and_recorded_in_the_topic():
    p = Parts()
    assert p.verdict(prefix(1)) is Outcome.APPLY
    rule = p.maps.installed[prefix(1).key()]
    assert rule.origin is Origin.MODEL and rule.expires_ns == T0 + 600 * S
    assert p.topic.log == [("applied", prefix(1).key())]
    assert p.topic.records[prefix(1).key()].rule == rule
    assert p.metric("rules_applied_total") == 1
    assert p.verdict(prefix(1), now=T0 + 400 * S) is Outcome.REFRESH  # past half its TTL
    assert p.maps.installed[prefix(1).key()].expires_ns == T0 + 1000 * S
    assert p.metric("rules_refreshed_total") == 1 and p.metric("rules_applied_total") == 1


def test_a_full_map_evicts_the_oldest_model_rule_and_never_a_manual_one():
    manual = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.0/15", origin=Origin.MANUAL)
    p = Parts(FakeMaps(capacity=3))
    p.maps.add_rule(manual)
    p.policy.track(manual)
    for i in range(4):
        assert p.verdict(prefix(i), now=T0 + i * S) is Outcome.APPLY
    # room for two model rules beside the manual one: the two oldest made room, oldest first
    assert set(p.maps.installed) == {manual.key(), prefix(2).key(), prefix(3).key()}
    assert [k for what, k in p.topic.log if what == "tombstone"] == [prefix(0).key(),
                                                                      prefix(1).key()]
    assert p.metric("rules_evicted_total") == 2 and p.metric("rules_applied_total") == 4

    only_manual = Parts(FakeMaps(capacity=1))
    only_manual.maps.add_rule(manual)
    only_manual.policy.track(manual)
    only_manual.verdict(prefix(9))
    assert set(only_manual.maps.installed) == {manual.key()} and only_manual.topic.log == []
    assert only_manual.metric("rules_refused_total", reason="map_full") == 1
    assert prefix(9).key() not in {r.key() for r in only_manual.policy.installed()}


def test_a_full_map_evicts_only_rules_that_sit_in_it():
    """Two maps of 2 rules each (even and odd last byte): when the odd one is full, the oldest
    model rule in it goes, not the older ones of the even map, whose eviction frees nothing
    for the new rule."""
    p = Parts(FakeMaps(capacity=2, pool=lambda r: str(int(r.src.split(".")[3].split("/")[0]) % 2)))
    for i in (0, 2, 1, 3, 5):  # evens first: the two oldest rules are in the even map
        assert p.verdict(prefix(i), now=T0 + i * S) is Outcome.APPLY
    assert set(p.maps.installed) == {prefix(i).key() for i in (0, 2, 3, 5)}
    assert [k for what, k in p.topic.log if what == "tombstone"] == [prefix(1).key()]
    assert p.metric("rules_evicted_total") == 1 and p.metric("rules_applied_total") == 5
    assert {r.key() for r in p.policy.installed()} == set(p.maps.installed)

    manual = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.1/32", origin=Origin.MANUAL)
    only_other = Parts(FakeMaps(capacity=1, pool=lambda r: "manual" if r.origin is Origin.MANUAL
                                                         or r.src.endswith(".7/32") else "model"))
    only_other.maps.add_rule(manual)
    only_other.policy.track(manual)
    only_other.verdict(prefix(1))  # the model map: room
    only_other.verdict(prefix(7), now=T0 + S)  # the manual rule's map: nothing evictable frees it
    assert set(only_other.maps.installed) == {manual.key(), prefix(1).key()}
    assert only_other.metric("rules_refused_total", reason="map_full") == 1
    assert only_other.metric("rules_evicted_total") == 0


def test_the_model_rule_bound_evicts_before_the_map_is_full():
    p = Parts(max_model_rules=2)
    for i in range(3):
        p.verdict(prefix(i), now=T0 + i * S)
    assert set(p.maps.installed) == {prefix(1).key(), prefix(2).key()}
    assert ("tombstone", prefix(0).key()) in p.topic.log and p.metric("rules_evicted_total") == 1


def test_dry_run_decides_the_same_and_writes_nothing():
    p = Parts(dry_run=True, max_model_rules=1)
    assert p.verdict(prefix(1)) is Outcome.APPLY
    assert p.verdict(prefix(2), now=T0 + S) is Outcome.APPLY  # would evict prefix(1)
    assert p.maps.writes == [] and p.topic.log == []
    assert [r.key() for r in p.policy.installed()] == [prefix(2).key()]
    assert p.metric("dry_run_actions_total") == 2
    asyncio.run(p.act.expire(T0 + 3600 * S))
    assert p.maps.writes == [] and p.policy.installed() == []


def test_expired_rules_leave_the_maps_and_are_tombstoned():
    p = Parts()
    p.verdict(prefix(1), ttl_s=2)
    p.verdict(prefix(2), ttl_s=600)
    asyncio.run(p.act.expire(T0 + 1 * S))
    assert set(p.maps.installed) == {prefix(1).key(), prefix(2).key()}
    asyncio.run(p.act.expire(T0 + 2 * S))
    assert set(p.maps.installed) == {prefix(2).key()}
    assert p.topic.log[-1] == ("tombstone", prefix(1).key())
    assert p.metric("rules_expired_total") == 1


def test_the_allowlist_is_written_once_and_kernel_additions_are_obeyed():
    p = Parts(FakeMaps(allowlist=("127.0.0.1/8",)), allowlist=("127.0.0.0/8", "192.0.2.0/24"))
    p.act.install_allowlist()
    assert p.maps.allowed == ["127.0.0.1/8", "192.0.2.0/24"]  # 127.0.0.1/8 is 127.0.0.0/8
    p.maps.allow_add("203.0.113.0/24")  # `xdpguard allow add` while the enforcer runs
    p.act.refresh_allowlist()
    assert p.verdict(prefix(1)) is Outcome.REFUSE and p.maps.installed == {}


def test_gauges_show_each_map_and_survive_unreadable_maps():
    p = Parts(FakeMaps(capacity=7))
    p.verdict(prefix(1))
    assert p.metric("map_occupancy", map="rules") == 1
    assert p.metric("map_capacity", map="rules") == 7
    assert p.metric("model_rules") == 1
    p.maps.close()  # every read now fails
    p.policy.untrack(prefix(1))
    p.act.gauges()  # no exception; occupancy stale, model rules current
    assert p.metric("map_occupancy", map="rules") == 1 and p.metric("model_rules") == 0
