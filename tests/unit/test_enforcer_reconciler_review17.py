"""Review 17 of 09db614 (restore keeps a manual rule written over a model rule's key while the
enforcer was away). F2: the manual rule may itself have expired while the enforcer was away;
the live model rule of the topic is then restored over it (it used to be tombstoned for a rule
the program no longer applies, leaving nothing on the key). F3: a manual rule the operator
rewrote while the enforcer was away is kept as the maps hold it, not reverted to its older
record in the topic, and the next sync_manual records it."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from services.records.rules import Action, Origin
from tests.unit.test_enforcer_reconciler import LIVE, S, T0, world


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
    from tests.unit.test_enforcer_reconciler import MANUAL_IN_TOPIC
    topic, maps, rec, policy, metrics = world()
    op = replace(MANUAL_IN_TOPIC, action=Action.PASS).with_times(T0 - 10 * S, 3600)
    maps.add_rule(op)
    maps.writes.clear()
    asyncio.run(rec.restore(maps))
    assert maps.installed[op.key()] == op
    asyncio.run(rec.sync_manual(maps))
    assert topic.log[-1] == ("applied", op.key())
