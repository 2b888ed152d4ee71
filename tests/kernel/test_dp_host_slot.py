"""Host rules (/32, /128) in their inline slot (map src_host_slot, issue 16) or, when another
address holds the slot, in the src_host4 / src_host6 hash: each rule in exactly one place, both
places matched, listed and counted alike. Real kernel, BPF_PROG_TEST_RUN, the pinned maps."""
import ctypes
import ipaddress
import time

from scapy.all import IP, TCP, Ether, IPv6, raw

from services.dataplane.structs import HostSlot, filter_slot, host_slot
from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A = "10.5.0.1"


def sharing(addr: str) -> str:
    """Another IPv4 address whose inline slot is `addr`'s (the first after it)."""
    want, ip = host_slot(addr), ipaddress.IPv4Address(addr)
    while True:
        ip += 1
        if host_slot(str(ip)) == want:
            return str(ip)


B = sharing(A)


def frame(src: str) -> bytes:
    if ":" in src:
        return raw(ETH / IPv6(src=src, dst="fd00::2") / TCP(sport=1234, dport=80, flags="S"))
    return raw(ETH / IP(src=src, dst="10.2.0.2") / TCP(sport=1234, dport=80, flags="S"))


def host(src: str, action: str = "drop") -> Rule:
    return Rule("src_prefix", action, src=src + ("/128" if ":" in src else "/32"))


def placed(env) -> tuple[int, int, int]:
    """(rules in inline slots, in src_host4, in src_host6)."""
    occ = env.dp.occupancy()
    return occ["src_host_slot"][0], occ["src_host4"][0], occ["src_host6"][0]


def in_slot(env, addr: str) -> HostSlot:
    return env.dp._read_sum("src_host_slot", ctypes.c_uint32(host_slot(addr)))


def test_the_two_addresses_share_a_slot_but_not_an_address():
    assert A != B and host_slot(A) == host_slot(B)


def test_two_host_rules_sharing_a_slot_both_drop_the_second_from_the_hash(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    assert placed(env) == (1, 1, 0)
    assert bytes(in_slot(env, A).addr)[:4] == ipaddress.IPv4Address(A).packed
    assert env.dp.counts()["n_host4"] == 1  # the hash entry only: it gates the hash lookup
    with Delta(env) as d:
        assert [env.run(frame(A)), env.run(frame(B))] == [XDP_DROP, XDP_DROP]
        assert env.run(frame(sharing(B))) == XDP_PASS  # same slot, no rule
    assert d["drop_prefix"] == 2 and d["unmatched"] == 1


def test_deleting_the_slot_rule_leaves_the_hash_one_and_frees_the_slot(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    assert env.dp.delete_rule(host(A)) and not env.dp.delete_rule(host(A))
    assert placed(env) == (0, 1, 0) and in_slot(env, A).family == 0
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_PASS, XDP_DROP)
    env.dp.add_rule(host(A, "drop"))  # the slot is empty again: A goes there
    assert placed(env) == (1, 1, 0) and in_slot(env, A).family == 4
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_DROP)
    assert env.dp.delete_rule(host(B)) and env.dp.counts()["n_host4"] == 0
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_PASS)
    assert env.dp.delete_rule(host(A)) and placed(env) == (0, 0, 0)
    assert env.run(frame(A)) == XDP_PASS


def test_the_filter_slot_counts_host_rules_in_both_places(env):
    from services.dataplane import bpfsys
    from services.dataplane.structs import FilterSlot

    def hosts(addr):
        got = FilterSlot()
        bpfsys.lookup(env.dp._maps["src_filter"].fd, ctypes.c_uint32(filter_slot(addr)), got)
        return got.host

    before = hosts(A), hosts(B)
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    same = filter_slot(A) == filter_slot(B)
    assert (hosts(A), hosts(B)) == ((before[0] + 2,) * 2 if same else (before[0] + 1, before[1] + 1))
    env.dp.delete_rule(host(A))
    env.dp.delete_rule(host(B))
    assert (hosts(A), hosts(B)) == before


def test_a_rule_replaced_in_place_keeps_one_entry_wherever_it_is(env):
    now = time.time_ns()
    env.dp.add_rule(host(A).with_times(now, 60))
    env.dp.add_rule(host(B).with_times(now, 60))
    env.dp.add_rule(host(A).with_times(now, 120))  # TTL change, in its slot
    env.dp.delete_rule(host(A))
    env.dp.add_rule(host(B).with_times(now, 180))  # in the hash: stays there
    assert placed(env) == (0, 1, 0)
    env.dp.add_rule(host(A).with_times(now, 240))
    env.dp.add_rule(host(A).with_times(now, 300))
    assert placed(env) == (1, 1, 0)
    got = {rs.rule.src: rs.rule.expires_ns for rs in env.dp.rules()}
    assert set(got) == {A + "/32", B + "/32"}
    # expiry goes through the monotonic clock and back: within a millisecond
    assert abs(got[A + "/32"] - (now + 300_000_000_000)) < 1_000_000
    assert abs(got[B + "/32"] - (now + 180_000_000_000)) < 1_000_000


def test_rules_lists_slot_and_hash_rules_with_their_counters(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B, "pass"))
    for _ in range(2):
        env.run(frame(A))
    for _ in range(3):
        env.run(frame(B))
    got = {rs.rule.src: (rs.rule.action.value, rs.hits, rs.bytes, rs.dropped) for rs in env.dp.rules()}
    n = len(frame(A))
    assert got == {A + "/32": ("drop", 2, 2 * n, 2), B + "/32": ("pass", 3, 3 * n, 0)}
    env.dp.add_rule(host(A))  # replacing resets the counters, as in the hashes
    assert {rs.rule.src: rs.hits for rs in env.dp.rules()} == {A + "/32": 0, B + "/32": 3}


def test_an_exact_pass_still_beats_a_slot_host_drop(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(Rule("flow", "pass", src=A, dst="10.2.0.2", sport=1234, dport=80, proto=6))
    assert placed(env) == (1, 0, 0)
    with Delta(env) as d:
        assert env.run(frame(A)) == XDP_PASS
    assert d["rule_pass"] == 1 and d["drop_prefix"] == 0


def test_an_allowlisted_source_passes_despite_a_slot_host_drop(env):
    env.dp.add_rule(host(A))
    env.dp.allow_add("10.5.0.0/16")
    with Delta(env) as d:
        assert env.run(frame(A)) == XDP_PASS
    assert d["allowed"] == 1


def test_an_ipv6_host_rule_in_its_slot(env):
    env.dp.add_rule(host("fd00::5"))
    assert placed(env) == (1, 0, 0) and env.dp.counts()["n_host6"] == 0
    assert in_slot(env, "fd00::5").family == 6
    with Delta(env) as d:
        assert (env.run(frame("fd00::5")), env.run(frame("fd00::6"))) == (XDP_DROP, XDP_PASS)
    assert d["drop_prefix"] == 1
    [rs] = env.dp.rules()
    assert (rs.rule.src, rs.hits) == ("fd00::5/128", 1)
    assert env.dp.delete_rule(host("fd00::5")) and placed(env) == (0, 0, 0)
    assert env.run(frame("fd00::5")) == XDP_PASS


def test_the_slot_compares_the_family_too(env):
    """10.0.0.1 and a00:1:: have the same first 4 bytes, and the same slot (the XOR of an IPv6
    source's words is its first word here): neither family's rule matches the other's source."""
    v6 = "a00:1::"
    assert host_slot("10.0.0.1") == host_slot(v6)
    env.dp.add_rule(host("10.0.0.1"))
    assert (env.run(frame("10.0.0.1")), env.run(frame(v6))) == (XDP_DROP, XDP_PASS)
    env.dp.add_rule(host(v6))  # the slot is taken by the IPv4 rule: the IPv6 one goes to its hash
    assert placed(env) == (1, 0, 1)
    env.dp.delete_rule(host("10.0.0.1"))
    env.dp.delete_rule(host(v6))
    env.dp.add_rule(host(v6))
    assert placed(env) == (1, 0, 0)
    assert (env.run(frame("10.0.0.1")), env.run(frame(v6))) == (XDP_PASS, XDP_DROP)


def test_a_v4_mapped_ipv6_source_meets_an_ipv4_slot_rule(env):
    env.dp.add_rule(host(A))
    assert placed(env) == (1, 0, 0)
    assert env.run(frame("::ffff:" + A)) == XDP_DROP


def test_an_expired_slot_rule_does_not_drop(env):
    now = time.time_ns()
    env.dp.add_rule(host(A).with_times(now - 2_000_000_000, 1))
    assert placed(env) == (1, 0, 0)
    with Delta(env) as d:
        assert env.run(frame(A)) == XDP_PASS
    assert d["unmatched"] == 1 and d["drop_prefix"] == 0


def test_an_expired_slot_rule_skips_the_prefixes_like_an_expired_hash_one(env):
    now = time.time_ns()
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.5.0.0/16"))
    env.dp.add_rule(host(A, "pass").with_times(now - 2_000_000_000, 1))
    env.dp.add_rule(host(B, "pass").with_times(now - 2_000_000_000, 1))
    assert placed(env) == (1, 1, 0)
    with Delta(env) as d:
        assert (env.run(frame(A)), env.run(frame(B))) == (XDP_PASS, XDP_PASS)
    assert d["unmatched"] == 2 and d["drop_prefix"] == 0


def test_recount_counts_slot_rules_in_the_filter_and_hash_rules_in_the_config(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    env.dp.add_rule(host("fd00::5"))
    got = env.dp.recount()
    assert (got["n_host4"], got["n_host6"]) == (1, 0)
    assert [env.run(frame(a)) for a in (A, B, "fd00::5")] == [XDP_DROP] * 3


def test_a_slot_rule_written_behind_datapaths_back_matches_after_recount(env):
    """recount() raises the src_filter slot of a rule found in an inline slot."""
    from services.dataplane import bpfsys
    from services.dataplane.structs import XG_ACT_DROP, Addr16, FilterSlot, RuleVal
    addr = "10.7.0.9"
    bpfsys.update(env.dp._maps["src_filter"].fd, ctypes.c_uint32(filter_slot(addr)), FilterSlot())
    raw16 = ipaddress.IPv4Address(addr).packed + bytes(12)
    env.dp._write("src_host_slot", ctypes.c_uint32(host_slot(addr)),
                  HostSlot(Addr16(*raw16), RuleVal(0, 0, 0, 0, XG_ACT_DROP, 1), 4), "host slot")
    assert env.run(frame(addr)) == XDP_PASS  # its filter slot counts no host rule: no lookup
    env.dp.recount()
    assert env.run(frame(addr)) == XDP_DROP
    assert [rs.rule.src for rs in env.dp.rules()] == [addr + "/32"]
