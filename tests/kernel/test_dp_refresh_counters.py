"""A rule written again over itself (an enforcer REFRESH: same key, same creation time, a later
expiry; or a manual rule over a model rule) keeps its counters: each CPU's packets and bytes
in the per-CPU rule maps and the inline host slots, a limit rule's limit_stats counter; the
rest of the entry is the new value's. A rule deleted, then added, starts at 0. Every kind of
rule map: exact4 / exact6, src_prefix4 / src_prefix, src_host4 / src_host6, src_host_slot,
dst_limit. Real kernel, BPF_PROG_TEST_RUN on chosen CPUs (a test run counts on the CPU it
runs on), the pinned maps read per CPU."""
import ctypes
import ipaddress
import os
import time
from dataclasses import replace

import pytest
from scapy.all import IP, TCP, Ether, IPv6, raw

from services.dataplane import bpfsys
from services.dataplane.entries import flow_key, limit_key, prefix_slot
from services.dataplane.structs import host_slot
from services.records.rules import Origin, Rule, Scope
from tests.support.dp_env import sharing

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A4, A6 = "10.5.0.1", "fd00::9"


def _sharing6(addr: str) -> str:
    """Another IPv6 address whose inline host slot is `addr`'s (the first after it)."""
    want, ip = host_slot(addr), ipaddress.IPv6Address(addr)
    while True:
        ip += 1
        if host_slot(str(ip)) == want:
            return str(ip)


def _tcp(src: str, dst: str, sport: int = 1234, dport: int = 80) -> bytes:
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return raw(ETH / l3 / TCP(sport=sport, dport=dport, flags="S"))


# (label, rule, a frame it matches), each frame matching its rule alone
CASES = [
    ("exact4", Rule("flow", "drop", src="10.1.0.1", dst="10.2.0.2", sport=7, dport=8, proto=6),
     _tcp("10.1.0.1", "10.2.0.2", 7, 8)),
    ("exact6", Rule("flow", "drop", src="fd00::1", dst="fd00::2", sport=7, dport=8, proto=6),
     _tcp("fd00::1", "fd00::2", 7, 8)),
    ("src_prefix4", Rule("src_prefix", "drop", src="10.7.0.0/16"), _tcp("10.7.3.3", "10.2.0.2")),
    ("src_prefix", Rule("src_prefix", "drop", src="fd00:bad::/32"), _tcp("fd00:bad::5", "fd00::2")),
    ("slot4", Rule("src_prefix", "drop", src=A4 + "/32"), _tcp(A4, "10.2.0.2")),
    ("src_host4", Rule("src_prefix", "drop", src=sharing(A4) + "/32"), _tcp(sharing(A4), "10.2.0.2")),
    ("slot6", Rule("src_prefix", "drop", src=A6 + "/128"), _tcp(A6, "fd00::2")),
    ("src_host6", Rule("src_prefix", "drop", src=_sharing6(A6) + "/128"), _tcp(_sharing6(A6), "fd00::2")),
    ("dst_limit", Rule("dst_limit", "limit", dst="10.9.0.9", proto=6, rate_pps=50),
     _tcp("192.0.2.1", "10.9.0.9")),
]
IDS = [c[0] for c in CASES]
CPUS = sorted(os.sched_getaffinity(0))[:2]  # two CPUs where there are two


def percpu(env, rule: Rule) -> list[tuple[int, ...]]:
    """The counters of `rule`'s entry on each CPU, read from the map it is in: (packets, bytes)
    of its RuleVal (the inline slot's .rule for a host rule there), (packets, bytes, dropped)
    of a limit rule's limit_stats; [] when there is no entry."""
    dp = env.dp

    def read(name, key):
        m = dp._maps[name]
        arr = (m.value * dp._ncpu)()
        return arr if bpfsys.lookup(m.fd, key, arr) else None

    if rule.scope is Scope.FLOW:
        name, key = flow_key(rule)
    elif rule.scope is Scope.SRC_PREFIX:
        name, key, _ = prefix_slot(rule)
        if name in ("src_host4", "src_host6") and dp._host_slot_of(rule, name)[1].family:
            arr = read("src_host_slot", ctypes.c_uint32(host_slot(rule.src.split("/")[0])))
            return [(v.rule.packets, v.rule.bytes) for v in arr]
    else:
        arr = read("limit_stats", limit_key(rule))
        return [] if arr is None else [(v.packets, v.bytes, v.dropped) for v in arr]
    arr = read(name, key)
    return [] if arr is None else [(getattr(v, "rule", v).packets, getattr(v, "rule", v).bytes)
                                   for v in arr]  # exact6's value holds the rule in .rule


def run_on(env, cpu: int, frame: bytes, n: int) -> None:
    """Run `frame` through the program `n` times on CPU `cpu`."""
    was = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        env.run(frame, repeat=n)
    finally:
        os.sched_setaffinity(0, was)


def listed(env, rule: Rule):
    """rules()'s RuleStats of `rule` (by key)."""
    got = [rs for rs in env.dp.rules() if rs.rule.key() == rule.key()]
    assert len(got) == 1, (rule.key(), got)
    return got[0]


def installed(env, now: int) -> list[Rule]:
    """Every case's rule added with a 60 s TTL, each hit 3 times on the first CPU and 5 on the
    second (all 8 on the one CPU there is)."""
    rules = [rule.with_times(now, 60) for _, rule, _ in CASES]
    for rule in rules:
        env.dp.add_rule(replace(rule, origin=Origin.MODEL))
    occ = env.dp.occupancy()  # each host rule where its label says
    assert (occ["src_host_slot"][0], occ["src_host4"][0], occ["src_host6"][0]) == (2, 1, 1)
    for (_, _, frame) in CASES:
        run_on(env, CPUS[0], frame, 3)
        run_on(env, CPUS[-1], frame, 5)
    return rules


def test_a_refresh_keeps_every_cpu_s_counters_and_takes_the_new_expiry(env):
    now = time.time_ns()
    rules = installed(env, now)
    before = {r.key(): percpu(env, r) for r in rules}
    for (label, _, frame), rule in zip(CASES, rules):
        got = before[rule.key()]
        assert sum(c[0] for c in got) == 8, label
        if len(CPUS) == 2:  # counted on the CPU each run ran on
            assert (got[CPUS[0]][0], got[CPUS[1]][0]) == (3, 5), label
        assert sum(c[1] for c in got) == 8 * len(frame), label
    for rule in rules:  # the enforcer's REFRESH: same creation time, a later expiry
        env.dp.add_rule(replace(rule, origin=Origin.MODEL).with_times(now, 600))
    for (label, _, _), rule in zip(CASES, rules):
        assert percpu(env, rule) == before[rule.key()], label
        rs = listed(env, rule)
        assert abs(rs.rule.expires_ns - (now + 600_000_000_000)) < 1_000_000, label
        assert rs.rule.created_ns == now and rs.hits == 8, label
    occ = env.dp.occupancy()  # replaced where they were: no entry added
    assert (occ["src_host_slot"][0], occ["src_host4"][0], occ["src_host6"][0]) == (2, 1, 1)
    for (label, _, frame), rule in zip(CASES, rules):  # more packets add to the kept counters
        run_on(env, CPUS[0], frame, 2)
        want = [c[0] + 2 * (cpu == CPUS[0]) for cpu, c in enumerate(before[rule.key()])]
        after = percpu(env, rule)
        assert [c[0] for c in after] == want, label
        assert sum(c[1] for c in after) == 10 * len(frame), label
        assert listed(env, rule).hits == 10, label


def test_a_replace_takes_the_new_action_and_origin_and_keeps_the_counters(env):
    """A manual rule written over a model rule's key (`xdpguard add`): the new action, origin
    (and a limit rule's new rate); the counters carried over."""
    now = time.time_ns()
    rules = installed(env, now)
    hits = {r.key(): listed(env, r).hits for r in rules}
    for rule in rules:
        new = (replace(rule, rate_pps=70) if rule.scope is Scope.DST_LIMIT
               else replace(rule, action="pass"))
        env.dp.add_rule(replace(new, origin=Origin.MANUAL).with_times(now + 1, 300))
    for (label, _, _), rule in zip(CASES, rules):
        rs = listed(env, rule)
        assert rs.rule.origin is Origin.MANUAL and rs.rule.created_ns == now + 1, label
        assert (rs.rule.rate_pps == 70 if rule.scope is Scope.DST_LIMIT
                else rs.rule.action.value == "pass"), label
        assert rs.hits == hits[rule.key()] == 8, label


@pytest.mark.parametrize("label,rule,frame", CASES, ids=IDS)
def test_a_rule_deleted_then_added_starts_at_zero(env, label, rule, frame):
    now = time.time_ns()
    installed(env, now)
    assert listed(env, rule).hits == 8
    assert env.dp.delete_rule(rule)
    assert percpu(env, rule) == []
    env.dp.add_rule(rule.with_times(now, 600))
    got = percpu(env, rule)
    assert got and all(not any(c) for c in got), got
    assert listed(env, rule).hits == 0
    run_on(env, CPUS[0], frame, 1)
    assert listed(env, rule).hits == 1


def test_a_refreshed_limit_rule_keeps_its_bucket(env):
    """A destination limit at 50/s (burst 0.1 s: 5 packets) drained by a run of 40 packets
    drops the excess; a REFRESH then rewrites the rule. Its GCRA state (tat) is carried over,
    so the next packets meet the drained bucket and are dropped, where a bucket written from
    0 would pass a fresh burst of 5 (the old replace's behaviour)."""
    now = time.time_ns()
    rule = CASES[-1][1].with_times(now, 60)
    frame = CASES[-1][2]
    env.dp.add_rule(rule)
    env.run(frame, repeat=40)
    dropped = sum(c[2] for c in percpu(env, rule))
    assert dropped >= 30, dropped  # the bucket is drained: the excess was dropped
    key = limit_key(rule)
    m = env.dp._maps["dst_limit"]
    tat = m.value()
    assert bpfsys.lookup(m.fd, key, tat) and tat.tat > 0
    before = tat.tat
    env.dp.add_rule(rule.with_times(now, 600))  # the enforcer's REFRESH
    got = m.value()
    assert bpfsys.lookup(m.fd, key, got)
    assert got.tat >= before  # kept (the program only moves it forward)
    env.run(frame, repeat=5)
    assert sum(c[2] for c in percpu(env, rule)) - dropped >= 4  # no fresh burst passed
