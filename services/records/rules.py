"""The rule model, shared by CLI, scorer verdicts, enforcer and evaluation (kernel semantics:
docs/dataplane.md).

A rule has a scope (exact 5-tuple flow, source prefix, destination rate limit), an action, an
origin, a creation time and an optional expiry. Times are Unix epoch nanoseconds so a rule means
the same after a reboot; the map layer converts expiry to the kernel's monotonic clock.
`Rule.key()` is the rule's identity: the Kafka key in the compacted `rules` topic and the
de-duplication key everywhere else.

Addresses have one text form everywhere (`canonical_address`, `canonical_network`): what
`ipaddress` prints, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) written as the IPv4
address it stands for, because the maps store IPv4 that way and report it back as IPv4. A Rule
holds only that form, so a rule written either way has one key, one map entry and one listing.
A Rule also refuses what the maps cannot hold (ValueError): numbers wider than their kernel
field, a flow whose addresses are of two families, an IPv6 prefix that would also cover every
IPv4 source, an action or a TCP-flag mask its scope has no use for.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, replace
from enum import Enum
from functools import lru_cache

from services.records.packet import PROTO_TCP

V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # where the maps keep IPv4 addresses


def canonical_address(text: str) -> str:
    """`text` (IPv4 or IPv6) in its one form: ipaddress's text, IPv4-mapped IPv6 as IPv4.
    ValueError if it is not an address, or has an IPv6 zone index (`%eth0`: the maps hold none,
    so it would be a second spelling of the address)."""
    ip = ipaddress.ip_address(text)
    if getattr(ip, "scope_id", None) is not None:
        raise ValueError(f"{text!r} has a zone index: rules name addresses without one")
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def canonical_network(text: str) -> str:
    """`text` (a CIDR; host bits are cleared) in its one form: IPv6 prefixes inside
    ::ffff:0:0/96 as the IPv4 prefix they stand for. ValueError if it is not a prefix, or if it
    is an IPv6 prefix that contains ::ffff:0:0/96 (::/0 ... ::ffff:0:0/95): in the maps it would
    match every IPv4 source too, which is never what `::/0` was written for."""
    net = ipaddress.ip_network(text, strict=False)
    if getattr(net.network_address, "scope_id", None) is not None:
        raise ValueError(f"{text!r} has a zone index: rules name prefixes without one")
    if net.version == 6:
        if net.subnet_of(V4_MAPPED):
            return str(ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF,
                                              net.prefixlen - 96)))
        if V4_MAPPED.subnet_of(net):
            raise ValueError(f"IPv6 prefix {net} also covers every IPv4 address (the maps keep "
                             f"them as {V4_MAPPED}); name the IPv6 prefixes that do not, and "
                             f"IPv4 ones separately")
    return str(net)


class Scope(str, Enum):
    FLOW = "flow"               # exact 5-tuple
    SRC_PREFIX = "src_prefix"   # source CIDR, any destination/port
    DST_LIMIT = "dst_limit"     # destination (+proto, port, TCP-flag mask) -> packets per second


class Action(str, Enum):
    DROP = "drop"
    PASS = "pass"
    LIMIT = "limit"


class Origin(str, Enum):
    MANUAL = "manual"
    MODEL = "model"


@dataclass(frozen=True)
class Rule:
    scope: Scope
    action: Action
    src: str = ""          # FLOW: source address; SRC_PREFIX: CIDR
    dst: str = ""          # FLOW and DST_LIMIT: destination address
    sport: int = 0
    dport: int = 0         # DST_LIMIT: 0 = any port
    proto: int = 0         # DST_LIMIT: 0 = any protocol (TCP when tcp_flags is set)
    tcp_flags: int = 0     # DST_LIMIT: packets whose flags include all of these bits (0 = any)
    rate_pps: int = 0      # DST_LIMIT: packets per second let through
    origin: Origin = Origin.MODEL
    created_ns: int = 0
    expires_ns: int = 0    # 0 = never

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", Scope(self.scope))
        object.__setattr__(self, "action", Action(self.action))
        object.__setattr__(self, "origin", Origin(self.origin))
        for name in ("sport", "dport"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} {getattr(self, name)} out of range 0-65535")
        if not 0 <= self.proto <= 255:
            raise ValueError(f"protocol {self.proto} out of range 0-255")
        if not 0 <= self.tcp_flags <= 255:
            raise ValueError(f"TCP flags {self.tcp_flags:#x} out of range 0-0xff")
        # The kernel's fields are this wide: refuse, never let ctypes truncate.
        if not 0 <= self.rate_pps < 2**32:
            raise ValueError(f"rate {self.rate_pps} pps out of range 0-{2**32 - 1}")
        for name in ("created_ns", "expires_ns"):
            if not 0 <= getattr(self, name) < 2**63:
                raise ValueError(f"{name} {getattr(self, name)} out of range")
        self._canonical_addresses()
        if self.scope is Scope.DST_LIMIT:
            if self.action is not Action.LIMIT or self.rate_pps <= 0:
                raise ValueError("a destination limit needs action limit and a rate above 0")
            if self.tcp_flags and self.proto not in (0, PROTO_TCP):
                raise ValueError("TCP-flag masks apply to TCP only")
            if self.tcp_flags and not self.proto:  # one rule, one key, one dst_limit entry
                object.__setattr__(self, "proto", PROTO_TCP)
            if self.dport and not self.proto:
                raise ValueError("a limit on a port needs a protocol")
        elif self.action is Action.LIMIT:
            raise ValueError(f"a {self.scope.value} rule's action is drop or pass")

    def _canonical_addresses(self) -> None:
        """Every address of the rule's scope in its one form (canonical_*); ValueError if one
        is missing or malformed, or a flow's two addresses are of different families."""
        if self.scope is Scope.FLOW:
            src, dst = canonical_address(self.src), canonical_address(self.dst)
            if (":" in src) != (":" in dst):
                raise ValueError(f"source {src} and destination {dst} are different IP versions")
            object.__setattr__(self, "src", src)
            object.__setattr__(self, "dst", dst)
        elif self.scope is Scope.SRC_PREFIX:
            object.__setattr__(self, "src", canonical_network(self.src))
        else:
            object.__setattr__(self, "dst", canonical_address(self.dst))

    def key(self) -> str:
        if self.scope is Scope.FLOW:
            return f"flow/{self.proto}/{self.src}/{self.sport}/{self.dst}/{self.dport}"
        if self.scope is Scope.SRC_PREFIX:
            return f"src/{self.src}"
        return f"limit/{self.proto}/{self.dst}/{self.dport}/{self.tcp_flags}"

    def covers(self, src: str, dst: str, sport: int = 0, dport: int = 0, proto: int = 0,
               tcp_flags: int = 0) -> bool:
        """Whether this rule matches a packet with these fields, as the XDP program matches
        (docs/dataplane.md, "Match"); addresses are IPv4/IPv6 text, ports 0 where the protocol has
        none (ICMP, later fragments). FLOW: the exact 5-tuple. SRC_PREFIX: the source is in the
        prefix (same family). DST_LIMIT: the destination, the protocol (0 = any), the port (0 =
        any) and every bit of the flag mask among `tcp_flags` (a mask comes with proto TCP:
        __post_init__ sets it, as the maps store it). Neither the action nor the time (expiry) is looked at: whoever
        asks applies precedence and expiry. ValueError if an address is not one."""
        if self.scope is Scope.FLOW:
            return (self.sport, self.dport, self.proto) == (sport, dport, proto) and \
                _address(self.src) == _address(src) and _address(self.dst) == _address(dst)
        if self.scope is Scope.SRC_PREFIX:
            ip, net = _address(src), _network(self.src)
            return ip.version == net.version and ip in net
        return (self.proto in (0, proto) and self.dport in (0, dport)
                and tcp_flags & self.tcp_flags == self.tcp_flags
                and _address(self.dst) == _address(dst))

    def expired(self, now_ns: int) -> bool:
        return self.expires_ns != 0 and now_ns >= self.expires_ns

    def with_times(self, created_ns: int, ttl_s: float | None) -> "Rule":
        expires = 0 if not ttl_s else created_ns + int(ttl_s * 1e9)
        return replace(self, created_ns=created_ns, expires_ns=expires)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scope"], d["action"], d["origin"] = self.scope.value, self.action.value, self.origin.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Rule":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}  # tolerate unknown fields
        return cls(**known)


@lru_cache(maxsize=1 << 16)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@lru_cache(maxsize=1 << 12)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)
