"""docs/dataplane.md's order of matching with a host rule in its inline slot and one in the hash
(helper-51's review): a host rule is the longest prefix wherever it sits (its pass beats a
shorter prefix's drop, both in the slot and in the hash, and its deletion gives the prefix back),
an exact rule comes first either way (its drop beats a host pass), and the allowlist before all.
Real kernel, BPF_PROG_TEST_RUN, the pinned maps."""

from scapy.all import IP, TCP, Ether, raw

from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta, sharing

A = "10.5.0.1"


B = sharing(A)  # its rule goes to the hash while A's holds the slot


def frame(src: str) -> bytes:
    return raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst="10.2.0.2")
               / TCP(sport=1234, dport=80, flags="S"))


def host(src: str, action: str = "drop") -> Rule:
    return Rule("src_prefix", action, src=src + "/32")


def placed(env) -> tuple[int, int, int]:
    """(rules in inline slots, in src_host4, in src_host6)."""
    occ = env.dp.occupancy()
    return occ["src_host_slot"][0], occ["src_host4"][0], occ["src_host6"][0]

NET = Rule("src_prefix", "drop", src="10.5.0.0/16")  # A and B are in it


def test_a_host_pass_beats_a_shorter_prefix_drop_in_the_slot_and_in_the_hash(env):
    env.dp.add_rule(NET)
    env.dp.add_rule(host(A, "pass"))
    env.dp.add_rule(host(B, "pass"))
    assert placed(env) == (1, 1, 0)
    with Delta(env) as d:
        assert (env.run(frame(A)), env.run(frame(B))) == (XDP_PASS, XDP_PASS)
        assert env.run(frame("10.5.9.9")) == XDP_DROP
    assert d["rule_pass"] == 2 and d["drop_prefix"] == 1
    env.dp.delete_rule(host(A, "pass"))  # the slot's: the prefix holds A again, B stays
    env.dp.delete_rule(host(B, "pass"))
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_DROP)


def test_an_exact_drop_beats_a_host_pass_in_the_slot_and_in_the_hash(env):
    env.dp.add_rule(host(A, "pass"))
    env.dp.add_rule(host(B, "pass"))
    for src in (A, B):
        env.dp.add_rule(Rule("flow", "drop", src=src, dst="10.2.0.2", sport=1234, dport=80,
                             proto=6))
    with Delta(env) as d:
        assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_DROP)
    assert d["drop_exact"] == 2 and d["rule_pass"] == 0


def test_the_allowlist_beats_a_host_drop_in_the_hash(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    env.dp.allow_add(B + "/32")
    with Delta(env) as d:
        assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_PASS)
    assert d["allowed"] == 1 and d["drop_prefix"] == 1
