"""Bad input to the data plane: the XDP program run (BPF_PROG_TEST_RUN) on a seeded set of random,
mutated, truncated and oversized frames against a rule set of every scope. Each answer is checked
against the reference model in tests/support/xdpfuzz.py: nothing without a matching drop or
limit rule is dropped, allowlisted sources always pass, nothing is aborted, parse failures and
non-IP frames are counted (and passed), and every sampled event carries exactly the fields the
reference parser reads. bench/fuzz_xdp.py runs the same for >= 1,000,000 frames."""
import os

import pytest

from tests.support.xdpfuzz import XDP_DROP, Frames, run_fuzz

FRAMES = int(os.environ.get("XDPGUARD_FUZZ_FRAMES", "6000"))


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
        assert fuzz_env.run(f) in want, pkt.summary()
    fuzz_env.events()


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
