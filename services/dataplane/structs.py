"""ctypes mirror of bpf/xdpguard.h: its constants and structs, the only place they are written
down in Python (same names for the constants, XG_*; struct xg_foo is class Foo, see MIRRORS).

tests/kernel/test_dp_structs.py compiles the header and compares every XG_* constant's value and
every struct's size and offsets, so a change to one side that is not made to the other fails the
test, not a production map.
"""
from __future__ import annotations

import ctypes
import ipaddress
import sys
from ctypes import c_uint8 as u8, c_uint16 as u16, c_uint32 as u32, c_uint64 as u64

from services.records.rules import canonical_network

# -- constants (#define XG_* in the header, same names and values) ---------------------------
XG_MAGIC = 0x58444742               # "XDGB": bumped when any struct, map or parse rule changes
XG_ACT_DROP, XG_ACT_PASS, XG_ACT_LIMIT = 1, 2, 3
XG_ORIGIN_MANUAL, XG_ORIGIN_MODEL = 1, 2
XG_LIMIT_MASKS = 4                  # distinct TCP-flag masks per limited destination
XG_VLAN_MAX = 2                     # VLAN tags the parser follows
XG_IPV6_EXT_MAX = 8                 # IPv6 extension headers the parser follows
XG_EV_FRAGMENT, XG_EV_IPV6 = 0x01, 0x02   # xg_event.flags
XG_ICMP_NONE = 255  # xg_event.icmp_type when no ICMP header was read
# source filter: slots, and the multiplier of the slot hash (filter_slot below is the C's)
XG_FILTER_BITS = 20
XG_FILTER_SLOTS = 1 << XG_FILTER_BITS
XG_FILTER_MULT = 0x9E3779B1
# inline host-rule slots: a host rule's slot is the top XG_HOST_SLOT_BITS bits of its filter slot
XG_HOST_SLOT_BITS = 12
XG_HOST_SLOTS = 1 << XG_HOST_SLOT_BITS
# source-prefix skip filter: how many leading bits of a prefix pick its slot (pfx_filter_slot)
XG_PFX4_FILTER_LEN, XG_PFX6_FILTER_LEN = 16, 32
# ... and each slot's four 8-bit band counts stick at this value (pfx_filter_band, band_add)
XG_PFX_BAND_SAT = 255
# exact6's folded addresses: lo ^ hi * XG_FOLD_MULT (mod 2^64; fold6 below is the C's)
XG_FOLD_MULT = 0x9E3779B97F4A7C15
# default map sizes (entries; the ring in 4 KiB pages): loader.Sizes' defaults
XG_EXACT_MAX, XG_PREFIX_MAX, XG_ALLOW_MAX, XG_LIMIT_MAX, XG_RING_PAGES = 262144, 65536, 16384, 4096, 256

Addr16 = u8 * 16


class FilterSlot(ctypes.Structure):
    _fields_ = [("exact", u32), ("host", u32)]


class Addr4Key(ctypes.Structure):
    _fields_ = [("b", u8 * 4)]


class Flow4Key(ctypes.Structure):
    _fields_ = [("saddr", u8 * 4), ("daddr", u8 * 4), ("sport", u16), ("dport", u16),
                ("proto", u8), ("pad", u8 * 3)]


class Flow6Key(ctypes.Structure):
    _fields_ = [("saddr", Addr16), ("daddr", Addr16), ("sport", u16), ("dport", u16),
                ("proto", u8), ("pad", u8 * 3)]


class Flow6Fold(ctypes.Structure):
    """exact6's key: the addresses folded to 64 bits each (fold6)."""
    _fields_ = [("sfold", u64), ("dfold", u64), ("sport", u16), ("dport", u16),
                ("proto", u8), ("pad", u8 * 3)]


class RuleVal(ctypes.Structure):
    _fields_ = [("expires_ns", u64), ("created_ns", u64), ("packets", u64), ("bytes", u64),
                ("action", u8), ("origin", u8), ("pad", u8 * 6)]


class Rule6Val(ctypes.Structure):
    """exact6's value: the rule, then the hi halves (fold6) of its source and destination."""
    _fields_ = [("rule", RuleVal), ("shi", u64), ("dhi", u64)]


class HostSlot(ctypes.Structure):
    """An inline host rule (map src_host_slot): family 0 empty, 4 (addr[:4]) or 6 (addr)."""
    _fields_ = [("addr", Addr16), ("rule", RuleVal), ("family", u8), ("pad", u8 * 7)]


class LpmKey(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", Addr16)]


class Lpm4Key(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", u8 * 4)]


class AllowVal(ctypes.Structure):
    _fields_ = [("created_ns", u64), ("origin", u8), ("pad", u8 * 7)]


class LimitKey(ctypes.Structure):
    _fields_ = [("daddr", Addr16), ("dport", u16), ("proto", u8), ("tcp_flags", u8)]


class LimitVal(ctypes.Structure):
    _fields_ = [("expires_ns", u64), ("created_ns", u64), ("interval_ns", u64),
                ("burst_ns", u64), ("tat", u64), ("rate_pps", u32), ("origin", u8),
                ("pad", u8 * 3)]


class AddrKey(ctypes.Structure):
    _fields_ = [("b", Addr16)]


class LimitDst(ctypes.Structure):
    _fields_ = [("masks", u8 * XG_LIMIT_MASKS), ("nmasks", u8), ("pad", u8 * 3)]


class Counter(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64), ("dropped", u64)]


STAT_FIELDS = ("seen", "passed", "allowed", "rule_pass", "drop_exact", "drop_prefix",
               "drop_limit", "unmatched", "events", "events_lost", "parse_fail", "non_ip",
               "fragments", "partial", "drop_frag")


class Stats(ctypes.Structure):
    # STAT_FIELDS are counters; clk_jiffies / clk_ns are the program's per-CPU expiry clock
    # (the coarse clock read at that jiffies value), not summed or shown
    _fields_ = [*[(name, u64) for name in STAT_FIELDS], ("clk_jiffies", u64), ("clk_ns", u64)]


# Config's rule counts, one per map the program may skip when 0
_FIRST_COUNTS = ("n_allow", "n_exact4", "n_exact6", "n_host4", "n_host6", "n_prefix4", "n_prefix6",
                "n_limit", "n_host_slot")
COUNT_FIELDS = (*_FIRST_COUNTS, "n_exact6x")  # n_exact6x sits after plens6 (was padding)


class Config(ctypes.Structure):
    _fields_ = [("magic", u32), ("sample_rate", u32), ("exact_max", u32), ("prefix_max", u32),
                ("allow_max", u32), ("limit_max", u32), ("ring_bytes", u32), ("pad", u32),
                *[(name, u32) for name in _FIRST_COUNTS],
                # source-prefix lengths in use (bit n: a rule of length n) and rules per length
                ("plens4", u32), ("plens6", u32 * 4), ("n_exact6x", u32), ("pad2", u32),
                ("n_len4", u32 * 32), ("n_len6", u32 * 128),
                # the src_host_slot directory: bit i % 32 of word i // 32 while slot i may hold
                # a rule (hostslots.py), counted in n_host_slot
                ("host_slot_used", u32 * (XG_HOST_SLOTS // 32))]


class Event(ctypes.Structure):
    _fields_ = [("ts_ns", u64), ("saddr", Addr16), ("daddr", Addr16), ("sport", u16),
                ("dport", u16), ("len", u32), ("ifindex", u32), ("proto", u8),
                ("tcp_flags", u8), ("flags", u8), ("icmp_type", u8)]


# C struct name -> mirror, for the layout test
MIRRORS = {
    "xg_filter_slot": FilterSlot, "xg_addr4": Addr4Key, "xg_flow4_key": Flow4Key, "xg_flow6_key": Flow6Key, "xg_flow6_fold": Flow6Fold, "xg_rule": RuleVal, "xg_rule6": Rule6Val, "xg_host_slot": HostSlot, "xg_lpm_key": LpmKey, "xg_lpm4_key": Lpm4Key,
    "xg_allow": AllowVal, "xg_limit_key": LimitKey, "xg_limit": LimitVal, "xg_addr": AddrKey,
    "xg_limit_dst": LimitDst, "xg_counter": Counter, "xg_stats": Stats, "xg_config": Config,
    "xg_event": Event,
}


def filter_slot(src: str) -> int:
    """The src_filter slot of a rule's source address (IPv4 or IPv6 text), as the program
    computes it: the address's 32-bit words in this machine's byte order, XORed, times
    XG_FILTER_MULT, the top XG_FILTER_BITS bits. A v4-mapped IPv6 address (::ffff:a.b.c.d) has
    the slot of a.b.c.d, as the program gives such a source its IPv4 word."""
    ip = ipaddress.ip_address(src)
    packed = (ip.ipv4_mapped or ip).packed if ip.version == 6 else ip.packed
    h = 0
    for i in range(0, len(packed), 4):
        h ^= int.from_bytes(packed[i:i + 4], sys.byteorder)
    return _slot(h.to_bytes(4, sys.byteorder))


def fold6(packed: bytes) -> tuple[int, int]:
    """(fold, hi) of a 16-byte IPv6 address as the program computes them (xg_flow6_fold): hi its
    first 8 bytes and lo its last 8, each as a u64 in this machine's byte order, fold = lo ^ hi *
    XG_FOLD_MULT mod 2^64."""
    hi, lo = int.from_bytes(packed[:8], sys.byteorder), int.from_bytes(packed[8:], sys.byteorder)
    return lo ^ (hi * XG_FOLD_MULT) & 0xFFFFFFFFFFFFFFFF, hi


def unfold6(fold: int, hi: int) -> bytes:
    """The 16-byte address whose fold6 is (fold, hi)."""
    lo = fold ^ (hi * XG_FOLD_MULT) & 0xFFFFFFFFFFFFFFFF
    return hi.to_bytes(8, sys.byteorder) + lo.to_bytes(8, sys.byteorder)


def host_slot(src: str) -> int:
    """The src_host_slot index of a host rule's address (IPv4 or IPv6 text): the top
    XG_HOST_SLOT_BITS bits of its src_filter slot, as the program computes it."""
    return filter_slot(src) >> (XG_FILTER_BITS - XG_HOST_SLOT_BITS)


def _slot(word: bytes) -> int:
    """The filter slot of a 4-byte word as the program loads it (this machine's byte order)."""
    return ((int.from_bytes(word, sys.byteorder) * XG_FILTER_MULT) & 0xFFFFFFFF) >> (32 - XG_FILTER_BITS)


def pfx_filter_slot(cidr: str) -> int | None:
    """The src_pfx_filter slot of a source prefix (IPv4 or IPv6 text, shorter than a host), as
    the program computes it for the sources inside it: an IPv4 network address's first
    XG_PFX4_FILTER_LEN bits, an IPv6 one's first XG_PFX6_FILTER_LEN (its first word). None for a
    prefix shorter than that: it has no slot (the program then looks every source up)."""
    net = ipaddress.ip_network(canonical_network(cidr))
    flen = XG_PFX4_FILTER_LEN if net.version == 4 else XG_PFX6_FILTER_LEN
    if net.prefixlen < flen:
        return None
    return _slot(net.supernet(new_prefix=flen).network_address.packed[:4])


def pfx_filter_band(cidr: str) -> int:
    """The band of its src_pfx_filter slot a source prefix (shorter than a host, with a slot) is
    counted in: 0 for IPv4 (v4-mapped included), its length // 32 (1-3) for IPv6."""
    net = ipaddress.ip_network(canonical_network(cidr))
    return 0 if net.version == 4 else net.prefixlen // 32


def band_count(word: int, band: int) -> int:
    """Band `band`'s count in a src_pfx_filter word."""
    return word >> (8 * band) & 0xFF


def band_add(word: int, band: int, delta: int) -> int:
    """`word` with `delta` added to band `band`'s count, floored at 0 and capped at
    XG_PFX_BAND_SAT, where it sticks (a saturated count no longer says how many rules there are,
    so it is never lowered: never below the true count)."""
    n = band_count(word, band)
    if n != XG_PFX_BAND_SAT:
        n = min(XG_PFX_BAND_SAT, max(0, n + delta))
    return word & ~(0xFF << (8 * band)) | n << (8 * band)


def bands_at_least(word: int, counts: list[int]) -> int:
    """`word` with each band raised to at least its count in `counts` (band 0 first; capped at
    XG_PFX_BAND_SAT), never lowered: a band above its count costs a lookup, never a rule."""
    for band, n in enumerate(counts):
        if (short := min(n, XG_PFX_BAND_SAT) - band_count(word, band)) > 0:
            word = band_add(word, band, short)
    return word


def addr_bytes(text: str) -> bytes:
    """16-byte map form of an address: IPv6 as is, IPv4 v4-mapped."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return b"\0" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def addr_text(raw: bytes) -> str:
    """16 map bytes -> the address in its one form (v4-mapped as IPv4)."""
    ip = ipaddress.IPv6Address(bytes(raw))
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def lpm_key(cidr: str) -> LpmKey:
    """The LPM key of a prefix in its one form (records.rules.canonical_network): an IPv4 /n
    is ::ffff:a.b.c.d/96+n. ValueError if not a prefix, or an IPv6 prefix that would also match
    every IPv4 source."""
    net = ipaddress.ip_network(canonical_network(cidr))
    plen = net.prefixlen + (96 if net.version == 4 else 0)
    return LpmKey(plen, Addr16(*addr_bytes(str(net.network_address))))


def lpm_text(key: LpmKey) -> str:
    raw = bytes(key.addr)
    ip = ipaddress.IPv6Address(raw)
    if ip.ipv4_mapped is not None and key.prefixlen >= 96:
        return str(ipaddress.ip_network(f"{ip.ipv4_mapped}/{key.prefixlen - 96}"))
    return str(ipaddress.ip_network(f"{ip}/{key.prefixlen}"))
