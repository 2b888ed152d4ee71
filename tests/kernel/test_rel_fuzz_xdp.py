"""Bad input to the data plane: the XDP program run (BPF_PROG_TEST_RUN) on a seeded set of random,
mutated, truncated and oversized frames against a rule set of every scope. Each answer is checked
against the reference model in tests/support/xdpfuzz.py: nothing without a matching drop or
limit rule is dropped, allowlisted sources always pass, nothing is aborted, parse failures and
non-IP frames are counted (and passed), and every sampled event carries exactly the fields the
reference parser reads. bench/fuzz_xdp.py runs the same for >= 1,000,000 frames."""
import os
import time
import uuid

import pytest

from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.dataplane.ringbuf import RingReader
from services.dataplane.structs import addr_text
from tests.support import caps
from tests.support.xdpfuzz import XDP_DROP, Frames, Model, rule_set

FRAMES = int(os.environ.get("XDPGUARD_FUZZ_FRAMES", "6000"))
SIZES = loader.Sizes(exact=64, prefix=64, allow=64, limit=16, ring_pages=64)


class FuzzEnv:
    """A loaded, unattached program with the fuzz rule set, its ring, and the reference model."""

    def __init__(self) -> None:
        self.pin_dir = f"/sys/fs/bpf/xdpguard-fuzz-{uuid.uuid4().hex[:8]}"
        loader.load([], pin_dir=self.pin_dir, sizes=SIZES)
        self.fd = loader.prog_fd(self.pin_dir)
        self.dp = Datapath.open(self.pin_dir)
        self.ring = RingReader(self.pin_dir)
        now = time.time_ns()
        rules, allow = rule_set(now)
        for r in rules:
            self.dp.add_rule(r if r.expires_ns else r.with_times(now, None))
        for cidr in allow:
            self.dp.allow_add(cidr)
        self.model = Model(rules, allow, now)

    def drain(self) -> list:
        out = []
        while batch := self.ring.poll(0):
            out.extend(batch)
        return out

    def close(self) -> None:
        self.ring.close()
        self.dp.close()
        os.close(self.fd)
        loader.unload_all(self.pin_dir)


def run_fuzz(env: FuzzEnv, frames, n: int, check_events: bool = True) -> dict:
    """Run n frames; raise AssertionError at the first wrong answer. Returns tallies."""
    tally = {"frames": 0, "drop": 0, "fail": 0, "non_ip": 0, "unmatched": 0, "events": 0}
    expected_events: list[tuple] = []
    before = env.dp.stats()
    for i in range(n):
        f = next(frames)
        verdict = bpfsys.prog_test_run(env.fd, f)[0]
        allowed, why, p = env.model.expect(f)
        assert verdict in allowed, (f"frame {i} ({why}): kernel said {verdict}, model allows "
                                    f"{sorted(allowed)}; frame={f.hex()}")
        tally["frames"] += 1
        tally["drop"] += verdict == XDP_DROP
        if why in ("fail", "non_ip", "unmatched"):
            tally[why] += 1
        if why == "unmatched" and check_events:
            expected_events.append((addr_text(p.saddr), addr_text(p.daddr), p.sport, p.dport,
                                    p.proto, p.tcp_flags, len(f), f.hex()))
        if check_events and (len(expected_events) >= 200 or i == n - 1):
            got = env.drain()
            assert len(got) == len(expected_events), "sampled events lost or invented"
            for ev, want in zip(got, expected_events):
                assert (ev.src, ev.dst, ev.sport, ev.dport, ev.proto, ev.tcp_flags, ev.length) \
                    == want[:7], f"event differs from the reference parse of {want[7]}"
            tally["events"] += len(got)
            expected_events = []
    after = env.dp.stats()
    delta = {k: after[k] - before[k] for k in after}
    assert delta["seen"] == n
    assert delta["drop_exact"] + delta["drop_prefix"] + delta["drop_limit"] == tally["drop"]
    assert delta["passed"] == n - tally["drop"]
    assert delta["parse_fail"] == tally["fail"] and delta["non_ip"] == tally["non_ip"]
    assert delta["unmatched"] == tally["unmatched"]
    if check_events:
        assert delta["events_lost"] == 0
    return tally


@pytest.fixture(scope="module")
def fuzz_env():
    caps.require(caps.have_root() and caps.have_bpffs() and caps.have_bcc(), "needs root, bpffs, BCC")
    env = FuzzEnv()
    yield env
    env.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_rel_fuzzed_frames_are_dropped_only_by_a_matching_rule(fuzz_env, seed):
    tally = run_fuzz(fuzz_env, Frames(seed), FRAMES // 2)
    # the generator must reach every branch the invariant is about
    assert tally["drop"] > 50 and tally["fail"] > 50 and tally["non_ip"] > 10
    assert tally["events"] > 100


def test_rel_fuzz_model_agrees_with_the_kernel_on_known_frames(fuzz_env):
    """The reference model is itself checked on frames whose answer is known."""
    from scapy.all import IP, TCP, UDP, Ether, IPv6, raw
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    cases = [
        (eth / IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=1000, dport=80), {XDP_DROP}),
        (eth / IP(src="10.66.7.7", dst="10.2.0.2") / TCP(sport=1000, dport=80), {2}),  # allowlisted
        (eth / IP(src="10.66.5.9", dst="10.9.9.9") / UDP(), {2}),        # more specific pass prefix
        (eth / IP(src="10.66.0.1", dst="10.9.9.9") / UDP(), {XDP_DROP}),  # drop prefix
        (eth / IP(src="10.77.1.1", dst="10.9.9.9") / UDP(), {2}),        # expired prefix
        (eth / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=1000, dport=80), {2}),  # allowlisted
        (eth / IPv6(src="fd66::1", dst="fd00::2") / UDP(), {XDP_DROP}),
    ]
    for pkt, want in cases:
        f = raw(pkt)
        assert fuzz_env.model.expect(f)[0] == want, pkt.summary()
        assert bpfsys.prog_test_run(fuzz_env.fd, f)[0] in want, pkt.summary()
    fuzz_env.drain()


def test_rel_out_of_range_rule_values_are_refused_not_truncated(fuzz_env):
    """Values wider than the kernel's fields are refused, never truncated by ctypes (a limit of
    2**32 + 7 pps would otherwise be installed as 7 pps)."""
    from services.records.rules import Action, Rule, Scope
    before = sorted(r.rule.key() for r in fuzz_env.dp.rules())
    for bad in (dict(rate_pps=2**32 + 7), dict(rate_pps=10, tcp_flags=0x1ff),
                dict(rate_pps=10, expires_ns=2**64)):
        with pytest.raises(ValueError):
            fuzz_env.dp.add_rule(Rule(Scope.DST_LIMIT, Action.LIMIT, dst="198.18.0.1", **bad))
    assert sorted(r.rule.key() for r in fuzz_env.dp.rules()) == before
