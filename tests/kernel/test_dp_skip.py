"""Host rules (/32, /128) in their own hashes and the lookups the program skips: a map whose rule
count in the config map is 0, and the exact and host maps for a source whose src_filter slot is 0
(issue 16), and that the verifier inlines every lookup the program makes (bpftool's xlated dump).
Real kernel, BPF_PROG_TEST_RUN, the pinned maps."""
import ctypes
import subprocess
import time

from scapy.all import IP, TCP, Ether, IPv6, raw

from services.dataplane import bpfsys
from services.dataplane.structs import (XG_ACT_DROP, Addr4Key, FilterSlot, Flow4Key, RuleVal,
                                        filter_slot)
from services.records.rules import Rule
from tests.support import caps
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SYN = raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=1234, dport=80, flags="S"))
ZERO = dict(n_allow=0, n_exact4=0, n_exact6=0, n_exact6x=0, n_host4=0, n_host6=0, n_prefix4=0, n_prefix6=0,
            n_limit=0, n_host_slot=0)


def slot(env, src: str) -> tuple[int, int]:
    """(exact rules, host rules) counted in the src_filter slot of `src`."""
    got = FilterSlot()
    bpfsys.lookup(env.dp._maps["src_filter"].fd, ctypes.c_uint32(filter_slot(src)), got)
    return got.exact, got.host


def test_host_rules_sit_in_their_own_maps_and_beat_shorter_prefixes_with_their_own_counters(env):
    env.dp.add_rule(Rule("src_prefix", "pass", src="10.1.0.0/16"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.1/32"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="fd00::1/128"))
    occ = env.dp.occupancy()
    # both hosts have their inline slot to themselves (tests/kernel/test_dp_host_slot.py: the hashes)
    assert (occ["src_host_slot"][0], occ["src_host4"][0], occ["src_host6"][0], occ["src_prefix4"][0],
            occ["src_prefix"][0]) == (2, 0, 0, 1, 0)
    v6 = raw(ETH / IPv6(src="fd00::1", dst="fd00::2") / TCP())
    with Delta(env) as d:
        assert [env.run(SYN), env.run(SYN), env.run(v6)] == [XDP_DROP] * 3
        assert env.run(raw(ETH / IP(src="10.1.0.2", dst="10.2.0.2") / TCP())) == XDP_PASS
    assert d["drop_prefix"] == 3 and d["rule_pass"] == 1
    hits = {rs.rule.src: (rs.hits, rs.dropped) for rs in env.dp.rules()}
    assert hits == {"10.1.0.0/16": (1, 0), "10.1.0.1/32": (2, 2), "fd00::1/128": (1, 1)}
    assert env.dp.delete_rule(Rule("src_prefix", "drop", src="10.1.0.1/32"))
    assert env.run(SYN) == XDP_PASS  # the /16 again
    assert env.dp.occupancy()["src_host_slot"][0] == 1


def test_an_exact_pass_still_beats_a_host_drop(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.1/32"))
    env.dp.add_rule(Rule("flow", "pass", src="10.1.0.1", dst="10.2.0.2", sport=1234, dport=80, proto=6))
    with Delta(env) as d:
        assert env.run(SYN) == XDP_PASS
    assert d["rule_pass"] == 1 and d["drop_prefix"] == 0


def test_an_expired_host_rule_skips_the_prefixes_to_the_next_level(env):
    now = time.time_ns()
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.0/16"))
    env.dp.add_rule(Rule("src_prefix", "pass", src="10.1.0.1/32").with_times(now - 2_000_000_000, 1))
    with Delta(env) as d:
        assert env.run(SYN) == XDP_PASS  # as when the /32 sat in the trie: expired longest match
    assert d["unmatched"] == 1 and d["drop_prefix"] == 0


def test_a_v4_mapped_ipv6_source_still_meets_the_ipv4_host_and_prefix_rules(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.1/32"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.3.0.0/16"))
    for src in ("::ffff:10.1.0.1", "::ffff:10.3.4.5"):
        assert env.run(raw(ETH / IPv6(src=src, dst="fd00::2") / TCP())) == XDP_DROP


def test_rule_counts_follow_adds_replaces_and_deletes(env):
    assert env.dp.counts() == ZERO
    host, exact = Rule("src_prefix", "drop", src="10.1.0.1/32"), Rule(
        "flow", "drop", src="fd00::1", dst="fd00::2", sport=1, dport=2, proto=6)
    for rule in (host, host, exact, Rule("src_prefix", "pass", src="10.9.0.0/16"),
                 Rule("src_prefix", "drop", src="fd00:9::/48"),
                 Rule("dst_limit", "limit", dst="10.2.0.2", rate_pps=10)):
        env.dp.add_rule(rule)  # the host rule twice: a replace counts once
    env.dp.allow_add("10.8.0.0/16")
    env.dp.allow_add("10.8.0.0/16")
    # the host rule sits in its inline slot: n_host4 counts the src_host4 hash only (still 0),
    # n_host_slot and its src_filter slot count it
    want = ZERO | dict(n_allow=1, n_exact6=1, n_prefix4=1, n_prefix6=1, n_limit=1, n_host_slot=1)
    assert env.dp.counts() == want
    assert (slot(env, "10.1.0.1"), slot(env, "fd00::1")) == ((0, 1), (1, 0))
    assert env.dp.recount() == want
    assert env.dp.delete_rule(host) and not env.dp.delete_rule(host)
    assert env.dp.counts()["n_host_slot"] == 0 and slot(env, "10.1.0.1") == (0, 0)
    assert env.dp.allow_del("10.8.0.0/16") and env.dp.counts()["n_allow"] == 0


def test_a_rule_written_behind_datapaths_back_is_skipped_until_recount(env):
    """The skip is real: with its map's count and its source's slot at 0 the program never looks
    the rule up; recount() makes it match."""
    key = Flow4Key((ctypes.c_uint8 * 4)(10, 1, 0, 1), (ctypes.c_uint8 * 4)(10, 2, 0, 2), 1234, 80, 6)
    env.dp._write("exact4", key, RuleVal(0, 0, 0, 0, XG_ACT_DROP, 1), "exact")
    env.dp._write("src_host4", Addr4Key((ctypes.c_uint8 * 4)(10, 1, 0, 9)),
                  RuleVal(0, 0, 0, 0, XG_ACT_DROP, 1), "host")
    other = raw(ETH / IP(src="10.1.0.9", dst="10.2.0.2") / TCP())
    assert (env.run(SYN), env.run(other)) == (XDP_PASS, XDP_PASS)
    assert env.dp.recount()["n_exact4"] == 1 and slot(env, "10.1.0.1") == (1, 0)
    assert slot(env, "10.1.0.9") == (0, 1)
    assert (env.run(SYN), env.run(other)) == (XDP_DROP, XDP_DROP)


def test_a_filter_slot_counting_no_rule_of_a_kind_skips_that_lookup(env):
    env.dp.add_rule(Rule("flow", "drop", src="10.1.0.1", dst="10.2.0.2", sport=1234, dport=80, proto=6))
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.1/32"))
    other = raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=999))  # not the exact rule's
    fd = env.dp._maps["src_filter"].fd
    bpfsys.update(fd, ctypes.c_uint32(filter_slot("10.1.0.1")), FilterSlot(0, 1))
    with Delta(env) as d:  # "no exact rule for this source": the host rule drops it instead
        assert env.run(SYN) == XDP_DROP
    assert d["drop_prefix"] == 1 and d["drop_exact"] == 0
    bpfsys.update(fd, ctypes.c_uint32(filter_slot("10.1.0.1")), FilterSlot(1, 0))
    assert env.run(other) == XDP_PASS  # "no host rule": not looked up
    env.dp.recount()
    assert (env.run(SYN), env.run(other)) == (XDP_DROP, XDP_DROP)


def test_the_verifier_inlines_every_map_lookup_of_the_program(env):
    """A lookup call site that sees two maps (LLVM's tail merging joined exact4's and exact6's
    once) is not inlined: it goes through bpf_map_lookup_elem's indirect call, ~25 ns more per
    exact drop (docs/benchmarks.md). The xlated program must hold no such call."""
    caps.require(caps.have_tool("bpftool"), "bpftool is needed to read the xlated program")
    prog_id = next(int(line.split()[1]) for line in open(f"/proc/self/fdinfo/{env.fd}")
                   if line.startswith("prog_id:"))
    xlated = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)],
                            check=True, capture_output=True, text=True).stdout
    caps.require("__htab_map_lookup_elem" in xlated, "bpftool shows no kernel symbol names here")
    assert "call bpf_map_lookup_elem" not in xlated
