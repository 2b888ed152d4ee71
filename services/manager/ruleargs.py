"""Pure parsing of the CLI's rule flags into services.records.rules.Rule (no kernel, unit-tested).

Every bad value raises ConfigError with one line naming the flag, which cli.main prints.
"""
from __future__ import annotations

import ipaddress
import time

from services.common.errors import ConfigError
from services.records.packet import PROTO_NAMES
from services.records.rules import Action, Origin, Rule, Scope

PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}
TCP_FLAG_BITS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20,
                 "ece": 0x40, "cwr": 0x80}


def add_rule_flags(p, with_action: bool = True) -> None:
    """The original tool's flags plus prefix, limit and TTL (shared by `add` and `del`)."""
    p.add_argument("--src", help="source address (exact rule)")
    p.add_argument("--dst", help="destination address (exact or limit rule)")
    p.add_argument("--sport", help="source port 0-65535 (exact rule; default 0)")
    p.add_argument("--dport", help="destination port 0-65535 (default 0; limit: 0 = any port)")
    p.add_argument("--proto", help="tcp, udp, icmp, icmpv6 or a number 0-255")
    if with_action:
        p.add_argument("--action", default="drop", help="pass or drop (default drop)")
        p.add_argument("--ttl", help="seconds until the rule expires (default: never)")
    p.add_argument("--src-prefix", metavar="CIDR", help="source prefix rule: every port and destination")
    p.add_argument("--limit", metavar="PPS", help="destination rate limit in packets per second")
    p.add_argument("--tcp-flags", metavar="FLAGS",
                   help="limit only packets with all these TCP flags, e.g. syn or syn,ack or 0x12")


def parse_addr(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an IPv4 or IPv6 address") from None


def parse_cidr(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an IPv4 or IPv6 prefix (CIDR)") from None


def parse_port(text: str | None, flag: str) -> int:
    if text is None:
        return 0
    try:
        port = int(text, 10)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag} {port} out of range 0-65535")
    return port


def parse_proto(text: str | None) -> int:
    if text is None:
        return 0
    name = text.strip().lower()
    if name in PROTO_NUMBERS:
        return PROTO_NUMBERS[name]
    try:
        num = int(name, 0)
    except ValueError:
        raise ConfigError(f"--proto {text!r}: unknown protocol (tcp, udp, icmp, icmpv6 or 0-255)") from None
    if not 0 <= num <= 255:
        raise ConfigError(f"--proto {num} out of range 0-255")
    return num


def parse_tcp_flags(text: str | None) -> int:
    if not text:
        return 0
    try:
        value = int(text, 0)
    except ValueError:
        value = 0
        for part in text.lower().replace("|", ",").split(","):
            part = part.strip()
            if part not in TCP_FLAG_BITS:
                raise ConfigError(f"--tcp-flags: unknown flag {part!r} "
                                  f"({', '.join(TCP_FLAG_BITS)} or a number)") from None
            value |= TCP_FLAG_BITS[part]
    if not 0 <= value <= 255:
        raise ConfigError(f"--tcp-flags {value} out of range 0-255")
    return value


def parse_ttl(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        ttl = float(text)
    except ValueError:
        raise ConfigError(f"--ttl {text!r} is not a number of seconds") from None
    if not ttl > 0:
        raise ConfigError("--ttl must be above 0 seconds")
    return ttl


def rule_from_args(args, now_ns: int | None = None) -> Rule:
    """The Rule that `add`/`del` flags describe (origin manual)."""
    action_text = (getattr(args, "action", None) or "drop").lower()
    if action_text not in ("drop", "pass"):
        raise ConfigError(f"--action {action_text!r}: use pass or drop")
    sport, dport = parse_port(args.sport, "--sport"), parse_port(args.dport, "--dport")
    proto = parse_proto(args.proto)
    now_ns = time.time_ns() if now_ns is None else now_ns
    ttl = parse_ttl(getattr(args, "ttl", None))
    if args.src_prefix is not None and args.limit is not None:
        raise ConfigError("use either --src-prefix or --limit, not both")
    if args.src_prefix is not None:
        if args.src or args.dst or args.sport or args.dport or args.proto:
            raise ConfigError("--src-prefix matches every destination and port; drop the other flags")
        rule = Rule(Scope.SRC_PREFIX, Action(action_text), src=parse_cidr(args.src_prefix, "--src-prefix"),
                    origin=Origin.MANUAL)
    elif args.limit is not None:
        try:
            rate = int(args.limit, 10)
        except ValueError:
            raise ConfigError(f"--limit {args.limit!r} is not a whole number of packets per second") from None
        if rate <= 0:
            raise ConfigError("--limit must be at least 1 packet per second")
        if not args.dst:
            raise ConfigError("--limit needs --dst")
        if args.src or args.sport:
            raise ConfigError("a limit is per destination: --src and --sport do not apply")
        flags = parse_tcp_flags(args.tcp_flags)
        if flags and proto not in (0, 6):
            raise ConfigError("--tcp-flags needs --proto tcp")
        if flags:
            proto = 6
        if dport and not proto:
            raise ConfigError("--dport on a limit needs --proto")
        rule = Rule(Scope.DST_LIMIT, Action.LIMIT, dst=parse_addr(args.dst, "--dst"), dport=dport,
                    proto=proto, tcp_flags=flags, rate_pps=rate, origin=Origin.MANUAL)
    else:
        if not args.src or not args.dst:
            raise ConfigError("an exact rule needs --src and --dst (or use --src-prefix / --limit)")
        if args.tcp_flags:
            raise ConfigError("--tcp-flags applies to --limit rules only")
        if args.proto is None:
            raise ConfigError("an exact rule needs --proto (tcp, udp, icmp or a number)")
        src, dst = parse_addr(args.src, "--src"), parse_addr(args.dst, "--dst")
        if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
            raise ConfigError("--src and --dst are different IP versions")
        rule = Rule(Scope.FLOW, Action(action_text), src=src, dst=dst, sport=sport, dport=dport,
                    proto=proto, origin=Origin.MANUAL)
    return rule.with_times(now_ns, ttl)
