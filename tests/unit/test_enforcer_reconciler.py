"""The rules-topic reconciler over an in-memory topic and data plane: a restart restores this
node's unexpired rules with their own times, tombstones expired ones, deletes model rules the
topic no longer holds and leaves manual rules alone; bad records are dead-lettered; manual rules
added or deleted with `xdpguard` are mirrored into the topic once each."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from services.enforcer.metrics import EnforcerMetrics
from services.enforcer.policy import RulePolicy, RulePolicyConfig
from services.enforcer.reconciler import RulesReconciler
from services.records.rules import Action, Origin, Rule, Scope
from tests.support.fake_dataplane import FakeMaps
from tests.support.fake_rules_topic import FakeRulesTopic

S = 1_000_000_000
T0 = 1_800_000_000 * S


def rule(cidr: str, origin: Origin = Origin.MODEL, created: int = T0 - 60 * S,
         ttl_s: float = 600) -> Rule:
    return Rule(Scope.SRC_PREFIX, Action.DROP, src=cidr, origin=origin).with_times(created, ttl_s)


def reconciler(topic: FakeRulesTopic, dry_run: bool = False, restore: bool = True):
    policy = RulePolicy(RulePolicyConfig(node_id="node-test"))
    metrics = EnforcerMetrics()
    return RulesReconciler(policy, topic, metrics, dry_run=dry_run, restore=restore,
                           deadletter=topic.deadletter, clock=lambda: T0), policy, metrics


def keys(rules) -> set[str]:
    return {r.key() for r in rules}


LIVE = rule("203.0.113.0/24")
EXPIRED = rule("203.0.114.0/24", ttl_s=30)
MANUAL_IN_TOPIC = rule("198.18.0.0/16", origin=Origin.MANUAL, ttl_s=0)
STALE = rule("192.0.2.0/25")                                            # maps only, model
MANUAL_IN_MAPS = rule("198.19.0.0/16", origin=Origin.MANUAL, ttl_s=0)  # maps only, manual
BAD = (2, 17, "not msgpack", b"k", b"\xc1")


def world(**kw):
    topic = FakeRulesTopic(bad_records=[BAD])
    for r in (LIVE, EXPIRED, MANUAL_IN_TOPIC):
        asyncio.run(topic.write(r))
    topic.log.clear()
    maps = FakeMaps()
    for r in (STALE, MANUAL_IN_MAPS):
        maps.add_rule(r)
    maps.writes.clear()
    return (topic, maps) + reconciler(topic, **kw)


def test_restore_brings_back_the_topic_s_rule_set_with_its_own_times():
    topic, maps, rec, policy, metrics = world()
    asyncio.run(rec.restore(maps))
    assert set(maps.installed) == keys([LIVE, MANUAL_IN_TOPIC, MANUAL_IN_MAPS])
    assert maps.installed[LIVE.key()] == LIVE  # original creation and expiry
    assert topic.log == [("tombstone", EXPIRED.key())]
    assert keys(policy.installed()) == keys([LIVE, MANUAL_IN_TOPIC, MANUAL_IN_MAPS])
    assert metrics.registry.get_sample_value("xdpguard_enforcer_rules_restored_total") == 2
    assert topic.deadletters == [(topic.topic, 2, 17, "not msgpack", b"\xc1")]
    # the manual rule already in the topic is not written again; the one only in the maps is
    asyncio.run(rec.sync_manual(maps))
    assert topic.log[1:] == [("applied", MANUAL_IN_MAPS.key())]


def test_restore_off_tracks_what_the_maps_hold_and_touches_nothing():
    topic, maps, rec, policy, _ = world(restore=False)
    asyncio.run(rec.restore(maps))
    assert keys(policy.installed()) == keys([STALE, MANUAL_IN_MAPS])
    assert maps.writes == [] and topic.log == [] and topic.deadletters == []


def test_restore_in_dry_run_learns_the_rule_set_and_writes_nothing():
    topic, maps, rec, policy, _ = world(dry_run=True)
    asyncio.run(rec.restore(maps))
    assert maps.writes == [] and topic.log == []
    assert keys(policy.installed()) == keys([LIVE, MANUAL_IN_TOPIC, MANUAL_IN_MAPS])


def test_manual_rules_are_mirrored_once_and_tombstoned_when_deleted():
    topic = FakeRulesTopic()
    rec, policy, _ = reconciler(topic)
    maps = FakeMaps()
    manual = rule("198.18.0.0/16", origin=Origin.MANUAL)
    maps.add_rule(manual)
    maps.add_rule(LIVE)  # a model rule: the actuator records those, not the mirror
    asyncio.run(rec.sync_manual(maps))
    asyncio.run(rec.sync_manual(maps))
    assert topic.log == [("applied", manual.key())]
    assert keys(policy.installed()) == {manual.key()}
    maps.installed[manual.key()] = replace(manual, expires_ns=manual.expires_ns + 10**6)
    asyncio.run(rec.sync_manual(maps))  # monotonic-clock jitter: the same rule
    assert len(topic.log) == 1
    maps.installed[manual.key()] = replace(manual, expires_ns=manual.expires_ns + S)
    asyncio.run(rec.sync_manual(maps))  # re-added with another expiry: written again
    assert topic.log[-1] == ("applied", manual.key()) and len(topic.log) == 2
    maps.delete_rule(manual)
    asyncio.run(rec.sync_manual(maps))
    assert topic.log[-1] == ("tombstone", manual.key()) and policy.installed() == []
    assert manual.key() not in topic.records


def test_manual_rules_are_not_mirrored_in_dry_run():
    topic = FakeRulesTopic()
    rec, _, _ = reconciler(topic, dry_run=True)
    maps = FakeMaps()
    maps.add_rule(rule("198.18.0.0/16", origin=Origin.MANUAL))
    asyncio.run(rec.sync_manual(maps))
    assert topic.log == []


def test_restore_leaves_a_rule_the_maps_already_hold_alone():
    """An enforcer restart with the program still loaded: the maps hold the topic's rule with
    its hit counters; writing it again would be writes for nothing, so it is not written."""
    topic, maps, rec, policy, _ = world()
    maps.add_rule(LIVE)
    maps.writes.clear()
    asyncio.run(rec.restore(maps))
    assert ("add", LIVE.key()) not in maps.writes
    assert LIVE.key() in keys(policy.installed()) and maps.installed[LIVE.key()] == LIVE
    assert ("add", MANUAL_IN_TOPIC.key()) in maps.writes  # not in the maps: installed


def test_a_model_rule_that_expired_while_the_enforcer_was_away_leaves_the_maps():
    # its entry still counts in its map's rule count and src_filter slot (the program skips a
    # map only when no rule is left): the restore that tombstones it must also delete it
    topic, maps, rec, policy, _ = world()
    maps.add_rule(EXPIRED)
    asyncio.run(rec.restore(maps))
    assert EXPIRED.key() not in maps.installed
    assert ("tombstone", EXPIRED.key()) in topic.log
    assert EXPIRED.key() not in keys(policy.installed())


def test_restore_removes_stale_and_expired_rules_before_it_adds_the_topic_s():
    """Maps of 3 rules holding a stale model rule, an expired one and a manual one (full): the
    topic's two live rules fit once the stale and the expired rule are gone, so both are
    restored; adding first met MapFull for both (not restored, never tried again) and deleted
    the two rules after (helper-51's review)."""
    topic, _, rec, policy, metrics = world()
    maps = FakeMaps(capacity=3)
    for r in (STALE, EXPIRED, MANUAL_IN_MAPS):
        maps.add_rule(r)
    asyncio.run(rec.restore(maps))
    assert set(maps.installed) == keys([LIVE, MANUAL_IN_TOPIC, MANUAL_IN_MAPS])
    assert keys(policy.installed()) == keys([LIVE, MANUAL_IN_TOPIC, MANUAL_IN_MAPS])
    assert metrics.registry.get_sample_value("xdpguard_enforcer_rules_refused_total",
                                             {"reason": "map_full"}) is None


def test_a_manual_rule_written_over_a_model_key_while_away_is_not_overwritten_at_restore():
    """The topic holds model rule LIVE; while the enforcer was down the operator ran `xdpguard
    add` for the same source as a pass rule (origin manual in the maps). The restart keeps the
    operator's rule (not written over), tombstones the model record, counts it as kept, and the
    next sync_manual mirrors the manual rule into the topic under that key."""
    topic, maps, rec, policy, metrics = world()
    op = replace(LIVE, action=Action.PASS, origin=Origin.MANUAL, expires_ns=0)
    maps.add_rule(op)
    maps.writes.clear()
    asyncio.run(rec.restore(maps))
    assert ("add", LIVE.key()) not in maps.writes
    assert maps.installed[LIVE.key()] == op
    assert ("tombstone", LIVE.key()) in topic.log
    assert policy.tracked(LIVE.key()) == op
    assert metrics.registry.get_sample_value(
        "xdpguard_enforcer_rules_replaced_by_manual_total") == 1
    asyncio.run(rec.sync_manual(maps))
    assert topic.log[-1] == ("applied", LIVE.key())


# review 17 (helper-58): F2, an expired manual rule in the maps does not shadow the live model
# rule of its key; F3, a manual rule the operator rewrote while the enforcer was away is kept as
# the maps hold it, not reverted to its older record, and the next sync_manual records it
def test_a_live_manual_rule_over_a_model_key_is_kept_at_restore():
    # what 09db614 promises, with a TTL on the operator's rule that has not run out
    topic, maps, rec, policy, metrics = world()
    op = replace(LIVE, action=Action.PASS, origin=Origin.MANUAL).with_times(T0 - 10 * S, 3600)
    maps.add_rule(op)
    maps.writes.clear()
    asyncio.run(rec.restore(maps))
    assert maps.installed[LIVE.key()] == op and ("add", LIVE.key()) not in maps.writes
    assert ("tombstone", LIVE.key()) in topic.log


def test_an_expired_manual_rule_does_not_shadow_the_live_model_rule_at_restore():
    topic, maps, rec, policy, metrics = world()
    # `xdpguard add --ttl 60` over LIVE's key 5 minutes before T0: expired at T0 - 4 min
    op = replace(LIVE, action=Action.PASS, origin=Origin.MANUAL).with_times(T0 - 300 * S, 60)
    assert op.expired(T0) and not LIVE.expired(T0)
    maps.add_rule(op)
    maps.writes.clear()
    asyncio.run(rec.restore(maps))
    assert ("tombstone", LIVE.key()) not in topic.log
    assert maps.installed[LIVE.key()] == LIVE


def test_a_manual_rule_the_operator_rewrote_while_away_is_not_reverted_at_restore():
    # MANUAL_IN_TOPIC (drop, no expiry) was mirrored into the topic; while the enforcer was down
    # the operator ran `xdpguard add` on the same key as a pass rule with a TTL. The module
    # promises manual rules in the maps are "tracked and never touched"; restore writes the
    # topic's drop back over it, and the next sync_manual sees nothing to mirror: the edit is lost.
    topic, maps, rec, policy, metrics = world()
    op = replace(MANUAL_IN_TOPIC, action=Action.PASS).with_times(T0 - 10 * S, 3600)
    maps.add_rule(op)
    maps.writes.clear()
    asyncio.run(rec.restore(maps))
    assert maps.installed[op.key()] == op
    asyncio.run(rec.sync_manual(maps))
    assert topic.log[-1] == ("applied", op.key())


def test_a_restored_model_rule_without_an_expiry_or_beyond_the_max_ttl_is_capped():
    """helper-72: a model rule record with expires_ns 0 (never), which the enforcer itself never
    writes, was installed for good at restore; ENFORCER_MAX_TTL_S (3600 s by default) applies."""
    never = replace(rule("203.0.120.0/24"), expires_ns=0)
    long = rule("203.0.121.0/24", ttl_s=10 * 3600)
    manual = rule("198.18.5.0/24", origin=Origin.MANUAL, ttl_s=0)
    topic = FakeRulesTopic()
    for r in (never, long, manual, LIVE):
        asyncio.run(topic.write(r))
    maps = FakeMaps()
    rec, _, _ = reconciler(topic)
    asyncio.run(rec.restore(maps))
    cap = lambda r: r.created_ns + 3600 * S  # noqa: E731
    assert maps.installed[never.key()].expires_ns == cap(never)
    assert maps.installed[long.key()].expires_ns == cap(long)
    assert maps.installed[manual.key()].expires_ns == 0  # the operator's: never expiring is allowed
    assert maps.installed[LIVE.key()] == LIVE


def test_a_rule_refreshed_past_the_max_ttl_since_its_creation_is_restored_as_written():
    """helper-74: a refresh keeps created_ns and moves the expiry, so a rule refreshed for over
    MAX_TTL - TTL expires more than ENFORCER_MAX_TTL_S after its creation; capped from its
    creation it was restored already expired. The cap counts from when the record was written."""
    from services.wire import codec

    refreshed = rule("203.0.122.0/24", created=T0 - 5000 * S, ttl_s=5600)  # until T0 + 600 s
    topic = FakeRulesTopic()
    key, value = codec.encode_rule_record(refreshed, "applied", "node-test",
                                          updated_ns=T0 - 100 * S)  # rewritten at the refresh
    topic.records[refreshed.key()] = codec.decode_rule_record(key, value)
    maps = FakeMaps()
    rec, _, _ = reconciler(topic)
    asyncio.run(rec.restore(maps))
    assert maps.installed[refreshed.key()] == refreshed
