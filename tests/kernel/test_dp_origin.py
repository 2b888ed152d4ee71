"""Datapath.origin: the origin of the one entry under a rule's key, read with one lookup (the
enforcer reads it under the pin lock before it deletes or overwrites a model rule it tracks:
helper-51's review, finding 2). Real kernel, the pinned maps: every kind of rule map, a host rule
in its inline slot and in the hash, and a manual rule written over a model rule's key."""
from dataclasses import replace

from services.records.rules import Origin, Rule
from tests.support.dp_env import sharing

A = "10.5.0.1"
RULES = (
    Rule("flow", "drop", src="10.1.0.1", dst="10.2.0.2", sport=7, dport=8, proto=17),
    Rule("flow", "drop", src="fd00::1", dst="fd00::2", sport=7, dport=8, proto=17),
    Rule("src_prefix", "drop", src="10.1.0.0/16"),
    Rule("src_prefix", "drop", src="fd00:bad::/32"),
    Rule("src_prefix", "drop", src=A + "/32"),                # its inline slot
    Rule("src_prefix", "drop", src=sharing(A) + "/32"),      # the slot is A's: src_host4
    Rule("src_prefix", "drop", src="fd00::9/128"),
    Rule("dst_limit", "limit", dst="10.2.0.2", proto=6, rate_pps=50),
)


def test_origin_reads_the_entry_under_the_rule_s_key(env):
    """None before a rule is written; the origin it was written with; a manual rule written
    over a model rule's key (the CLI's `xdpguard add`) reads manual, in every map."""
    for rule in RULES:
        assert env.dp.origin(rule) is None, rule.key()
    for rule in RULES:
        env.dp.add_rule(replace(rule, origin=Origin.MODEL))
    assert env.dp.occupancy()["src_host4"][0] == 1  # the rule sharing A's slot is in the hash
    for rule in RULES:
        assert env.dp.origin(rule) is Origin.MODEL, rule.key()
        assert env.dp.origin(replace(rule, action="pass") if rule.scope.value != "dst_limit"
                             else rule) is Origin.MODEL  # by key: the action plays no part
    for rule in RULES:
        env.dp.add_rule(replace(rule, origin=Origin.MANUAL))
        assert env.dp.origin(rule) is Origin.MANUAL, rule.key()
    assert {rs.rule.key(): rs.rule.origin for rs in env.dp.rules()} == \
        {r.key(): Origin.MANUAL for r in RULES}
    for rule in RULES:
        env.dp.delete_rule(rule)
        assert env.dp.origin(rule) is None, rule.key()
