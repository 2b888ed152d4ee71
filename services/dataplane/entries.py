"""Rules and the map entries that hold them, both ways: which map and key a Rule is written
under (exact4/exact6 by 5-tuple (exact6 by a folded one; exact6x by the whole one for a rule whose
folded key exact6 holds for another), src_host4/src_host6 by address for a /32 or /128 (or its inline
slot in src_host_slot, which Datapath picks),
src_prefix4/src_prefix by (length, masked address), dst_limit by destination key), its action and
origin codes, the monotonic/epoch clock conversion of expiry, the config's per-length bookkeeping of
source prefixes, and the Rules (with their counters) read back from the maps.

Pure apart from the two callables `read_rules` is given (a map's keys, an entry's value), so
Datapath (services/dataplane/datapath.py) drives it over the pinned maps.
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import struct
import time
from dataclasses import dataclass
from typing import Callable

from services.records.rules import Action, Origin, Rule, Scope

from .structs import (XG_ACT_DROP, XG_ACT_PASS, XG_ORIGIN_MANUAL, XG_ORIGIN_MODEL, Addr16, Addr4Key,
                      AddrKey, Config, Counter, FilterSlot, Flow4Key, Flow6Fold, Flow6Key, HostSlot, LimitKey, Lpm4Key,
                      LpmKey, Rule6Val, RuleVal, addr_bytes, addr_text, filter_slot, fold6, unfold6, lpm_key, lpm_text, pfx_filter_band,
                      pfx_filter_slot)

ORIGIN = {Origin.MANUAL: XG_ORIGIN_MANUAL, Origin.MODEL: XG_ORIGIN_MODEL}
ORIGIN_BACK = {v: k for k, v in ORIGIN.items()}
ACTION = {Action.DROP: XG_ACT_DROP, Action.PASS: XG_ACT_PASS}
ACTION_BACK = {v: k for k, v in ACTION.items()}
log = logging.getLogger("xdpguard.dataplane")


@dataclass(frozen=True)
class RuleStats:
    rule: Rule
    hits: int
    bytes: int
    dropped: int = 0


def mono_offset_ns() -> int:
    """Unix epoch ns minus kernel monotonic ns (CLOCK_MONOTONIC = bpf_ktime_get_ns)."""
    return time.time_ns() - time.monotonic_ns()


def to_mono(epoch_ns: int) -> int:
    return 0 if not epoch_ns else max(1, epoch_ns - mono_offset_ns())


def expired_mono(expires_ns: int) -> bool:
    """Whether a map entry's expiry (monotonic ns, as the program compares it with
    bpf_ktime_get_ns; 0 = never) has passed: the program no longer applies the entry, which
    stays in the map until a sweep or `xdpguard del` removes it."""
    return bool(expires_ns) and expires_ns <= time.monotonic_ns()


def to_epoch(mono_ns: int) -> int:
    return 0 if not mono_ns else mono_ns + mono_offset_ns()


def is_v4_prefix(key: LpmKey) -> bool:
    """An LPM key of an IPv4 prefix (v4-mapped, length 96 + n)."""
    return key.prefixlen >= 96 and bytes(key.addr)[:12] == b"\0" * 10 + b"\xff\xff"


def is_host(rule: Rule) -> bool:
    """A source-prefix rule of one address (/32, /128)."""
    return rule.scope is Scope.SRC_PREFIX and ipaddress.ip_network(rule.src).num_addresses == 1


def host_addr(rule: Rule) -> str:
    """The address of a host rule ("10.0.0.1/32" -> "10.0.0.1")."""
    return str(ipaddress.ip_network(rule.src).network_address)


def flow_key(rule: Rule):
    """(map name, key) of an exact rule: IPv4 and IPv6 live in separate maps; an IPv6 rule's key
    in exact6 is its folded one (Flow6Fold; flow6 gives the rest)."""
    src, dst = ipaddress.ip_address(rule.src), ipaddress.ip_address(rule.dst)  # one family: Rule
    if src.version == 4:
        return "exact4", Flow4Key((ctypes.c_uint8 * 4)(*src.packed), (ctypes.c_uint8 * 4)(*dst.packed),
                                  rule.sport, rule.dport, rule.proto)
    return "exact6", Flow6Fold(fold6(src.packed)[0], fold6(dst.packed)[0], rule.sport, rule.dport,
                               rule.proto)


def flow6(rule: Rule) -> tuple[Flow6Fold, Flow6Key, int, int]:
    """An IPv6 exact rule's folded key (exact6), whole key (exact6x) and the hi halves of its
    source and destination (the rest of exact6's value: Rule6Val)."""
    src, dst = ipaddress.ip_address(rule.src).packed, ipaddress.ip_address(rule.dst).packed
    (sfold, shi), (dfold, dhi) = fold6(src), fold6(dst)
    return (Flow6Fold(sfold, dfold, rule.sport, rule.dport, rule.proto),
            Flow6Key(Addr16(*src), Addr16(*dst), rule.sport, rule.dport, rule.proto), shi, dhi)


def prefix_slot(rule: Rule) -> tuple[str, LpmKey | Lpm4Key | Addr4Key | AddrKey, str]:
    """(map, key, config count field) of a source-prefix rule: a host (/32, /128) is keyed by its
    address alone in src_host4 or src_host6, a shorter prefix by its length and network address
    in src_prefix4 (IPv4, 4 bytes, length 0-31) or src_prefix (IPv6, 16 bytes, length 0-127).
    ValueError if the prefix is none the maps can hold (structs.lpm_key)."""
    key = lpm_key(rule.src)
    v4 = is_v4_prefix(key)
    if key.prefixlen == 128:
        if v4:
            return "src_host4", Addr4Key((ctypes.c_uint8 * 4)(*bytes(key.addr)[12:])), "n_host4"
        return "src_host6", AddrKey(key.addr), "n_host6"
    if v4:
        return "src_prefix4", Lpm4Key(key.prefixlen - 96, (ctypes.c_uint8 * 4)(*bytes(key.addr)[12:])), "n_prefix4"
    return "src_prefix", key, "n_prefix6"


def count_length(cfg: Config, v4: bool, plen: int, delta: int) -> None:
    """Add `delta` to cfg's rule count of source prefixes of length `plen` (IPv4 0-31 in n_len4,
    IPv6 0-127 in n_len6; never below 0) and keep the length's bit in plens4 / plens6 set
    exactly while that count is above 0 (the program looks up one hash per set bit)."""
    counts = cfg.n_len4 if v4 else cfg.n_len6
    counts[plen] = max(0, counts[plen] + delta)
    bit, word = 1 << plen % 32, plen // 32
    bits = cfg.plens4 if v4 else cfg.plens6[word]
    bits = bits | bit if counts[plen] else bits & ~bit
    if v4:
        cfg.plens4 = bits
    else:
        cfg.plens6[word] = bits


def filter_counts(rules: list[Rule]) -> tuple[dict[int, FilterSlot], dict[int, list[int]]]:
    """What the two skip filters should hold for `rules`: {src_filter slot: (exact, host) rule
    counts} and {src_pfx_filter slot: shorter source-prefix rules per band, [band 0..3]} (a
    prefix shorter than the prefix filter's length has no slot)."""
    want: dict[int, FilterSlot] = {}
    want_pfx: dict[int, list[int]] = {}
    for rule in rules:
        if rule.scope is Scope.FLOW or is_host(rule):
            n = want.setdefault(filter_slot(rule.src.split("/")[0]), FilterSlot())
            if rule.scope is Scope.FLOW:
                n.exact += 1
            else:
                n.host += 1
        elif rule.scope is Scope.SRC_PREFIX and (s := pfx_filter_slot(rule.src)) is not None:
            want_pfx.setdefault(s, [0, 0, 0, 0])[pfx_filter_band(rule.src)] += 1
    return want, want_pfx


def limit_key(rule: Rule) -> LimitKey:
    """dst_limit key of a limit rule (a TCP-flag mask comes with proto TCP: Rule sets it)."""
    return LimitKey(Addr16(*addr_bytes(rule.dst)), rule.dport, rule.proto, rule.tcp_flags)


def entry_rule(map_name: str, key, **fields) -> Rule | None:
    """The Rule a map entry stands for; None (logged) if the entry makes no valid Rule."""
    try:
        return Rule(**fields)
    except ValueError as exc:
        log.warning("%s entry %s left out: it is no rule this build can hold (%s)", map_name,
                    bytes(key).hex(), exc)
        return None


def _common(v) -> dict:
    return dict(origin=ORIGIN_BACK.get(v.origin, Origin.MODEL), created_ns=v.created_ns,
                expires_ns=to_epoch(v.expires_ns))


def _v4(raw) -> str:
    return str(ipaddress.IPv4Address(bytes(raw)))


# xg_host_slot as one struct: addr, the rule's expires, created, packets, bytes, action, origin,
# then family (structs.HostSlot; checked against its offsets below)
_SLOT = struct.Struct("=16sQQQQBB6xB7x")
_EMPTY = (b"", 0, 0, 0, 0, 0, 0, 0)
assert _SLOT.size == ctypes.sizeof(HostSlot) and HostSlot.family.offset == 56 \
    and HostSlot.rule.offset == 16 and RuleVal.action.offset == 32


# map -> (key type, fields of the Rule its key gives), for the maps whose value holds the counters
_SELF_COUNTED = {
    "exact4": (Flow4Key, lambda k: dict(scope=Scope.FLOW, src=_v4(k.saddr), dst=_v4(k.daddr),
                                        sport=k.sport, dport=k.dport, proto=k.proto)),
    "exact6x": (Flow6Key, lambda k: dict(scope=Scope.FLOW, src=addr_text(k.saddr), dst=addr_text(k.daddr),
                                         sport=k.sport, dport=k.dport, proto=k.proto)),
    "src_host4": (Addr4Key, lambda k: dict(scope=Scope.SRC_PREFIX, src=_v4(k.b) + "/32")),
    "src_host6": (AddrKey, lambda k: dict(scope=Scope.SRC_PREFIX, src=addr_text(k.b) + "/128")),
    "src_prefix4": (Lpm4Key, lambda k: dict(scope=Scope.SRC_PREFIX, src=f"{_v4(k.addr)}/{k.prefixlen}")),
    "src_prefix": (LpmKey, lambda k: dict(scope=Scope.SRC_PREFIX, src=lpm_text(k))),
}


def read_rules(keys: Callable[[str, type], list], read: Callable[[str, object], object | None]
               ) -> list[RuleStats]:
    """Every rule in the maps with its counters (expiry in Unix epoch ns): `keys(map, key type)`
    lists a map's keys, `read(map, key)` gives an entry's value (per-CPU counters summed) or None.
    An entry that makes no valid Rule is left out, logged."""
    out: list[RuleStats] = []
    for name, (ktype, fields) in _SELF_COUNTED.items():
        for key in keys(name, ktype):
            v = read(name, key)
            rule = v and entry_rule(name, key, action=ACTION_BACK.get(v.action, Action.DROP),
                                    **fields(key), **_common(v))
            if rule:  # a source or exact rule drops all it counts or none
                out.append(RuleStats(rule, v.packets, v.bytes, v.packets if v.action == XG_ACT_DROP else 0))
    for key in keys("exact6", Flow6Fold):  # the addresses from the folds and the value's hi halves
        v = read("exact6", key)
        rule = v and entry_rule("exact6", key, action=ACTION_BACK.get(v.rule.action, Action.DROP),
                                scope=Scope.FLOW, src=addr_text(unfold6(key.sfold, v.shi)),
                                dst=addr_text(unfold6(key.dfold, v.dhi)), sport=key.sport,
                                dport=key.dport, proto=key.proto, **_common(v.rule))
        if rule:
            out.append(RuleStats(rule, v.rule.packets, v.rule.bytes,
                                 v.rule.packets if v.rule.action == XG_ACT_DROP else 0))
    for key in keys("src_host_slot", ctypes.c_uint32):  # inline host rules (family 0: empty)
        v = read("src_host_slot", key)  # decoded in one unpack, not field by field (rules() cost)
        addr, exp, created, packets, nbytes, action, origin, family = _SLOT.unpack_from(v) if v \
            else _EMPTY
        if family not in (4, 6):
            continue
        src = _v4(addr[:4]) + "/32" if family == 4 else addr_text(addr) + "/128"
        rule = entry_rule("src_host_slot", key, scope=Scope.SRC_PREFIX, src=src,
                          action=ACTION_BACK.get(action, Action.DROP), created_ns=created,
                          origin=ORIGIN_BACK.get(origin, Origin.MODEL), expires_ns=to_epoch(exp))
        if rule:
            out.append(RuleStats(rule, packets, nbytes, packets if action == XG_ACT_DROP else 0))
    for key in keys("dst_limit", LimitKey):
        v = read("dst_limit", key)
        rule = v and entry_rule("dst_limit", key, scope=Scope.DST_LIMIT, action=Action.LIMIT,
                                dst=addr_text(key.daddr), dport=key.dport, proto=key.proto,
                                tcp_flags=key.tcp_flags, rate_pps=v.rate_pps, **_common(v))
        if rule:
            c = read("limit_stats", key) or Counter()
            out.append(RuleStats(rule, c.packets, c.bytes, c.dropped))
    return out
