"""The enforcer's policy: allowlist and local addresses protected, TTLs, rate and per-source caps,
bounded model rules evicted oldest first (manual never), at-most-once per verdict id, node filter."""
import pytest

from services.records.rules import Action, Origin, Rule, Scope
from services.records.verdict import ALL_NODES, is_all_nodes
from services.enforcer.policy import Order, Outcome, RulePolicy, RulePolicyConfig

S = 1_000_000_000
T0 = 1_800_000_000 * S


def flow(src="203.0.113.7", sport=1234, dst="10.0.0.2", dport=80):
    return Rule(Scope.FLOW, Action.DROP, src=src, dst=dst, sport=sport, dport=dport, proto=6)


def prefix(cidr):
    return Rule(Scope.SRC_PREFIX, Action.DROP, src=cidr)


def policy(**kw):
    kw.setdefault("node_id", "n1")
    kw.setdefault("allowlist", ("127.0.0.0/8", "::1/128", "192.0.2.10/32"))
    kw.setdefault("local_addresses", ("10.0.0.2",))
    return RulePolicy(RulePolicyConfig(**kw))


def apply(p, rule, now=T0, vid="", node="", ttl=0.0):
    d = p.decide(Order(id=vid, node=node, rule=rule, ttl_s=ttl), now)
    if d.outcome in (Outcome.APPLY, Outcome.REFRESH):
        p.commit(d, now)
    return d


def test_allowlisted_and_local_targets_are_refused_with_a_reason():
    p = policy()
    for rule in (flow(src="127.0.0.1"), flow(src="192.0.2.10"), flow(src="10.0.0.2"),
                 prefix("192.0.2.0/24"), prefix("0.0.0.0/0"), prefix("10.0.0.0/8"),
                 prefix("::/96"), flow(src="::1", dst="fd00::2")):
        d = apply(p, rule)
        assert d.outcome is Outcome.REFUSE and d.reason, rule
    assert p.installed() == []


def test_a_prefix_that_spares_the_allowlist_and_local_addresses_is_applied():
    d = apply(policy(), prefix("198.51.100.0/24"))
    assert d.outcome is Outcome.APPLY and d.rule.src == "198.51.100.0/24"


def test_allowlist_added_at_run_time_wins_over_later_verdicts():
    p = policy()
    p.allow("203.0.113.0/24")
    assert apply(p, flow()).outcome is Outcome.REFUSE


def test_model_rules_get_the_default_ttl_capped_by_the_maximum_and_expire():
    p = policy(ttl_s=600, max_ttl_s=900)
    r = apply(p, flow()).rule
    assert r.origin is Origin.MODEL and r.created_ns == T0 and r.expires_ns == T0 + 600 * S
    r2 = apply(p, flow(sport=2), ttl=10_000).rule
    assert r2.expires_ns == T0 + 900 * S
    assert p.expire(T0 + 599 * S) == []
    assert p.expire(T0 + 600 * S) == [r]
    assert p.expire(T0 + 900 * S) == [r2]
    assert p.installed() == []


def test_a_repeated_verdict_refreshes_only_when_half_the_ttl_is_gone():
    p = policy(ttl_s=100)
    apply(p, flow())
    assert apply(p, flow(), now=T0 + 10 * S).outcome is Outcome.IGNORE
    d = apply(p, flow(), now=T0 + 60 * S)
    assert d.outcome is Outcome.REFRESH and d.rule.expires_ns == T0 + 160 * S
    assert d.rule.created_ns == T0 and len(p.installed()) == 1


def test_rules_per_second_and_per_minute_are_capped():
    p = policy(max_per_second=3, max_per_minute=5, max_per_source=100)
    outcomes = [apply(p, flow(sport=i)).outcome for i in range(4)]
    assert outcomes == [Outcome.APPLY] * 3 + [Outcome.REFUSE]
    assert apply(p, flow(sport=10), now=T0 + S).outcome is Outcome.APPLY
    assert apply(p, flow(sport=11), now=T0 + S).outcome is Outcome.APPLY
    d = apply(p, flow(sport=12), now=T0 + 2 * S)
    assert d.outcome is Outcome.REFUSE and "/min" in d.reason
    assert apply(p, flow(sport=13), now=T0 + 61 * S).outcome is Outcome.APPLY


def test_rules_per_source_are_capped_and_freed_on_expiry():
    p = policy(max_per_source=2, ttl_s=10)
    assert [apply(p, flow(sport=i)).outcome for i in range(3)] == \
        [Outcome.APPLY, Outcome.APPLY, Outcome.REFUSE]
    assert apply(p, flow(src="203.0.113.8")).outcome is Outcome.APPLY
    p.expire(T0 + 10 * S)
    assert apply(p, flow(sport=5), now=T0 + 11 * S).outcome is Outcome.APPLY


def test_the_bound_evicts_the_oldest_model_rules_and_never_manual_ones():
    p = policy(max_model_rules=3, max_per_source=100)
    manual = Rule(Scope.FLOW, Action.DROP, src="198.51.100.1", dst="10.0.0.2", proto=17,
                  origin=Origin.MANUAL, created_ns=T0 - 100 * S)
    p.track(manual)
    for i in range(3):
        apply(p, flow(sport=i), now=T0 + i * S)
    d = apply(p, flow(sport=99), now=T0 + 10 * S)
    assert d.outcome is Outcome.APPLY
    assert [r.sport for r in d.evict] == [0]
    assert manual in p.installed() and p.model_count() == 3
    assert p.evict_for_full_map(flow(sport=100)).sport == 1


def test_a_verdict_for_a_key_held_by_a_manual_rule_is_refused():
    p = policy()
    p.track(Rule(Scope.SRC_PREFIX, Action.PASS, src="203.0.113.0/24", origin=Origin.MANUAL))
    assert apply(p, prefix("203.0.113.0/24")).outcome is Outcome.REFUSE


def test_each_verdict_id_is_acted_on_at_most_once():
    p = policy(ttl_s=1)
    assert apply(p, flow(), vid="v1").outcome is Outcome.APPLY
    p.expire(T0 + 2 * S)
    d = apply(p, flow(), vid="v1", now=T0 + 3 * S)
    assert d.outcome is Outcome.IGNORE and "already" in d.reason
    assert p.installed() == []


def test_verdicts_for_other_nodes_are_ignored_and_all_nodes_accepted():
    p = policy()
    assert apply(p, flow(), node="n2").outcome is Outcome.IGNORE
    assert apply(p, flow(), node="n1").outcome is Outcome.APPLY
    assert apply(p, flow(sport=2), node="*").outcome is Outcome.APPLY
    # ALL_NODES ("*") is what producers write; "" and "all" are older spellings, still accepted
    assert apply(p, flow(sport=3), node="").outcome is Outcome.APPLY
    assert apply(p, flow(sport=4), node="all").outcome is Outcome.APPLY
    assert [is_all_nodes(n) for n in (ALL_NODES, "", "all", "n1", "All")] == \
        [True, True, True, False, False]


def test_dry_run_is_the_same_decision_without_side_effects():
    # The service only logs in dry run; the policy's answer must not depend on it.
    p = policy()
    d = p.decide(Order(id="x", node="", rule=flow()), T0)
    assert d.outcome is Outcome.APPLY and p.installed() == []


def test_ipv4_mapped_spellings_of_protected_addresses_are_refused_too():
    # The kernel keys ::ffff:a.b.c.d and a.b.c.d alike: the policy must see them alike.
    p = policy()
    for rule in (flow(src="::ffff:127.0.0.1", dst="::ffff:10.0.0.2"),
                 flow(src="::ffff:10.0.0.2", dst="::ffff:10.0.0.9"),
                 prefix("::ffff:192.0.2.10/128"), prefix("::ffff:0:0/96")):
        d = apply(p, rule)
        assert d.outcome is Outcome.REFUSE, rule
    assert apply(p, prefix("::ffff:203.0.113.0/120")).outcome is Outcome.APPLY
    # an IPv6 prefix holding ::ffff:0:0/96 never becomes a Rule (issue 13: records.rules)
    with pytest.raises(ValueError, match="covers every IPv4"):
        prefix("::/64")
