"""Which map and key a rule is written under (services/dataplane/entries.py), the source-filter
slots (structs.filter_slot, structs.pfx_filter_slot), the config's per-length bookkeeping of
source prefixes (entries.count_length) and the Rules read back from map entries, without a
kernel."""
import ctypes
import ipaddress
import sys

import pytest

from services.dataplane import entries, structs
from services.dataplane.structs import XG_ACT_DROP, XG_ACT_PASS, Addr4Key, RuleVal
from services.records.rules import Rule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("src, name, field", [
    ("10.0.0.1/32", "src_host4", "n_host4"), ("fd00::1/128", "src_host6", "n_host6"),
    ("10.0.0.0/24", "src_prefix4", "n_prefix4"), ("fd00::/48", "src_prefix", "n_prefix6"),
    ("::ffff:10.0.0.0/120", "src_prefix4", "n_prefix4"),
])
def test_hosts_go_to_their_family_hash_and_shorter_prefixes_to_their_family_length_hash(src, name, field):
    got_name, key, got_field = entries.prefix_slot(Rule("src_prefix", "drop", src=src))
    assert (got_name, got_field) == (name, field)
    if name == "src_host4":
        assert bytes(key.b) == bytes([10, 0, 0, 1])  # the header's bytes, not v4-mapped
    if name == "src_prefix4":  # 4-byte key, its own length (a v4-mapped prefix is its IPv4 one)
        assert (key.prefixlen, bytes(key.addr)) == (24, bytes([10, 0, 0, 0]))
    if name == "src_prefix":
        assert (key.prefixlen, bytes(key.addr)) == (48, bytes.fromhex("fd00") + bytes(14))


def test_prefix_entries_read_back_as_rules_with_the_counters_of_their_value():
    k4 = structs.Lpm4Key(20, (ctypes.c_uint8 * 4)(10, 1, 0, 0))
    k6 = structs.LpmKey(64, structs.Addr16(*bytes.fromhex("20010db8000000070000000000000000")))
    vals = {("src_prefix4", bytes(k4)): RuleVal(0, 5, 4, 240, XG_ACT_DROP, 1),
            ("src_prefix", bytes(k6)): RuleVal(0, 5, 2, 150, XG_ACT_PASS, 1)}
    got = entries.read_rules(lambda name, kt: {"src_prefix4": [k4], "src_prefix": [k6]}.get(name, []),
                             lambda name, k: vals.get((name, bytes(k))))
    assert sorted((rs.rule.src, rs.rule.action.value, rs.hits, rs.bytes, rs.dropped) for rs in got) == [
        ("10.1.0.0/20", "drop", 4, 240, 4), ("2001:db8:0:7::/64", "pass", 2, 150, 0)]


def test_length_counts_keep_a_lengths_bit_set_exactly_while_a_rule_of_it_is_left():
    cfg = structs.Config()
    for plen in (24, 24, 0, 31):
        entries.count_length(cfg, True, plen, 1)
    for plen in (127, 64, 32, 0):
        entries.count_length(cfg, False, plen, 1)
    assert cfg.plens4 == (1 << 24 | 1 << 31 | 1) and cfg.n_len4[24] == 2
    assert list(cfg.plens6) == [1, 1, 1, 1 << 31] and cfg.n_len6[64] == 1
    entries.count_length(cfg, True, 24, -1)
    assert cfg.plens4 & 1 << 24  # one /24 left
    entries.count_length(cfg, True, 24, -1)
    entries.count_length(cfg, True, 24, -1)  # never below 0
    entries.count_length(cfg, False, 64, -1)
    assert (cfg.plens4, cfg.n_len4[24], list(cfg.plens6)) == (1 << 31 | 1, 0, [1, 1, 0, 1 << 31])


def test_prefix_filter_slots_use_the_first_16_ipv4_or_32_ipv6_bits_and_none_below():
    assert structs.pfx_filter_slot("10.1.2.0/24") == structs.pfx_filter_slot("10.1.0.0/16")
    assert structs.pfx_filter_slot("10.1.2.0/24") == structs.filter_slot("10.1.0.0")  # same hash
    assert structs.pfx_filter_slot("10.1.0.0/16") != structs.pfx_filter_slot("10.2.0.0/16")
    assert structs.pfx_filter_slot("::ffff:10.1.2.0/120") == structs.pfx_filter_slot("10.1.2.0/24")
    assert structs.pfx_filter_slot("10.0.0.0/15") is None and structs.pfx_filter_slot("2001:db8::/31") is None
    # IPv6: the first word alone (not the XOR of four: the rest is masked away or differs)
    assert structs.pfx_filter_slot("2001:db8:1::/48") == structs.pfx_filter_slot("2001:db8::/32")
    assert structs.pfx_filter_slot("2001:db8::/32") == structs.filter_slot("2001:db8::")


def test_prefix_filter_bands_are_ipv4_or_the_ipv6_length_word_and_stick_once_saturated():
    assert [structs.pfx_filter_band(c) for c in ("10.1.2.0/24", "::ffff:10.1.2.0/120", "2001:db8::/32",
                                                 "2001:db8::/63", "2001:db8::/64", "2001:db8::/127")] == [0, 0, 1, 1, 2, 3]
    w = structs.band_add(structs.band_add(0, 2, 1), 0, 1)
    assert w == 0x010001 and structs.band_count(w, 2) == 1 and structs.band_count(w, 1) == 0
    assert structs.band_add(w, 2, -1) == 0x000001 and structs.band_add(0, 3, -1) == 0  # floored at 0
    for _ in range(structs.XG_PFX_BAND_SAT + 5):
        w = structs.band_add(w, 1, 1)
    assert structs.band_count(w, 1) == structs.XG_PFX_BAND_SAT and w & 0xFF00FF == 0x010001  # others kept
    # saturated: the count no longer says how many, so a delete must not lower it
    assert structs.band_count(structs.band_add(w, 1, -1), 1) == structs.XG_PFX_BAND_SAT
    # recount's raise: each band to at least its count (capped), none lowered
    assert structs.bands_at_least(0x030001, [2, 0, 1, 300]) == 0xFF030002


def test_filter_counts_count_prefixes_per_slot_and_band():
    rules = [Rule("src_prefix", "drop", src=c) for c in ("10.1.2.0/24", "10.1.3.0/24", "2001:db8::/64",
                                                           "2001:db8:0:1::/96", "10.0.0.0/8")]
    _, want = entries.filter_counts(rules)
    assert want == {structs.pfx_filter_slot("10.1.0.0/16"): [2, 0, 0, 0],
                    structs.pfx_filter_slot("2001:db8::/32"): [0, 0, 1, 1]}


def test_filter_slots_are_in_range_and_spread_and_ipv6_words_are_xored():
    slots = {structs.filter_slot(f"10.0.{i}.1") for i in range(256)}
    assert all(0 <= s < structs.XG_FILTER_SLOTS for s in slots) and len(slots) > 250
    # IPv6 words are XORed: an address and the same words reordered share a slot
    assert structs.filter_slot("1:2:3:4:5:6:7:8") == structs.filter_slot("5:6:1:2:3:4:7:8")
    # a v4-mapped source is looked up by its IPv4 word (xdpguard.c src_listed)
    assert structs.filter_slot("::ffff:10.1.0.1") == structs.filter_slot("10.1.0.1")


def test_host_entries_read_back_as_prefix_rules_with_their_own_counters():
    key = Addr4Key((ctypes.c_uint8 * 4)(10, 0, 0, 1))
    vals = {("src_host4", bytes(key)): RuleVal(0, 5, 3, 180, XG_ACT_DROP, 1)}
    got = entries.read_rules(lambda name, kt: [key] if name == "src_host4" else [],
                             lambda name, k: vals.get((name, bytes(k))))
    [rs] = got
    assert (rs.rule.src, rs.rule.action.value, rs.hits, rs.bytes, rs.dropped) == ("10.0.0.1/32", "drop", 3, 180, 3)
    vals[("src_host4", bytes(key))] = RuleVal(0, 5, 3, 180, XG_ACT_PASS, 1)
    [rs] = entries.read_rules(lambda name, kt: [key] if name == "src_host4" else [],
                              lambda name, k: vals.get((name, bytes(k))))
    assert rs.dropped == 0


def test_inline_host_slots_read_back_as_host_rules_and_empty_slots_as_none():
    """src_host_slot entries: family 4 (address in addr[:4]), 6 (16 bytes), 0 empty."""
    from services.dataplane.structs import Addr16, HostSlot
    slots = {0: HostSlot(Addr16(*bytes([10, 0, 0, 9]), *bytes(12)), RuleVal(0, 5, 4, 240, XG_ACT_DROP, 1), 4),
             1: HostSlot(Addr16(*bytes.fromhex("fd00" + "00" * 13 + "05")), RuleVal(0, 5, 2, 100, XG_ACT_PASS, 2), 6),
             2: HostSlot()}
    got = entries.read_rules(
        lambda name, kt: [ctypes.c_uint32(i) for i in slots] if name == "src_host_slot" else [],
        lambda name, k: slots[k.value] if name == "src_host_slot" else None)
    assert sorted((rs.rule.src, rs.rule.action.value, rs.rule.origin.value, rs.hits, rs.bytes, rs.dropped)
                  for rs in got) == [("10.0.0.9/32", "drop", "manual", 4, 240, 4),
                                     ("fd00::5/128", "pass", "model", 2, 100, 0)]


@pytest.mark.skipif(sys.byteorder != "little", reason="golden slots of a little-endian host")
def test_host_slots_of_known_addresses():
    """Golden values. 10.0.0.1 and fd00::1 worked out from the C formula here (xdpguard.c
    src_listed: the address's 32-bit words as loaded on a little-endian CPU, XORed, times
    0x9E3779B1 mod 2^32, the top 12 bits; 10.0.0.1 is the word 0x0100000A, fd00::1 the words
    0x000000FD ^ 0x01000000); 203.0.113.9 and 2001:db8::5 recorded from this build, to catch a
    change. A v4-mapped address has its IPv4 address's slot (the program gives it the IPv4 word).
    The kernel tier checks the program agrees (test_dp_host_slot)."""
    def top12(word: int) -> int:
        return (word * 0x9E3779B1 % 2**32) >> 20
    assert top12(0x0100000A) == 3570 and top12(0x010000FD) == 221
    got = {a: structs.host_slot(a) for a in ("10.0.0.1", "203.0.113.9", "fd00::1", "2001:db8::5",
                                             "::ffff:10.0.0.1")}
    assert got == {"10.0.0.1": 3570, "203.0.113.9": 1633, "fd00::1": 221, "2001:db8::5": 3478,
                   "::ffff:10.0.0.1": 3570}


def test_consecutive_addresses_spread_over_the_host_slots():
    """4,096 consecutive addresses of either family take at least 3,000 of the 4,096 slots (a
    slot taken from the low, unmixed bits or a constant would not)."""
    for base in (ipaddress.IPv4Address("10.0.0.0"), ipaddress.IPv6Address("fd00::")):
        slots = {structs.host_slot(str(base + i)) for i in range(4096)}
        assert len(slots) >= 3000 and max(slots) < structs.XG_HOST_SLOTS


def test_ipv6_exact_rules_are_keyed_by_folded_addresses_that_unfold_with_their_hi_halves():
    rule = Rule("flow", "drop", src="2001:db8:1::1", dst="2001:db8:9::9", sport=7, dport=8, proto=6)
    name, key = entries.flow_key(rule)
    fold, whole, shi, dhi = entries.flow6(rule)
    assert name == "exact6" and ctypes.sizeof(key) == 24 and bytes(key) == bytes(fold)
    assert (bytes(whole.saddr), whole.sport, whole.dport, whole.proto) == (
        ipaddress.ip_address("2001:db8:1::1").packed, 7, 8, 6)
    src = ipaddress.ip_address("2001:db8:1::1").packed
    assert shi == int.from_bytes(src[:8], sys.byteorder)  # the first 8 bytes as the CPU loads them
    lo = int.from_bytes(src[8:], sys.byteorder)
    assert key.sfold == lo ^ (shi * structs.XG_FOLD_MULT) % 2**64
    assert structs.unfold6(key.sfold, shi) == src and structs.unfold6(key.dfold, dhi) == \
        ipaddress.ip_address("2001:db8:9::9").packed
    # the same low half under another high half folds elsewhere (a low-half key would collide)
    other = entries.flow_key(Rule("flow", "drop", src="2001:db8:2::1", dst="2001:db8:9::9", sport=7,
                                  dport=8, proto=6))[1]
    assert other.sfold != key.sfold


def test_exact6_entries_read_back_with_their_addresses_and_counters():
    rule = Rule("flow", "pass", src="fd00::1", dst="fd00:0:0:1::2", sport=1, dport=2, proto=17)
    key, whole, shi, dhi = entries.flow6(rule)
    v = structs.Rule6Val(RuleVal(0, 5, 3, 300, XG_ACT_PASS, 1), shi, dhi)
    xrule = Rule("flow", "drop", src="fd00::3", dst="fd00::4", sport=1, dport=2, proto=17)
    xkey = entries.flow6(xrule)[1]
    vals = {("exact6", bytes(key)): v, ("exact6x", bytes(xkey)): RuleVal(0, 5, 2, 100, XG_ACT_DROP, 1)}
    got = entries.read_rules(lambda name, kt: {"exact6": [key], "exact6x": [xkey]}.get(name, []),
                             lambda name, k: vals.get((name, bytes(k))))
    assert sorted((rs.rule.src, rs.rule.dst, rs.rule.action.value, rs.hits, rs.bytes, rs.dropped)
                  for rs in got) == [("fd00::1", "fd00:0:0:1::2", "pass", 3, 300, 0),
                                     ("fd00::3", "fd00::4", "drop", 2, 100, 2)]
