"""Blocked sources must not get through by shapes the parser cannot finish (issue 13, cases 1 and
2, replayed from public reports against other XDP firewalls), run with BPF_PROG_TEST_RUN:

- IPv6 extension chains of 0 to 10 headers of every kind (hop-by-hop, routing, destination
  options, fragment, AH): a source-prefix drop holds for every length; an exact rule holds for
  every chain the parser follows (XG_IPV6_EXT_MAX, every chain RFC 8200 allows) and a longer one
  is "partial": it meets the allowlist, the source prefixes and the port-less limits, and
  otherwise passes counted (parse_fail, partial);
- tiny first fragments (IPv4 with any IP options, IPv6 with the chain or the transport header
  cut) and fragments that start inside the transport header (RFC 1858, RFC 7112) are dropped and
  counted (drop_frag) whoever sends them, unless the source is allowlisted; fragments that do
  not are matched as before.
tests/kernel/test_rel_parser_evasion_veth.py replays both reports end to end on a veth."""
import ipaddress
import struct

import pytest
from scapy.all import IP, TCP, UDP, Ether, IPv6, IPv6ExtHdrFragment, Raw, raw

from services.dataplane.structs import XG_IPV6_EXT_MAX
from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta
from tests.support.xdpfuzz import AH, DSTOPTS, FRAGMENT, HOPOPTS, ROUTING, ipv6_head

ETH = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x86DD))
ETH4 = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800))
V6_ATTACKER, V6_VICTIM = "2001:db8::1", "2001:db8::2"
KINDS = {"hop-by-hop": HOPOPTS, "routing": ROUTING, "dstopts": DSTOPTS, "fragment": FRAGMENT,
         "ah": AH}


def syn6(kind: int, n: int, src=V6_ATTACKER, sport=40000) -> bytes:
    """A TCP SYN src -> [2001:db8::2]:2000 behind `n` extension headers of one kind (fragment
    headers atomic: offset 0, M clear; AH 24 bytes)."""
    tcp = raw(TCP(sport=sport, dport=2000, flags="S"))
    chain = [(kind, 4 if kind == AH else 0)] * n
    return ETH + ipv6_head(src, V6_VICTIM, chain, 6, len(tcp)) + tcp


@pytest.mark.parametrize("n", range(11))
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_rel_a_blocked_ipv6_source_is_dropped_behind_any_extension_chain(env, kind, n):
    env.dp.add_rule(Rule("src_prefix", "drop", src=f"{V6_ATTACKER}/128"))
    with Delta(env) as d:
        assert env.run(syn6(KINDS[kind], n)) == XDP_DROP
        assert env.run(syn6(KINDS[kind], n, src="2001:db8::7")) == XDP_PASS  # not blocked
    assert d["drop_prefix"] == 1 and d["partial"] == (2 if n > XG_IPV6_EXT_MAX else 0)


@pytest.mark.parametrize("n", range(11))
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_rel_an_exact_rule_holds_behind_every_chain_the_parser_follows(env, kind, n):
    env.dp.add_rule(Rule("flow", "drop", src=V6_ATTACKER, dst=V6_VICTIM, sport=40000, dport=2000,
                         proto=6))
    with Delta(env) as d:
        verdict = env.run(syn6(KINDS[kind], n))
        assert env.run(syn6(KINDS[kind], n, sport=40001)) == XDP_PASS  # another flow
    if n <= XG_IPV6_EXT_MAX:
        assert verdict == XDP_DROP and d["drop_exact"] == 1
    else:  # ports unread: exact rules cannot match; passed and counted, never sampled
        assert verdict == XDP_PASS and (d["partial"], d["parse_fail"], d["events"]) == (2, 2, 0)


def test_rel_a_partial_frame_meets_the_allowlist_and_port_less_limits(env):
    long_chain = syn6(DSTOPTS, XG_IPV6_EXT_MAX + 1)
    env.dp.add_rule(Rule("src_prefix", "drop", src="2001:db8::/64"))
    env.dp.allow_add(f"{V6_ATTACKER}/128")
    with Delta(env) as d:
        assert env.run(long_chain) == XDP_PASS
    assert (d["allowed"], d["partial"]) == (1, 1)
    env.reset()
    env.dp.add_rule(Rule("dst_limit", "limit", dst=V6_VICTIM, rate_pps=1))  # any protocol
    env.dp.add_rule(Rule("dst_limit", "limit", dst=V6_VICTIM, proto=6, dport=2000, rate_pps=1000))
    with Delta(env) as d:
        verdicts = [env.run(long_chain) for _ in range(30)]
    assert verdicts.count(XDP_DROP) >= 25 and d["drop_limit"] == verdicts.count(XDP_DROP)


def test_rel_partial_ipv4_frames_meet_source_prefixes_and_otherwise_pass(env):
    cut = raw(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=40000, dport=8080))[:14 + 20 + 12]
    with Delta(env) as d:
        assert env.run(cut) == XDP_PASS
    assert (d["partial"], d["parse_fail"], d["unmatched"]) == (1, 1, 0)
    env.dp.add_rule(Rule("src_prefix", "drop", src="192.0.2.0/24"))
    with Delta(env) as d:
        assert env.run(cut) == XDP_DROP
    assert d["drop_prefix"] == 1


# --- fragments ------------------------------------------------------------------------------

def frag4(ihl_words: int, frag_field: int, payload: bytes, src="192.0.2.1", proto=6) -> bytes:
    """An IPv4 fragment to 192.0.2.2: a header of `ihl_words` 32-bit words (options zero), frag_off
    field `frag_field` (MF 0x2000 | offset in 8-byte units), then `payload`."""
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl_words, 0, 4 * ihl_words + len(payload), 7,
                       frag_field, 64, proto, 0, ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address("192.0.2.2").packed)
    return ETH4 + head + bytes(4 * (ihl_words - 5)) + payload


SYN4 = raw(TCP(sport=40000, dport=8080, flags="S"))


@pytest.mark.parametrize("ihl", [5, 6, 10, 15])
@pytest.mark.parametrize("carried", [0, 1, 8, 19])
def test_rel_a_tiny_first_ipv4_fragment_is_dropped_whatever_the_options(env, ihl, carried):
    """The report: exact drop rule tcp 192.0.2.1:40000 -> 192.0.2.2:8080, the SYN split into a
    first fragment with 8 bytes of the TCP header and a second with the rest."""
    env.dp.add_rule(Rule("flow", "drop", src="192.0.2.1", dst="192.0.2.2", sport=40000,
                         dport=8080, proto=6))
    first = frag4(ihl, 0x2000, SYN4[:carried])
    with Delta(env) as d:
        assert env.run(first) == XDP_DROP
        assert env.run(frag4(ihl, 0x2000, SYN4[:carried], src="198.51.100.9")) == XDP_DROP
    assert d["drop_frag"] == 2 and d["passed"] == 0


@pytest.mark.parametrize("offset", [1, 2])
def test_rel_a_later_fragment_starting_inside_the_tcp_header_is_dropped(env, offset):
    """RFC 1858's overlapping fragment: offset 1 or 2 (8 or 16 bytes) rewrites the TCP header
    the first fragment showed; UDP (8 bytes) and offset 3 (24 bytes) cannot."""
    with Delta(env) as d:
        assert env.run(frag4(5, offset, SYN4[offset * 8:])) == XDP_DROP
        assert env.run(frag4(5, 3, b"x" * 16)) == XDP_PASS
        assert env.run(frag4(5, 1, b"x" * 16, proto=17)) == XDP_PASS
    assert (d["drop_frag"], d["fragments"]) == (1, 3)


def test_rel_fragments_that_hide_nothing_are_matched_as_before(env):
    env.dp.add_rule(Rule("flow", "drop", src="192.0.2.1", dst="192.0.2.2", sport=40000,
                         dport=8080, proto=6))
    whole = raw(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=40000, dport=8080, flags="S")
                / Raw(b"p" * 200))
    with Delta(env) as d:
        assert env.run(frag4(5, 0x2000, whole[20:20 + 96])) == XDP_DROP  # first: ports read
        assert env.run(frag4(5, 12, whole[20 + 96:])) == XDP_PASS      # later: ports 0
        assert env.run(frag4(5, 0x2000, whole[20:20 + 96], src="192.0.2.9")) == XDP_PASS
    assert (d["drop_exact"], d["drop_frag"]) == (1, 0)


def test_rel_an_allowlisted_source_is_never_dropped_for_its_fragments(env):
    env.dp.allow_add("192.0.2.1/32")
    with Delta(env) as d:
        assert env.run(frag4(5, 0x2000, SYN4[:8])) == XDP_PASS
        assert env.run(frag4(5, 1, SYN4[8:])) == XDP_PASS
    assert (d["allowed"], d["drop_frag"]) == (2, 0)


def frag6(chain_before, off_m, chain_after, l4: bytes, proto=6) -> bytes:
    """IPv6: extension headers, a fragment header (field `off_m`: offset in bytes | M), more
    extension headers, then `l4` (the frame may end inside the chain if l4 is empty)."""
    chain = [*chain_before, (FRAGMENT, off_m), *chain_after]
    return ETH + ipv6_head(V6_ATTACKER, V6_VICTIM, chain, proto, len(l4)) + l4


@pytest.mark.parametrize("name,frame", [
    ("tcp cut at 8 bytes", frag6([], 1, [], raw(TCP(sport=40000, dport=2000, flags="S"))[:8])),
    ("tcp cut behind options", frag6([(DSTOPTS, 0)], 1, [(DSTOPTS, 1)],
                                     raw(TCP(sport=40000, dport=2000))[:12])),
    ("udp cut at 4 bytes", frag6([], 1, [], raw(UDP(sport=53, dport=53))[:4], proto=17)),
    ("chain cut", frag6([(HOPOPTS, 0)], 1, [(DSTOPTS, 0)], b"")[:-4]),
    ("later fragment inside tcp", frag6([], 8, [], raw(TCP(sport=1, dport=2))[8:])),
])
def test_rel_ipv6_first_fragments_must_hold_the_chain_and_transport_header(env, name, frame):
    """RFC 7112 (and RFC 1858 for the later fragment), from a source no rule names."""
    with Delta(env) as d:
        assert env.run(frame) == XDP_DROP, name
    assert d["drop_frag"] == 1


def test_rel_a_whole_ipv6_first_fragment_is_matched_on_its_ports(env):
    env.dp.add_rule(Rule("flow", "drop", src=V6_ATTACKER, dst=V6_VICTIM, sport=40000, dport=2000,
                         proto=6))
    first = raw(Ether() / IPv6(src=V6_ATTACKER, dst=V6_VICTIM) / IPv6ExtHdrFragment(offset=0, m=1)
                / TCP(sport=40000, dport=2000, flags="S"))
    later = frag6([], 24, [], b"z" * 40)  # 24 bytes: past the TCP header
    with Delta(env) as d:
        assert env.run(first) == XDP_DROP
        assert env.run(later) == XDP_PASS
    assert (d["drop_exact"], d["drop_frag"], d["fragments"]) == (1, 0, 1)
