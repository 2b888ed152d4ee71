"""RulePolicy's grouping of model rules by placement (_homes, helper-44 finding 1) under every
way a rule comes and goes (helper-51's review): applied, refreshed (TTL renewed), its action
changed, expired, untracked (evicted, or deleted), tracked at start (restore) or as a manual rule
over a model rule's key, evicted for a full map. After each step _homes must be exactly the model
rules by RuleMaps.placement (no key left behind, no empty group kept) and the per-source counts
exactly the model rules per source."""
from __future__ import annotations

import random
from dataclasses import replace

from services.dataplane.hostslots import rule_placement
from services.enforcer.policy import Order, Outcome, RulePolicy, RulePolicyConfig
from services.records.rules import Action, Origin, Rule, Scope

S = 1_000_000_000


def grouped(p: RulePolicy) -> dict:
    want: dict = {}
    for key, inst in p._rules.items():
        if inst.rule.origin is Origin.MODEL:
            name, slot = rule_placement(inst.rule)
            want.setdefault(name, {}).setdefault(slot, {})[key] = None
    return want


def per_source(p: RulePolicy) -> dict:
    want: dict = {}
    for inst in p._rules.values():
        if inst.rule.origin is Origin.MODEL and inst.source:
            want[inst.source] = want.get(inst.source, 0) + 1
    return want


def some_rule(rng: random.Random) -> Rule:
    a = f"10.0.{rng.randrange(3)}.{rng.randrange(1, 30)}"
    kind = rng.randrange(6)
    if kind == 0:
        return Rule(Scope.SRC_PREFIX, rng.choice([Action.DROP, Action.PASS]), src=a + "/32")
    if kind == 1:
        return Rule(Scope.SRC_PREFIX, Action.DROP, src=f"fd00::{rng.randrange(1, 40):x}/128")
    if kind == 2:
        return Rule(Scope.SRC_PREFIX, Action.DROP, src=f"::ffff:{a}/128")  # v4-mapped: IPv4
    if kind == 3:
        return Rule(Scope.SRC_PREFIX, Action.DROP, src=f"10.{rng.randrange(5)}.0.0/16")
    if kind == 4:
        return Rule(Scope.FLOW, rng.choice([Action.DROP, Action.PASS]), src=a, dst="192.0.2.1",
                    proto=6, sport=1, dport=80)
    return Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", proto=6,
                dport=rng.randrange(1, 5), rate_pps=10)


def test_the_groups_and_per_source_counts_follow_every_change():
    rng = random.Random(51)
    p = RulePolicy(RulePolicyConfig("n1", max_model_rules=30, max_per_second=10**6,
                                    max_per_minute=10**9, max_per_source=3), rule_placement)
    now = 1_800_000_000 * S
    ops = {o: 0 for o in ("apply", "refresh", "expire", "untrack", "manual", "restore", "evict")}
    for step in range(6000):
        now += rng.randrange(S)
        op = rng.randrange(10)
        if op < 5:
            d = p.decide(Order(str(step), "n1", some_rule(rng), ttl_s=rng.choice([0.5, 3, 60])),
                         now)
            if d.outcome in (Outcome.APPLY, Outcome.REFRESH):
                for old in d.evict:
                    p.untrack(old)
                p.commit(d, now)
                ops["apply" if d.outcome is Outcome.APPLY else "refresh"] += 1
        elif op == 5:
            ops["expire"] += len(p.expire(now))
        elif op == 6 and p._rules:
            p.untrack(rng.choice(list(p._rules.values())).rule)
            ops["untrack"] += 1
        elif op == 7:
            p.track(replace(some_rule(rng), origin=Origin.MANUAL))
            ops["manual"] += 1
        elif op == 8:
            p.track(replace(some_rule(rng), origin=Origin.MODEL).with_times(now - S, 100))
            ops["restore"] += 1
        else:
            victim = p.evict_for_full_map(some_rule(rng))
            if victim is not None:
                assert victim.origin is Origin.MODEL
                p.untrack(victim)
                ops["evict"] += 1
        assert p._homes == grouped(p), f"step {step}"
        assert p._per_source == per_source(p), f"step {step}"
    assert all(n > 20 for n in ops.values()), ops  # every kind of change was exercised
