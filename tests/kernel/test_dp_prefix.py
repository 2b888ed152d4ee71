"""Source prefixes shorter than a host in one hash per family keyed by (length, network address),
looked up once per length in use, longest first (the config's plens4 / plens6 bitmaps), behind
the src_pfx_filter skip filter (issue 16). Real kernel, BPF_PROG_TEST_RUN, the pinned maps."""
import ctypes
import time

from services.dataplane.structs import XG_ACT_DROP, XG_ACT_PASS, Lpm4Key, RuleVal, lpm_key
from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta, pfx_filter_word, syn


def test_the_longest_ipv4_prefix_wins_over_every_length_with_its_own_counters(env):
    # alternating actions, so each answer names the length that matched; /8 is shorter than the
    # filter's /16, so the filter is bypassed while it is in use
    rules = {"10.0.0.0/8": "drop", "10.1.0.0/16": "pass", "10.1.2.0/24": "drop",
             "10.1.2.16/28": "pass", "10.1.2.18/31": "drop"}
    for src, action in rules.items():
        env.dp.add_rule(Rule("src_prefix", action, src=src))
    cfg = env.dp._config()
    assert cfg.plens4 == (1 << 8 | 1 << 16 | 1 << 24 | 1 << 28 | 1 << 31) and cfg.n_len4[24] == 1
    got = [env.run(syn(s)) for s in ("10.9.9.9", "10.1.9.9", "10.1.2.9", "10.1.2.17", "10.1.2.19",
                                     "11.1.2.19")]
    assert got == [XDP_DROP, XDP_PASS, XDP_DROP, XDP_PASS, XDP_DROP, XDP_PASS]
    hits = {rs.rule.src: (rs.hits, rs.dropped) for rs in env.dp.rules()}
    assert hits == {"10.0.0.0/8": (1, 1), "10.1.0.0/16": (1, 0), "10.1.2.0/24": (1, 1),
                    "10.1.2.16/28": (1, 0), "10.1.2.18/31": (1, 1)}
    # deleting the longest falls back to the next length; its bit goes with its last rule
    assert env.dp.delete_rule(Rule("src_prefix", "drop", src="10.1.2.18/31"))
    assert env.run(syn("10.1.2.19")) == XDP_PASS and not env.dp._config().plens4 & 1 << 31
    assert env.dp.delete_rule(Rule("src_prefix", "drop", src="10.0.0.0/8"))
    assert env.run(syn("10.9.9.9")) == XDP_PASS  # the filter is in use again: slot empty


def test_the_longest_ipv6_prefix_wins_across_every_bitmap_word(env):
    rules = {"fd00::/20": "drop", "fd00:1::/33": "pass", "fd00:1:0:1::/64": "drop",
             "fd00:1:0:1::1:0/112": "pass", "fd00:1:0:1::1:4/127": "drop"}
    for src, action in rules.items():
        env.dp.add_rule(Rule("src_prefix", action, src=src))
    assert list(env.dp._config().plens6) == [1 << 20, 1 << 1, 1 << 0, 1 << 16 | 1 << 31]
    got = [env.run(syn(s)) for s in ("fd00:f::1", "fd00:1::9", "fd00:1:0:1::9", "fd00:1:0:1::1:9",
                                     "fd00:1:0:1::1:5", "fd01::1")]
    assert got == [XDP_DROP, XDP_PASS, XDP_DROP, XDP_PASS, XDP_DROP, XDP_PASS]
    hits = {rs.rule.src: rs.hits for rs in env.dp.rules()}
    assert hits == dict.fromkeys(rules, 1)


def test_the_prefix_filter_counts_each_slot_and_a_source_whose_slot_is_empty_is_not_looked_up(env):
    a, b = Rule("src_prefix", "drop", src="10.5.1.0/24"), Rule("src_prefix", "drop", src="10.5.2.0/24")
    env.dp.add_rule(a)
    env.dp.add_rule(b)
    assert pfx_filter_word(env, "10.5.0.0/16") == 2
    # a prefix written behind Datapath's back: its length is in use but its /16's slot is 0
    key = Lpm4Key(24, (ctypes.c_uint8 * 4)(10, 6, 1, 0))
    env.dp._write("src_prefix4", key, RuleVal(0, 0, 0, 0, XG_ACT_DROP, 1), "prefix")
    assert (env.run(syn("10.5.1.1")), env.run(syn("10.6.1.1"))) == (XDP_DROP, XDP_PASS)
    env.dp.recount()
    assert pfx_filter_word(env, "10.6.0.0/16") == 1 and env.run(syn("10.6.1.1")) == XDP_DROP
    assert env.dp.delete_rule(a) and pfx_filter_word(env, "10.5.0.0/16") == 1
    assert env.dp.delete_rule(b) and pfx_filter_word(env, "10.5.0.0/16") == 0


def test_an_ipv6_source_skips_the_lengths_of_a_word_whose_band_is_empty_in_its_slot(env):
    # fd00::/32's slot: band 2 (lengths 64-95) counts the /64; /96 is in use (fd01::/96, band 3 of
    # fd01's slot) but band 3 of fd00's slot is 0, so a /96 written behind Datapath's back under
    # fd00::/32 is not looked up: the /64 answers. recount() raises band 3; then the /96 wins.
    env.dp.add_rule(Rule("src_prefix", "drop", src="fd00::/64"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="fd01::/96"))
    assert (pfx_filter_word(env, "fd00::/32"),
            pfx_filter_word(env, "fd01::/32")) == (1 << 16, 1 << 24)
    env.dp._write("src_prefix", lpm_key("fd00::/96"), RuleVal(0, 0, 0, 0, XG_ACT_PASS, 1), "prefix")
    assert env.run(syn("fd00::1")) == XDP_DROP
    env.dp.recount()
    assert pfx_filter_word(env, "fd00::/32") == 1 << 24 | 1 << 16
    assert env.run(syn("fd00::1")) == XDP_PASS
    assert env.run(syn("fd00::1:0:0:1")) == XDP_DROP  # in the /64 only
    # lengths 32-63 count in band 1
    env.dp.add_rule(Rule("src_prefix", "pass", src="fd02::/48"))
    assert pfx_filter_word(env, "fd02::/32") == 1 << 8 and env.run(syn("fd02::1")) == XDP_PASS


def test_an_expired_longest_prefix_skips_the_shorter_ones_to_the_limits(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.7.0.0/16"))
    env.dp.add_rule(Rule("src_prefix", "pass", src="10.7.1.0/24").with_times(time.time_ns() - 2_000_000_000, 1))
    with Delta(env) as d:
        assert env.run(syn("10.7.1.1")) == XDP_PASS  # as the trie did: expired longest match
    assert d["unmatched"] == 1 and d["drop_prefix"] == 0
