"""Every parse path of the XDP program, run on crafted frames with BPF_PROG_TEST_RUN: what the
sampled event says, which rules the parsed fields match, and that anything malformed passes and
is counted."""
import pytest
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6EchoReply,
                       ICMPv6EchoRequest, ICMPv6ND_NS, IPOption_RR, IPv6, IPv6ExtHdrFragment,
                       IPv6ExtHdrHopByHop, Raw, fragment, raw)

from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def flow(src, dst, sport, dport, proto, action="drop"):
    return Rule("flow", action, src=src, dst=dst, sport=sport, dport=dport, proto=proto)


def test_ipv4_tcp_event_carries_the_five_tuple_flags_and_frame_length(env):
    frame = raw(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags="SA"))
    assert env.run(frame) == XDP_PASS
    [ev] = env.events()
    assert (ev.src, ev.dst, ev.sport, ev.dport, ev.proto, ev.tcp_flags) == \
        ("10.0.0.1", "10.0.0.2", 1234, 80, 6, 0x12)
    assert ev.length == len(frame)


@pytest.mark.parametrize("l4,proto,ports", [
    (UDP(sport=53, dport=5353), 17, (53, 5353)),
    (ICMP(), 1, (0, 0)),
])
def test_ipv4_udp_and_icmp_events(env, l4, proto, ports):
    assert env.run(raw(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / l4)) == XDP_PASS
    [ev] = env.events()
    assert (ev.proto, ev.sport, ev.dport) == (proto, *ports)


V4, V6 = IP(src="10.0.0.1", dst="10.0.0.2"), IPv6(src="fd00::2", dst="fd00::1")


@pytest.mark.parametrize("frame,proto,icmp_type", [
    (ETH / V4 / ICMP(type=8), 1, 8),
    (ETH / V4 / ICMP(type=0), 1, 0),
    (ETH / IPv6(src="fe80::2", dst="fd00::1", hlim=255) / ICMPv6ND_NS(tgt="fd00::1"), 58, 135),
    (ETH / V6 / ICMPv6EchoReply(), 58, 129),
    (ETH / V6 / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(), 58, 128),
    (ETH / V4 / TCP(sport=1, dport=2), 6, 255),
    (ETH / IP(src="10.0.0.1", dst="10.0.0.2", proto=1, frag=10) / Raw(b"x" * 40), 1, 255),
], ids=["icmp-echo", "icmp-reply", "icmpv6-ns", "icmpv6-reply", "icmpv6-echo-hbh", "tcp",
        "icmp-later-fragment"])
def test_an_event_carries_the_icmp_type(env, frame, proto, icmp_type):
    """The ICMP/ICMPv6 type byte (xg_event.icmp_type) of an echo, a reply and a neighbour
    solicitation; XG_ICMP_NONE (255) where no ICMP header was read (TCP, a later fragment)."""
    assert env.run(raw(frame)) == XDP_PASS
    [ev] = env.events()
    assert (ev.proto, ev.icmp_type) == (proto, icmp_type)


def test_ipv4_options_move_the_l4_header_and_rules_still_match(env):
    env.dp.add_rule(flow("10.0.0.1", "10.0.0.2", 1111, 22, 6))
    frame = raw(ETH / IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR()]) / TCP(sport=1111, dport=22))
    assert frame[14] & 0x0F > 5
    assert env.run(frame) == XDP_DROP


@pytest.mark.parametrize("tags", [Dot1Q(vlan=10), Dot1AD(vlan=20) / Dot1Q(vlan=10)], ids=["vlan", "qinq"])
def test_vlan_and_qinq_frames_are_parsed_to_the_ip_header(env, tags):
    env.dp.add_rule(flow("10.0.0.1", "10.0.0.2", 4000, 443, 6))
    match = raw(ETH / tags / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=4000, dport=443))
    other = raw(ETH / tags / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=4001, dport=443))
    assert env.run(match) == XDP_DROP
    assert env.run(other) == XDP_PASS
    [ev] = env.events()
    assert (ev.sport, ev.dport, ev.length) == (4001, 443, len(other))


def test_three_vlan_tags_are_not_followed_and_pass(env):
    frame = raw(ETH / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / TCP())
    with Delta(env) as d:
        assert env.run(frame) == XDP_PASS
    assert d["non_ip"] == 1 and d["unmatched"] == 0


def test_ipv4_fragments_first_has_ports_later_ones_match_with_ports_zero(env):
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=9999, dport=53) / Raw(b"x" * 300)
    first, second = fragment(pkt, fragsize=120)[:2]
    env.dp.add_rule(flow("10.0.0.1", "10.0.0.2", 0, 0, 17))  # what later fragments look like
    with Delta(env) as d:
        assert env.run(raw(ETH / first)) == XDP_PASS   # ports 9999/53: no match
        assert env.run(raw(ETH / second)) == XDP_DROP  # ports 0: matches
    assert d["fragments"] == 1
    [ev] = env.events()
    assert (ev.sport, ev.dport) == (9999, 53)


def test_ipv6_tcp_udp_icmpv6(env):
    for l4, proto, ports in ((TCP(sport=5, dport=6, flags="S"), 6, (5, 6)),
                             (UDP(sport=7, dport=8), 17, (7, 8)), (ICMPv6EchoRequest(), 58, (0, 0))):
        assert env.run(raw(ETH / IPv6(src="fd00::1", dst="fd00::2") / l4)) == XDP_PASS
        [ev] = env.events()
        assert (ev.src, ev.dst, ev.proto, (ev.sport, ev.dport)) == ("fd00::1", "fd00::2", proto, ports)


def test_ipv6_extension_header_and_fragments(env):
    env.dp.add_rule(flow("fd00::1", "fd00::2", 1000, 2000, 17))
    hbh = raw(ETH / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / UDP(sport=1000, dport=2000))
    assert env.run(hbh) == XDP_DROP
    first = raw(ETH / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=0, m=1, id=5)
                / UDP(sport=1000, dport=2000))
    assert env.run(first) == XDP_DROP
    later = raw(ETH / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=10, m=0, id=5, nh=17)
                / Raw(b"y" * 40))
    with Delta(env) as d:
        assert env.run(later) == XDP_PASS
    assert d["fragments"] == 1
    [ev] = env.events()
    assert (ev.proto, ev.sport, ev.dport) == (17, 0, 0)


@pytest.mark.parametrize("frame", [
    raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800)),  # IPv4, no header
    raw(ETH / IP(src="1.1.1.1", dst="2.2.2.2"))[:14 + 12],                       # IPv4 cut short
    raw(ETH / IP(ihl=4) / TCP()),                                                 # IHL below 5
    raw(ETH / IP(ihl=15) / Raw(b"z" * 20)),                                       # IHL past the end
    raw(ETH / IPv6() / TCP())[:14 + 30],                                          # IPv6 cut short
    raw(ETH / Dot1Q(vlan=3) / IP())[:16],                                         # VLAN tag cut short
], ids=["eth", "ipv4", "ihl4", "ihl15", "ipv6", "vlan"])
def test_truncated_or_malformed_headers_pass_and_count_as_parse_failures(env, frame):
    """No addresses could be read: no rule can name the frame, so it passes and is counted."""
    env.dp.add_rule(Rule("src_prefix", "drop", src="0.0.0.0/0"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="8000::/1"))
    with Delta(env) as d:
        assert env.run(frame) == XDP_PASS
    assert d["parse_fail"] == 1 and d["passed"] == 1 and d["drop_prefix"] == 0 and d["partial"] == 0


@pytest.mark.parametrize("frame", [
    raw(ETH / IP(src="1.1.1.1", dst="2.2.2.2") / TCP())[:14 + 20 + 10],          # TCP cut short
    raw(ETH / IP(src="1.1.1.1", dst="2.2.2.2") / UDP())[:14 + 20 + 4],           # UDP cut short
    raw(ETH / IPv6(src="fd00::1") / TCP())[:14 + 40 + 8],                        # TCP cut short
    raw(ETH / IPv6(src="fd00::1", nh=44) / Raw(b"\x11\x00")),                     # fragment hdr cut
], ids=["tcp", "udp", "tcp6", "v6frag"])
def test_frames_cut_after_their_addresses_meet_source_rules_and_else_pass(env, frame):
    """Partial: the source is known, so the allowlist and the source prefixes apply; unmatched,
    the frame passes counted as a parse failure (and as partial), never sampled."""
    with Delta(env) as d:
        assert env.run(frame) == XDP_PASS
    assert (d["parse_fail"], d["partial"], d["unmatched"], d["events"]) == (1, 1, 0, 0)
    env.dp.add_rule(Rule("src_prefix", "drop", src="1.1.1.0/24"))
    env.dp.add_rule(Rule("src_prefix", "drop", src="fd00::/16"))
    with Delta(env) as d:
        assert env.run(frame) == XDP_DROP
    assert d["drop_prefix"] == 1 and d["partial"] == 1


def test_non_ip_passes_and_counts(env):
    with Delta(env) as d:
        assert env.run(raw(ETH / ARP())) == XDP_PASS
    assert (d["non_ip"], d["seen"], d["passed"], d["events"]) == (1, 1, 1, 0)
