"""Rules and the map entries that hold them, both ways: which map and key a Rule is written
under (exact4/exact6 by 5-tuple, src_host4/src_host6 by address for a /32 or /128,
src_prefix4/src_prefix by LPM key, dst_limit by destination key), its action and origin codes, the monotonic/epoch
clock conversion of expiry, and the Rules (with their counters) read back from the maps.

Pure apart from the two callables `read_rules` is given (a map's keys, an entry's value), so
Datapath (services/dataplane/datapath.py) drives it over the pinned maps.
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Callable

from services.records.rules import Action, Origin, Rule, Scope

from .structs import (XG_ACT_DROP, XG_ACT_PASS, XG_ORIGIN_MANUAL, XG_ORIGIN_MODEL, Addr16, Addr4Key,
                      AddrKey, Counter, Flow4Key, Flow6Key, LimitKey, Lpm4Key, LpmKey, addr_bytes, addr_text,
                      lpm_key, lpm_text)

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
    """(map name, key) of an exact rule: IPv4 and IPv6 live in separate maps."""
    src, dst = ipaddress.ip_address(rule.src), ipaddress.ip_address(rule.dst)  # one family: Rule
    if src.version == 4:
        return "exact4", Flow4Key((ctypes.c_uint8 * 4)(*src.packed), (ctypes.c_uint8 * 4)(*dst.packed),
                                  rule.sport, rule.dport, rule.proto)
    return "exact6", Flow6Key(Addr16(*src.packed), Addr16(*dst.packed), rule.sport, rule.dport,
                              rule.proto)


def prefix_slot(rule: Rule) -> tuple[str, LpmKey | Lpm4Key | Addr4Key | AddrKey, str]:
    """(map, key, config count field) of a source-prefix rule: a host (/32, /128) is keyed by its
    address alone in src_host4 or src_host6, a shorter prefix sits in src_prefix4 (IPv4, 4-byte
    LPM key) or src_prefix (IPv6). Its src_stats key is lpm16(key). ValueError if the prefix is
    none the maps can hold (structs.lpm_key)."""
    key = lpm_key(rule.src)
    v4 = is_v4_prefix(key)
    if key.prefixlen == 128:
        if v4:
            return "src_host4", Addr4Key((ctypes.c_uint8 * 4)(*bytes(key.addr)[12:])), "n_host4"
        return "src_host6", AddrKey(key.addr), "n_host6"
    if v4:
        return "src_prefix4", Lpm4Key(key.prefixlen - 96, (ctypes.c_uint8 * 4)(*bytes(key.addr)[12:])), "n_prefix4"
    return "src_prefix", key, "n_prefix6"


def lpm16(key: LpmKey | Lpm4Key) -> LpmKey:
    """The 16-byte LPM key of a source prefix (src_stats' key, and the prefixlen its xg_prefix
    value holds): an IPv4 one v4-mapped, length 96 + n."""
    if isinstance(key, LpmKey):
        return key
    return LpmKey(96 + key.prefixlen, Addr16(*(b"\0" * 10 + b"\xff\xff" + bytes(key.addr))))


def limit_key(rule: Rule) -> LimitKey:
    """dst_limit key of a limit rule (a TCP-flag mask without a protocol means TCP)."""
    key = LimitKey(Addr16(*addr_bytes(rule.dst)), rule.dport, rule.proto, rule.tcp_flags)
    if rule.tcp_flags and not rule.proto:
        key.proto = 6
    return key


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


# map -> (key type, fields of the Rule its key gives), for the maps whose value holds the counters
_SELF_COUNTED = {
    "exact4": (Flow4Key, lambda k: dict(scope=Scope.FLOW, src=_v4(k.saddr), dst=_v4(k.daddr),
                                        sport=k.sport, dport=k.dport, proto=k.proto)),
    "exact6": (Flow6Key, lambda k: dict(scope=Scope.FLOW, src=addr_text(k.saddr), dst=addr_text(k.daddr),
                                        sport=k.sport, dport=k.dport, proto=k.proto)),
    "src_host4": (Addr4Key, lambda k: dict(scope=Scope.SRC_PREFIX, src=_v4(k.b) + "/32")),
    "src_host6": (AddrKey, lambda k: dict(scope=Scope.SRC_PREFIX, src=addr_text(k.b) + "/128")),
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
            if rule:  # a host or exact rule drops all it counts or none
                out.append(RuleStats(rule, v.packets, v.bytes, v.packets if v.action == XG_ACT_DROP else 0))
    for name, ktype in (("src_prefix4", Lpm4Key), ("src_prefix", LpmKey)):
        for key in keys(name, ktype):
            v = read(name, key)
            rule = v and entry_rule(name, key, scope=Scope.SRC_PREFIX, src=lpm_text(lpm16(key)),
                                    action=ACTION_BACK.get(v.action, Action.DROP), **_common(v))
            if rule:
                c = read("src_stats", lpm16(key)) or Counter()
                out.append(RuleStats(rule, c.packets, c.bytes, c.dropped))
    for key in keys("dst_limit", LimitKey):
        v = read("dst_limit", key)
        rule = v and entry_rule("dst_limit", key, scope=Scope.DST_LIMIT, action=Action.LIMIT,
                                dst=addr_text(key.daddr), dport=key.dport, proto=key.proto,
                                tcp_flags=key.tcp_flags, rate_pps=v.rate_pps, **_common(v))
        if rule:
            c = read("limit_stats", key) or Counter()
            out.append(RuleStats(rule, c.packets, c.bytes, c.dropped))
    return out
