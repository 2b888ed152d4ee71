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
    ("10.0.0.0/24", "src_prefix", "n_prefix4"), ("fd00::/48", "src_prefix", "n_prefix6"),
])
def test_hosts_go_to_their_family_hash_and_shorter_prefixes_to_the_trie(src, name, field):
    got_name, key, got_field = entries.prefix_slot(Rule("src_prefix", "drop", src=src))
    assert (got_name, got_field) == (name, field)
    if name == "src_host4":
        assert bytes(key.b) == bytes([10, 0, 0, 1])  # the header's bytes, not v4-mapped
    if name == "src_prefix":
        assert key.prefixlen == int(src.split("/")[1]) + (96 if "." in src else 0)


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
