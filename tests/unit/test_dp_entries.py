"""Which map and key a rule is written under (services/dataplane/entries.py), the source-filter
slot (structs.filter_slot) and the Rules read back from map entries, without a kernel."""
import ctypes

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
def test_hosts_go_to_their_family_hash_and_shorter_prefixes_to_their_family_trie(src, name, field):
    got_name, key, got_field = entries.prefix_slot(Rule("src_prefix", "drop", src=src))
    assert (got_name, got_field) == (name, field)
    if name == "src_host4":
        assert bytes(key.b) == bytes([10, 0, 0, 1])  # the header's bytes, not v4-mapped
    if name == "src_prefix4":  # 4-byte key, its own length; src_stats keeps the 16-byte form
        assert (key.prefixlen, bytes(key.addr)) == (24, bytes([10, 0, 0, 0]))
        stats = entries.lpm16(key)
        assert (stats.prefixlen, bytes(stats.addr)) == (120, bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 0]))
    if name == "src_prefix":
        assert key.prefixlen == 48 and entries.lpm16(key) is key


def test_ipv4_prefix_entries_read_back_with_their_16_byte_counters():
    key = structs.Lpm4Key(20, (ctypes.c_uint8 * 4)(10, 1, 0, 0))
    skey = entries.lpm16(key)
    vals = {("src_prefix4", bytes(key)): structs.PrefixVal(0, 5, 116, XG_ACT_DROP, 1),
            ("src_stats", bytes(skey)): structs.Counter(4, 240, 4)}
    [rs] = entries.read_rules(lambda name, kt: [key] if name == "src_prefix4" else [],
                              lambda name, k: vals.get((name, bytes(k))))
    assert (rs.rule.src, rs.rule.action.value, rs.hits, rs.bytes, rs.dropped) == ("10.1.0.0/20", "drop", 4, 240, 4)


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
