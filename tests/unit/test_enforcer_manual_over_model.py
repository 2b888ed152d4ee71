"""A manual rule the CLI writes over the key of a model rule the policy tracks is never deleted or
overwritten as that model rule (helper-51's review, finding 2).

The policy learns of manual rules only in the sweep's sync_manual (every
ENFORCER_SWEEP_INTERVAL_MS). Until then `xdpguard add` of a tracked model rule's key was, for the
policy, still the model rule: a full map's eviction, the bound's eviction, expiry or a REFRESH
deleted or overwrote it. The actuator now reads the origin of that one key (RuleMaps.origin, one
lookup) under the pin lock right before each delete or write: a manual rule there is kept, the
model rule untracked and tombstoned. One test per path the actuator guards."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from services.records.rules import Action, Origin, Rule
from tests.support.enforcer_parts import S, T0, Parts, prefix
from tests.support.fake_dataplane import FakeMaps


def manual(rule: Rule, action: Action = Action.DROP) -> Rule:
    """`rule`'s key as the CLI writes it: origin manual, no expiry, `action`."""
    return replace(rule, origin=Origin.MANUAL, action=action, expires_ns=0)


def tracked(p: Parts) -> dict[str, Origin]:
    return {r.key(): r.origin for r in p.policy.installed()}


def tombstones(p: Parts) -> list[str]:
    return [k for what, k in p.topic.log if what == "tombstone"]


def test_a_manual_rule_written_over_a_model_key_is_never_evicted_before_the_sweep():
    """`xdpguard add` of the same source as a model rule (now manual), then a full map before the
    sweep mirrors it: the eviction must not delete the operator's rule. The new rule finds no
    model rule to evict (refused map_full); the replaced model rule is untracked and tombstoned,
    and the sweep then tracks and records the manual rule."""
    p = Parts(FakeMaps(capacity=1))
    p.verdict(prefix(1))
    op = manual(prefix(1))
    p.maps.add_rule(op)  # the CLI, in another process
    p.verdict(prefix(2), now=T0 + S)
    assert p.maps.installed == {prefix(1).key(): op}
    assert p.metric("rules_refused_total", reason="map_full") == 1
    assert p.metric("rules_evicted_total") == 0
    assert p.metric("rules_replaced_by_manual_total") == 1
    assert tracked(p) == {}
    assert tombstones(p) == [prefix(1).key()]
    assert all(p.maps.origins_locked)
    asyncio.run(p.reconciler.sync_manual(p.maps))
    assert tracked(p) == {prefix(1).key(): Origin.MANUAL}
    assert p.topic.log[-1] == ("applied", prefix(1).key())


def test_the_full_map_eviction_passes_over_a_replaced_victim_to_the_next_model_rule():
    """Capacity 2, the older of two model rules replaced by a manual one: a third rule evicts
    the younger model rule (the first that frees room and is still a model rule)."""
    p = Parts(FakeMaps(capacity=2))
    p.verdict(prefix(1))
    p.verdict(prefix(2), now=T0 + S)
    op = manual(prefix(1), Action.PASS)
    p.maps.add_rule(op)
    p.verdict(prefix(3), now=T0 + 2 * S)
    assert p.maps.installed == {prefix(1).key(): op, prefix(3).key(): p.maps.installed[prefix(3).key()]}
    assert p.maps.installed[prefix(3).key()].origin is Origin.MODEL
    assert p.metric("rules_evicted_total") == 1
    assert tracked(p) == {prefix(3).key(): Origin.MODEL}
    assert tombstones(p) == [prefix(1).key(), prefix(2).key()]


def test_the_bound_s_eviction_keeps_a_manual_rule_written_over_its_victim():
    """The model-rule bound (2) names the oldest rule; the CLI wrote a manual rule over it: it is
    kept (not counted as evicted), the model rule untracked, and the new rule installed."""
    p = Parts(FakeMaps(), max_model_rules=2)
    p.verdict(prefix(1))
    p.verdict(prefix(2), now=T0 + S)
    op = manual(prefix(1))
    p.maps.add_rule(op)
    p.verdict(prefix(3), now=T0 + 2 * S)
    assert p.maps.installed[prefix(1).key()] == op
    assert set(p.maps.installed) == {prefix(1).key(), prefix(2).key(), prefix(3).key()}
    assert p.metric("rules_evicted_total") == 0
    assert p.metric("rules_replaced_by_manual_total") == 1
    assert tracked(p) == {prefix(2).key(): Origin.MODEL, prefix(3).key(): Origin.MODEL}
    assert all(p.maps.origins_locked)


def test_expiry_keeps_a_manual_rule_written_over_the_expired_model_rule():
    """The model rule's TTL runs out before the sweep mirrored the manual rule over its key: the
    manual rule stays (not counted as expired); the model rule is untracked and tombstoned. A
    model rule beside it expires as before."""
    p = Parts(FakeMaps())
    p.verdict(prefix(1))
    p.verdict(prefix(2))
    op = manual(prefix(1))
    p.maps.add_rule(op)
    asyncio.run(p.act.expire(T0 + 700 * S))
    assert p.maps.installed == {prefix(1).key(): op}
    assert p.metric("rules_expired_total") == 1
    assert sorted(tombstones(p)) == sorted([prefix(1).key(), prefix(2).key()])
    assert tracked(p) == {}
    assert all(p.maps.origins_locked)


def test_a_refresh_does_not_overwrite_a_manual_rule_written_over_the_model_rule():
    """More than half the TTL gone, the same verdict again (a REFRESH): the CLI had written a
    pass rule over the key; it is not overwritten with the model's drop (refused as manual), and
    the model rule is untracked and tombstoned, so a later verdict is refused as well."""
    p = Parts(FakeMaps())
    p.verdict(prefix(1))
    op = manual(prefix(1), Action.PASS)
    p.maps.add_rule(op)
    p.verdict(prefix(1), now=T0 + 400 * S)
    assert p.maps.installed == {prefix(1).key(): op}
    assert p.metric("rules_refused_total", reason="manual") == 1
    assert p.metric("rules_refreshed_total") == 0
    assert tracked(p) == {}
    assert tombstones(p) == [prefix(1).key()]
    p.verdict(prefix(1), now=T0 + 401 * S)  # an APPLY now (untracked): refused the same way
    assert p.maps.installed == {prefix(1).key(): op}
    assert p.metric("rules_refused_total", reason="manual") == 2
    assert p.metric("rules_replaced_by_manual_total") == 1


def test_an_apply_over_an_untracked_manual_key_is_refused():
    """A manual rule the sweep has not mirrored yet, on a key the policy never tracked: a verdict
    for it is refused (not written over it), nothing tombstoned."""
    p = Parts(FakeMaps())
    op = manual(prefix(1), Action.PASS)
    p.maps.add_rule(op)
    p.verdict(prefix(1))
    assert p.maps.installed == {prefix(1).key(): op}
    assert p.metric("rules_refused_total", reason="manual") == 1
    assert tombstones(p) == [] and tracked(p) == {}


def test_a_reload_does_not_overwrite_a_manual_rule_in_the_new_maps():
    """The program loaded again; before the enforcer re-installs its rules the CLI writes a
    manual rule over a tracked model rule's key in the new maps: the re-install skips it (the
    sweep's sync_manual, right after, tracks it) and re-installs the others."""
    p = Parts(FakeMaps())
    p.verdict(prefix(1))
    p.verdict(prefix(2))
    new = p.dataplane.reload()
    op = manual(prefix(1), Action.PASS)
    new.add_rule(op)
    p.act.check_reload()
    assert new.installed[prefix(1).key()] == op
    assert new.installed[prefix(2).key()].origin is Origin.MODEL
    assert all(new.origins_locked) and len(new.origins_locked) == 2


def test_one_origin_read_per_install_and_none_without_a_write():
    """The per-verdict cost: an APPLY reads the origin of its one key (under the lock), a
    verdict the policy ignores reads none."""
    p = Parts(FakeMaps())
    p.verdict(prefix(1))
    assert p.maps.origins_locked == [True]
    p.verdict(prefix(1), now=T0 + S)  # already installed: IGNORE
    assert p.maps.origins_locked == [True]
    p.verdict(prefix(2), now=T0 + 2 * S)
    assert p.maps.origins_locked == [True, True]
