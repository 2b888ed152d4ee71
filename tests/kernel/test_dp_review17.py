"""Review 17 of wt-v6 (per-band src_pfx_filter) and wt-refresh (a replace keeps its counters):
the lookups that must still find a prefix (band edges, nesting across bands, delete / re-add,
v4-mapped sources, recount after a crash, a saturated band), and which counters a replace may
carry. Real kernel, BPF_PROG_TEST_RUN, the pinned maps."""
import ctypes
import time

import pytest
from scapy.all import IP, TCP, Ether, raw

from services.dataplane import bpfsys
from services.dataplane.structs import (XG_ACT_DROP, XG_PFX_BAND_SAT, RuleVal, band_count, lpm_key,
                                        pfx_filter_band, pfx_filter_slot)
from services.records.rules import Origin, Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, pfx_filter_word, syn


def band(env, cidr: str) -> int:
    return band_count(pfx_filter_word(env, cidr), pfx_filter_band(cidr))


# (prefix, a source inside it, a source outside it but in the same /32): every band edge
EDGES = [("fd10:1::/32", "fd10:1:ffff::1", "fd10:2::1"),
         ("fd10:2::/33", "fd10:2:7fff::1", "fd10:2:8000::1"),
         ("fd10:3::/63", "fd10:3:0:1::1", "fd10:3:0:2::1"),
         ("fd10:4::/64", "fd10:4::ffff", "fd10:4:0:1::1"),
         ("fd10:5::/65", "fd10:5::7fff:0:0:1", "fd10:5::8000:0:0:1"),
         ("fd10:6::/95", "fd10:6::1:ffff:ffff", "fd10:6::2:0:0"),
         ("fd10:7::/96", "fd10:7::ffff:ffff", "fd10:7::1:0:0"),
         ("fd10:8::/97", "fd10:8::7fff:ffff", "fd10:8::8000:0"),
         ("fd10:9::/127", "fd10:9::1", "fd10:9::2")]


@pytest.mark.parametrize("cidr,inside,outside", EDGES, ids=[e[0] for e in EDGES])
def test_a_lone_ipv6_prefix_at_a_band_edge_is_found(env, cidr, inside, outside):
    env.dp.add_rule(Rule("src_prefix", "drop", src=cidr))
    assert band(env, cidr) >= 1
    assert env.run(syn(inside)) == XDP_DROP
    assert env.run(syn(outside)) == XDP_PASS


def test_every_band_edge_at_once_the_longest_wins_in_one_slash32(env):
    # alternating actions over /32 /63 /64 /95 /96 /127 of one /32: each answer names its length
    lens = [32, 63, 64, 95, 96, 127]
    for i, n in enumerate(lens):
        env.dp.add_rule(Rule("src_prefix", "drop" if i % 2 else "pass", src=f"fd20::/{n}"))
    w = pfx_filter_word(env, "fd20::/32")
    assert [band_count(w, b) for b in range(4)] == [0, 2, 2, 2]
    # a source in exactly the lengths up to each one
    srcs = {32: "fd20:0:8000::1", 63: "fd20::1:0:0:0:1", 64: "fd20::8000:0:0:1",
            95: "fd20::1:0:0", 96: "fd20::8000:0", 127: "fd20::1"}
    for i, n in enumerate(lens):
        assert env.run(syn(srcs[n])) == (XDP_DROP if i % 2 else XDP_PASS), n
    # delete the middle bands' rules one by one: the longer ones left are still found
    for n in (64, 95):
        assert env.dp.delete_rule(Rule("src_prefix", "pass", src=f"fd20::/{n}"))
    assert env.run(syn(srcs[127])) == XDP_DROP and env.run(syn(srcs[96])) == XDP_PASS
    assert env.run(syn(srcs[64])) == XDP_DROP  # now the /63's
    assert [band_count(pfx_filter_word(env, "fd20::/32"), b) for b in range(4)] == [0, 2, 0, 2]


def test_delete_and_readd_in_one_band_never_leaves_it_low(env):
    a, b = Rule("src_prefix", "drop", src="fd30::/64"), Rule("src_prefix", "drop", src="fd30:0:0:1::/64")
    env.dp.add_rule(a)
    env.dp.add_rule(b)
    env.dp.add_rule(a)  # a replace: band unchanged
    assert band(env, a.src) == 2
    assert env.dp.delete_rule(a) and not env.dp.delete_rule(a)  # a second delete lowers nothing
    assert band(env, a.src) == 1 and env.run(syn("fd30:0:0:1::5")) == XDP_DROP
    env.dp.add_rule(a)
    assert env.dp.delete_rule(b)
    assert band(env, a.src) == 1 and env.run(syn("fd30::5")) == XDP_DROP


def test_ipv4_rules_raise_band_0_only_and_a_v4_mapped_source_finds_them(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="::ffff:10.77.0.0/112"))  # canonical 10.77.0.0/16
    assert [band_count(pfx_filter_word(env, "10.77.0.0/16"), b) for b in range(4)] == [1, 0, 0, 0]
    assert env.run(syn("10.77.1.1")) == XDP_DROP
    assert env.run(syn("::ffff:10.77.1.1")) == XDP_DROP
    assert env.run(syn("::ffff:10.78.1.1")) == XDP_PASS
    # an IPv6 rule whose first 32 bits are 0 does not make v4-mapped sources IPv6 ones
    env.dp.add_rule(Rule("src_prefix", "pass", src="::/96"))
    assert env.run(syn("::ffff:10.77.1.1")) == XDP_DROP and env.run(syn("::5")) == XDP_PASS


def test_recount_after_a_crash_between_write_and_band_raise_restores_the_band(env):
    # a rule written behind Datapath's back (as if the band raise was lost): recount finds it
    env.dp.add_rule(Rule("src_prefix", "pass", src="fd40::/32"))  # makes plens6 non-empty elsewhere
    env.dp._write("src_prefix", lpm_key("fd41::/127"), RuleVal(0, 0, 0, 0, XG_ACT_DROP, 1), "prefix")
    env.dp.recount()
    assert band(env, "fd41::/127") == 1 and env.run(syn("fd41::1")) == XDP_DROP


def test_a_saturated_band_stays_and_every_rule_under_it_is_still_found(env):
    key = ctypes.c_uint32(pfx_filter_slot("fd50::/32"))
    fd = env.dp._maps["src_pfx_filter"].fd
    bpfsys.update(fd, key, ctypes.c_uint32((XG_PFX_BAND_SAT - 1) << 16))  # band 2 at 254
    rules = [Rule("src_prefix", "drop", src=f"fd50:0:0:{i}::/64") for i in range(3)]
    for r in rules:
        env.dp.add_rule(r)
    assert band(env, rules[0].src) == XG_PFX_BAND_SAT
    for r in rules[:2]:
        assert env.dp.delete_rule(r)
    assert band(env, rules[0].src) == XG_PFX_BAND_SAT
    assert env.run(syn("fd50:0:0:2::1")) == XDP_DROP and env.run(syn("fd50:0:0:1::1")) == XDP_PASS


def test_a_new_rule_over_an_expired_entry_of_its_key_starts_at_zero(env):
    # The enforcer expires rules at its sweeps; `xdpguard add` alone (or an enforcer that is
    # away) leaves an expired entry in the maps. A later, new rule on that key is no refresh of
    # it: add_rule replaces the entry, and must not carry the expired rule's hits over (F1).
    now = time.time_ns()
    old = Rule("src_prefix", "drop", src="10.60.0.0/16", origin=Origin.MANUAL).with_times(now, 0.5)
    env.dp.add_rule(old)
    env.run(syn("10.60.1.1"), repeat=7)
    hits = {rs.rule.key(): rs.hits for rs in env.dp.rules()}
    assert hits[old.key()] == 7
    time.sleep(0.7)
    assert env.run(syn("10.60.1.1")) == XDP_PASS  # expired: the program ignores it
    new = Rule("src_prefix", "pass", src="10.60.0.0/16",
               origin=Origin.MANUAL).with_times(time.time_ns(), 60)
    env.dp.add_rule(new)
    got = [rs for rs in env.dp.rules() if rs.rule.key() == new.key()]
    assert got[0].rule.created_ns == new.created_ns
    assert got[0].hits == 0


def _hits(env, rule: Rule) -> int:
    got = [rs.hits for rs in env.dp.rules() if rs.rule.key() == rule.key()]
    assert len(got) == 1, got
    return got[0]


def test_an_inline_slot_taken_over_by_another_address_starts_it_at_zero(env):
    from tests.support.dp_env import sharing
    x, y = "10.61.0.1", sharing("10.61.0.1")
    rx, ry = Rule("src_prefix", "drop", src=x + "/32"), Rule("src_prefix", "drop", src=y + "/32")
    env.dp.add_rule(rx)
    env.dp.add_rule(ry)  # the slot is x's: y goes to src_host4
    env.run(syn(x), repeat=4)
    env.run(syn(y), repeat=3)
    assert env.dp.delete_rule(rx)  # the slot is free again
    env.dp.add_rule(ry)  # a refresh of y: stays in the hash with its 3
    assert _hits(env, ry) == 3 and env.dp.occupancy()["src_host4"][0] == 1
    env.dp.add_rule(rx)  # x back in the free slot: from 0, not its old 4
    assert _hits(env, rx) == 0
    assert env.dp.delete_rule(ry) and env.dp.delete_rule(rx)
    env.dp.add_rule(ry)  # y now takes the slot: from 0
    assert env.dp.occupancy()["src_host_slot"][0] == 1 and _hits(env, ry) == 0
    env.run(syn(y))
    assert _hits(env, ry) == 1


def test_a_limit_rule_deleted_then_added_at_another_rate_starts_at_zero(env):
    r = Rule("dst_limit", "limit", dst="10.62.0.9", proto=6, rate_pps=1)
    env.dp.add_rule(r)
    frame = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                IP(src="192.0.2.1", dst="10.62.0.9") / TCP(sport=1, dport=80, flags="S"))
    env.run(frame, repeat=5)
    assert _hits(env, r) == 5
    assert env.dp.delete_rule(r)
    env.dp.add_rule(replace_rate(r, 9))
    assert _hits(env, r) == 0


def replace_rate(r: Rule, rate: int) -> Rule:
    from dataclasses import replace
    return replace(r, rate_pps=rate)


def test_a_replace_in_a_full_map_keeps_its_counters_and_a_refused_new_rule_changes_no_count(env):
    from services.common.errors import MapFull
    cap = env.dp._maps["src_prefix"].max_entries
    rules = [Rule("src_prefix", "drop", src=f"fd60:{i:x}::/48") for i in range(cap)]
    for r in rules:
        env.dp.add_rule(r)
    env.run(syn("fd60:0:0:1::1"), repeat=6)
    before = (env.dp.counts(), pfx_filter_word(env, "fd60:ffff::/48"), env.dp._config().n_len6[48])
    with pytest.raises(MapFull):
        env.dp.add_rule(Rule("src_prefix", "drop", src="fd60:ffff::/48"))
    assert (env.dp.counts(), pfx_filter_word(env, "fd60:ffff::/48"), env.dp._config().n_len6[48]) == before
    env.dp.add_rule(Rule("src_prefix", "pass", src="fd60::/48", origin=Origin.MANUAL))
    assert _hits(env, rules[0]) == 6 and env.run(syn("fd60::1")) == XDP_PASS
