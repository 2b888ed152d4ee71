"""Rule.covers, the one answer to "does this rule match this packet" (replay, the fuzz reference
model, `xdpguard analyze`, the soak and demo checks): the kernel's matching per scope."""
from __future__ import annotations

import pytest

from services.records.rules import Action, Rule, Scope

TCP, UDP, ICMP = 6, 17, 1


def test_a_flow_rule_covers_its_exact_five_tuple_only():
    r = Rule(Scope.FLOW, Action.DROP, src="10.1.0.1", dst="10.2.0.2", sport=1000, dport=80, proto=TCP)
    assert r.covers("10.1.0.1", "10.2.0.2", 1000, 80, TCP)
    assert r.covers("10.1.0.1", "10.2.0.2", 1000, 80, TCP, tcp_flags=0xFF)  # flags not looked at
    for other in (("10.1.0.9", "10.2.0.2", 1000, 80, TCP), ("10.2.0.2", "10.1.0.1", 80, 1000, TCP),
                  ("10.1.0.1", "10.2.0.2", 1001, 80, TCP), ("10.1.0.1", "10.2.0.2", 1000, 80, UDP)):
        assert not r.covers(*other)
    v6 = Rule(Scope.FLOW, Action.DROP, src="fd00::1", dst="fd00:0::2", proto=UDP)
    assert v6.covers("fd00:0:0::1", "fd00::2", 0, 0, UDP)  # any spelling of the address


def test_a_prefix_rule_covers_sources_in_it_of_its_family():
    r = Rule(Scope.SRC_PREFIX, Action.DROP, src="10.66.0.0/16")
    assert r.covers("10.66.200.1", "192.0.2.1") and r.covers("10.66.0.0", "fd00::1", 5, 6, UDP)
    assert not r.covers("10.67.0.1", "192.0.2.1")
    assert not r.covers("192.0.2.1", "10.66.0.1")  # a destination in the prefix is not enough
    v6 = Rule(Scope.SRC_PREFIX, Action.DROP, src="fd66::/32")
    assert v6.covers("fd66:0:5::9", "fd00::2") and not v6.covers("10.66.0.1", "fd00::2")
    assert not Rule(Scope.SRC_PREFIX, Action.DROP, src="0.0.0.0/0").covers("::1", "::2")


def test_a_limit_covers_its_destination_protocol_port_and_flag_mask():
    syn80 = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", dport=80, proto=TCP, tcp_flags=0x02,
                 rate_pps=10)
    assert syn80.covers("1.2.3.4", "192.0.2.1", 5555, 80, TCP, 0x02)
    assert syn80.covers("1.2.3.4", "192.0.2.1", 5555, 80, TCP, 0x12)    # the mask's bits among more
    assert not syn80.covers("1.2.3.4", "192.0.2.1", 5555, 80, TCP, 0x10)  # an ACK
    assert not syn80.covers("1.2.3.4", "192.0.2.1", 5555, 81, TCP, 0x02)
    assert not syn80.covers("1.2.3.4", "192.0.2.9", 5555, 80, TCP, 0x02)
    udp_any_port = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", proto=UDP, rate_pps=5)
    assert udp_any_port.covers("1.2.3.4", "192.0.2.1", 1, 53, UDP)
    assert not udp_any_port.covers("1.2.3.4", "192.0.2.1", 1, 53, TCP)
    anything = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="2001:db8::1", rate_pps=1)
    assert anything.covers("fd00::1", "2001:db8:0::1", 0, 0, ICMP)
    # a mask without a protocol is stored as TCP in the maps (Datapath), so it covers TCP only
    flags_only = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", tcp_flags=0x02, rate_pps=1)
    assert flags_only.covers("1.2.3.4", "192.0.2.1", 1, 2, TCP, 0x02)
    assert not flags_only.covers("1.2.3.4", "192.0.2.1", 1, 2, UDP, 0x02)


def test_neither_action_nor_expiry_is_looked_at():
    r = Rule(Scope.SRC_PREFIX, Action.PASS, src="10.0.0.0/8", created_ns=1, expires_ns=2)
    assert r.expired(3) and r.covers("10.1.1.1", "10.2.2.2")


def test_a_bad_address_is_a_value_error():
    with pytest.raises(ValueError):
        Rule(Scope.SRC_PREFIX, Action.DROP, src="10.0.0.0/8").covers("not-an-ip", "10.0.0.1")
