"""Rule precedence, counters, expiry, limits, sampling and map errors, on the real kernel through
BPF_PROG_TEST_RUN and the pinned maps (Datapath)."""
import ctypes
import os
import time

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, raw

from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.common.errors import ConfigError, MapFull, MapMismatch, NotLoaded
from services.dataplane.maps import open_pinned
from services.dataplane.structs import LimitKey, Stats
from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SYN = raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=1234, dport=80, flags="S"))


def exact(action="drop", **kw):
    base = dict(src="10.1.0.1", dst="10.2.0.2", sport=1234, dport=80, proto=6)
    return Rule("flow", action, **(base | kw))


def test_exact_drop_counts_hits_and_bytes_and_del_restores(env):
    env.dp.add_rule(exact())
    with Delta(env) as d:
        assert [env.run(SYN) for _ in range(3)] == [XDP_DROP] * 3
    assert (d["drop_exact"], d["seen"], d["unmatched"]) == (3, 3, 0)
    [rs] = env.dp.rules()
    assert (rs.hits, rs.bytes) == (3, 3 * len(SYN))
    assert env.dp.delete_rule(exact()) is True
    assert env.run(SYN) == XDP_PASS
    assert env.dp.delete_rule(exact()) is False


def test_allowlist_beats_an_exact_drop(env):
    env.dp.add_rule(exact())
    env.dp.allow_add("10.1.0.0/16")
    with Delta(env) as d:
        assert env.run(SYN) == XDP_PASS
    assert d["allowed"] == 1 and d["drop_exact"] == 0
    assert env.dp.allowlist() == ["10.1.0.0/16"]


def test_exact_pass_beats_a_source_prefix_drop(env):
    env.dp.add_rule(exact("pass"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.0/16"))
    assert env.run(SYN) == XDP_PASS
    other_port = raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=1235, dport=80))
    assert env.run(other_port) == XDP_DROP


def test_source_prefix_blocks_every_port_and_protocol_and_counts(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.0/16"))
    frames = [raw(ETH / IP(src=f"10.1.{i}.9", dst="10.9.9.9") / UDP(sport=i, dport=1000 + i)) for i in range(5)]
    assert [env.run(f) for f in frames] == [XDP_DROP] * 5
    assert env.run(raw(ETH / IP(src="10.3.0.1", dst="10.9.9.9") / UDP())) == XDP_PASS
    [rs] = env.dp.rules()
    assert (rs.rule.src, rs.hits, rs.dropped) == ("10.1.0.0/16", 5, 5)


def test_ipv6_exact_rule_lives_in_its_own_map(env):
    rule = Rule("flow", "drop", src="fd00::1", dst="fd00::2", sport=7, dport=8, proto=17)
    env.dp.add_rule(rule)
    assert env.run(raw(ETH / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=7, dport=8))) == XDP_DROP
    assert env.run(raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / UDP(sport=7, dport=8))) == XDP_PASS
    assert [rs.rule for rs in env.dp.rules()] == [rule] and env.dp.occupancy()["exact6"][0] == 1


def test_ipv6_source_prefix(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="fd00:bad::/32"))
    assert env.run(raw(ETH / IPv6(src="fd00:bad::7", dst="fd00::2") / UDP())) == XDP_DROP
    assert env.run(raw(ETH / IPv6(src="fd00:900d::7", dst="fd00::2") / UDP())) == XDP_PASS
    assert env.dp.rules()[0].rule.src == "fd00:bad::/32"


def test_longest_prefix_wins(env):
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.0.0.0/8"))
    env.dp.add_rule(Rule("src_prefix", "pass", src="10.1.0.0/16"))
    assert env.run(SYN) == XDP_PASS
    assert env.run(raw(ETH / IP(src="10.7.0.1", dst="10.2.0.2") / TCP())) == XDP_DROP


def test_source_prefix_drop_beats_a_destination_limit(env):
    env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", rate_pps=1_000_000))
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.1/32"))
    with Delta(env) as d:
        assert env.run(SYN) == XDP_DROP
    assert d["drop_prefix"] == 1 and d["drop_limit"] == 0


def test_limit_lets_the_burst_through_then_drops(env):
    env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", proto=6, rate_pps=50))
    with Delta(env) as d:
        verdicts = [env.run(SYN) for _ in range(20)]
    # 50 pps with a 0.1 s burst: about 5 packets at once, then drops
    assert 3 <= verdicts.count(XDP_PASS) <= 8 and verdicts[-1] == XDP_DROP
    assert d["drop_limit"] == verdicts.count(XDP_DROP) and d["events"] == 0
    [rs] = env.dp.rules()
    assert (rs.hits, rs.dropped) == (20, verdicts.count(XDP_DROP))


def test_limit_with_tcp_flag_mask_only_limits_matching_packets(env):
    env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", proto=6, tcp_flags=0x02, rate_pps=1))
    ack = raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=1234, dport=80, flags="A"))
    synack = raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=1234, dport=80, flags="SA"))
    assert [env.run(ack) for _ in range(5)] == [XDP_PASS] * 5
    assert len(env.events()) == 5  # not limited: unmatched, sampled
    syn_verdicts = [env.run(SYN) for _ in range(3)] + [env.run(synack)]
    assert syn_verdicts.count(XDP_DROP) >= 2 and syn_verdicts[-1] == XDP_DROP


def test_most_specific_limit_key_wins_and_wildcards_catch_the_rest(env):
    env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", proto=6, dport=80, rate_pps=10_000_000))
    env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", rate_pps=1))
    assert [env.run(SYN) for _ in range(10)] == [XDP_PASS] * 10
    udp = [env.run(raw(ETH / IP(src="10.1.0.1", dst="10.2.0.2") / UDP(dport=p))) for p in (53, 54, 55)]
    assert udp.count(XDP_DROP) >= 2
    assert env.events() == []


def test_a_fifth_tcp_flag_mask_for_one_destination_is_refused_and_leaves_nothing_behind(env):
    for mask in (0x01, 0x02, 0x04, 0x08):
        env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", proto=6, tcp_flags=mask, rate_pps=9))
    with pytest.raises(ConfigError, match="at most 4 distinct TCP-flag masks"):
        env.dp.add_rule(Rule("dst_limit", "limit", dst="10.2.0.2", proto=6, tcp_flags=0x10, rate_pps=9))
    assert sorted(r.rule.tcp_flags for r in env.dp.rules()) == [0x01, 0x02, 0x04, 0x08]
    fd, _ = open_pinned(env.pin_dir, "limit_stats")
    try:  # the refused rule's counter went with it
        assert sorted(k.tcp_flags for k in bpfsys.keys(fd, LimitKey)) == [0x01, 0x02, 0x04, 0x08]
    finally:
        os.close(fd)


def test_expired_rules_stop_matching_at_once(env):
    now = time.time_ns()
    env.dp.add_rule(exact().with_times(now - 2_000_000_000, 1))  # expired a second ago
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.1.0.0/16").with_times(now - 2_000_000_000, 1))
    assert env.run(SYN) == XDP_PASS
    env.dp.add_rule(exact().with_times(now, 0.3))
    assert env.run(SYN) == XDP_DROP
    [listed] = [rs.rule for rs in env.dp.rules() if rs.rule.scope.value == "flow"]
    assert abs(listed.expires_ns - (now + 300_000_000)) < 5_000_000  # monotonic <-> epoch round trip
    time.sleep(0.35)
    assert env.run(SYN) == XDP_PASS


def test_the_expiry_clock_is_a_coarse_reading_taken_since_jiffies_last_moved(env):
    # expired() compares against a per-CPU (jiffies, coarse ns) pair in the stats entry, read
    # again only when jiffies moves: after a run it must be a reading of CLOCK_MONOTONIC_COARSE
    # taken during that run (never ahead of time.monotonic_ns(): no rule expires early)
    env.dp.add_rule(exact().with_times(time.time_ns(), 60))  # an expiry, so the clock is read
    tick = time.clock_getres(6) * 1e9  # CLOCK_MONOTONIC_COARSE (Linux; not in the time module)
    cpu = sorted(os.sched_getaffinity(0))[0]
    fd, _ = open_pinned(env.pin_dir, "stats")
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(max(0.03, 3 * tick / 1e9))  # jiffies moves (any HZ >= 100)
        before = time.monotonic_ns()
        assert env.run(SYN) == XDP_DROP
        after = time.monotonic_ns()
        per_cpu = (Stats * bpfsys.possible_cpus())()
        assert bpfsys.lookup(fd, ctypes.c_uint32(0), per_cpu)
    finally:
        os.sched_setaffinity(0, mask)
        os.close(fd)
    clk = per_cpu[cpu]
    assert clk.clk_jiffies != 0
    assert before - 2 * tick <= clk.clk_ns <= after
    assert "clk_ns" not in env.dp.stats() and "clk_jiffies" not in env.dp.stats()


def test_sampling_one_in_n_and_off(env):
    frame = raw(ETH / IP(src="10.5.0.1", dst="10.5.0.2") / UDP())
    env.dp.set_sample_rate(4)
    with Delta(env) as d:
        for _ in range(100):
            env.run(frame)
    assert d["unmatched"] == 100 and 24 <= d["events"] <= 26 and len(env.events()) == d["events"]
    env.dp.set_sample_rate(0)
    with Delta(env) as d:
        env.run(frame, repeat=50)
    assert d["unmatched"] == 50 and d["events"] == 0 and env.events() == []
    assert env.dp.sample_rate() == 0


def test_full_ring_counts_lost_events(env):
    frame = raw(ETH / IP(src="10.5.0.1", dst="10.5.0.2") / UDP())
    ring_slots = 16 * 4096 // 64  # 16 pages of 56-byte events + 8-byte headers
    with Delta(env) as d:
        env.run(frame, repeat=ring_slots + 500)
    assert d["events_lost"] >= 500 and d["events"] + d["events_lost"] == d["unmatched"]
    assert env.ring.lost() >= 500
    assert len(env.events()) == d["events"]


def test_a_full_exact_map_raises_map_full(env):
    for i in range(64):
        env.dp.add_rule(exact(sport=i))
    with pytest.raises(MapFull, match=r"exact-rule \(IPv4\) map is full"):
        env.dp.add_rule(exact(sport=1000))
    env.dp.add_rule(exact(sport=5, action="pass"))  # replacing an existing rule still works


def test_open_refuses_maps_of_another_layout(env, tmp_path):
    from bcc import BPF
    fake = env.pin_dir + "-fake"
    os.mkdir(fake)
    b = BPF(text="BPF_HASH(exact4, u32, u64, 64); BPF_PERCPU_HASH(exact2, struct xg_flow4_key, struct xg_rule, 32);",
            cflags=[f"-include{loader.BPF_DIR}/xdpguard.h"])
    try:
        for name in loader.MAP_NAMES + ("prog",):
            if name != "exact4":
                fd = bpfsys.obj_get(f"{env.pin_dir}/{name}")
                bpfsys.obj_pin(fd, f"{fake}/{name}")
                os.close(fd)
        bpfsys.obj_pin(b[b"exact4"].map_fd, f"{fake}/exact4")
        with pytest.raises(MapMismatch, match=r"exact4 has type hash \(expected per-CPU hash\), "
                                              r"key size 4 \(expected 16\)"):
            Datapath.open(fake)
        os.unlink(f"{fake}/exact4")
        bpfsys.obj_pin(b[b"exact2"].map_fd, f"{fake}/exact4")  # right layout, wrong size
        with pytest.raises(MapMismatch, match=r"max entries 32 \(expected 64\)"):
            Datapath.open(fake)
    finally:
        b.cleanup()
        for name in os.listdir(fake):
            os.unlink(f"{fake}/{name}")
        os.rmdir(fake)


def test_open_without_a_program_is_not_loaded(tmp_path):
    with pytest.raises(NotLoaded, match="xdpguard load"):
        Datapath.open("/sys/fs/bpf/xdpguard-test-nothing-here")
