"""Pure helpers of the data plane: the 16-byte address form, LPM keys, clock conversion, map
sizes and link pin names (no kernel needed)."""
import pytest
from hypothesis import given, strategies as st

from services.dataplane import entries, loader
from services.common.errors import ConfigError
from services.dataplane.structs import addr_bytes, addr_text, lpm_key, lpm_text


def test_ipv4_is_v4_mapped_and_ipv6_is_as_is():
    assert addr_bytes("10.0.0.1") == bytes(10) + b"\xff\xff\x0a\x00\x00\x01"
    assert addr_bytes("fd00::1") == b"\xfd" + bytes(14) + b"\x01"


@given(st.ip_addresses())
def test_address_round_trip(ip):
    # an IPv6 ::ffff:a.b.c.d address reads back as IPv4 a.b.c.d: by design (docs/dataplane.md)
    expect = str(ip.ipv4_mapped) if ip.version == 6 and ip.ipv4_mapped else str(ip)
    assert addr_text(addr_bytes(str(ip))) == expect


@pytest.mark.parametrize("cidr,plen,back", [
    ("10.1.2.3/16", 96 + 16, "10.1.0.0/16"), ("0.0.0.0/0", 96, "0.0.0.0/0"),
    ("2001:db8::/32", 32, "2001:db8::/32"), ("192.0.2.7/32", 128, "192.0.2.7/32")])
def test_lpm_keys_count_bits_of_the_16_byte_form(cidr, plen, back):
    key = lpm_key(cidr)
    assert key.prefixlen == plen and lpm_text(key) == back


def test_epoch_and_monotonic_convert_both_ways_and_zero_means_never():
    assert entries.to_mono(0) == 0 and entries.to_epoch(0) == 0
    t = 1_900_000_000_000_000_000
    assert abs(entries.to_epoch(entries.to_mono(t)) - t) < 1_000_000


def test_sizes_are_validated():
    with pytest.raises(ConfigError, match="power of two"):
        loader.Sizes(ring_pages=3)
    for bad in (0, -1, 2**32, 1.5):
        with pytest.raises(ConfigError, match="whole number 1-4294967295"):
            loader.Sizes(exact=bad)
    with pytest.raises(ConfigError, match="above 524288"):
        loader.Sizes(ring_pages=2**20)
    assert "-DXG_EXACT_MAX=262144" in loader.Sizes().cflags()


@pytest.mark.parametrize("iface", ["eth0", "eth0.100", "br_lan", "a%b.c"])
def test_link_pin_names_have_no_dots_and_round_trip(iface):
    path = loader._link_pin("/sys/fs/bpf/x", "native", iface)
    assert "." not in path.name and loader._link_name(path) == ("native", iface)
