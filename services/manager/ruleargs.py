"""Pure parsing of the CLI's rule flags into services.records.rules.Rule (no kernel, unit-tested),
and the bounded number types every numeric flag of every verb is read with.

A flag's value that is wrong on its own (not a number, NaN, infinite, negative, beyond its field)
is refused by its argparse type: one line naming the flag and the range, exit 2, before anything
runs. Flags that do not fit together raise ConfigError with one line, which cli.main prints.
"""
from __future__ import annotations

import argparse
import math
import time

from services.common.errors import ConfigError
from services.records.packet import PROTO_NAMES, PROTO_TCP
from services.records.rules import Action, Origin, Rule, Scope, canonical_address, canonical_network

PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}
TCP_FLAG_BITS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20,
                 "ece": 0x40, "cwr": 0x80}
MAX_TTL_S = 10 * 365 * 86400  # 10 years; a rule without --ttl never expires
U32_MAX = 2**32 - 1


def bounded(kind: type, lo: float, hi: float, unit: str = ""):
    """An argparse type reading `kind` (int: decimal digits; float: any finite number) within
    lo..hi inclusive; anything else is an argparse error naming the range. The callable carries
    `.bounds` = (lo, hi) (tests/kernel/test_rel_cli_numbers.py walks them)."""
    what = "a whole number" if kind is int else "a number"

    def convert(text: str):
        try:
            value = int(text, 10) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (kind is float and not math.isfinite(value)) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range {_text(lo)}-{_text(hi)}{unit}")
        return value

    convert.bounds = (lo, hi)
    convert.__name__ = kind.__name__
    return convert


def _text(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


PORT = bounded(int, 0, 65535)
RATE_PPS = bounded(int, 1, U32_MAX, " packets per second")
TTL_S = bounded(float, 0.001, MAX_TTL_S, " seconds (omit --ttl: never expires)")


def _byte(text: str, names: dict[str, int], what: str, several: bool) -> int:
    """A byte given as a number (0x.. too) or by name (`several`: names joined by , or |)."""
    try:
        value = int(text, 0)
    except ValueError:
        parts = text.lower().replace("|", ",").split(",") if several else [text.lower()]
        value = 0
        for part in parts:
            if part.strip() not in names:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {part.strip()!r} ({', '.join(names)} or 0-255)") from None
            value |= names[part.strip()]
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{text} is out of range 0-255")
    return value


def parse_proto(text: str) -> int:
    """argparse type of --proto: tcp, udp, icmp, icmpv6 or a number 0-255."""
    return _byte(text, PROTO_NUMBERS, "protocol", several=False)


def parse_tcp_flags(text: str) -> int:
    """argparse type of --tcp-flags: names (syn,ack) or a number 0-255 (0x12)."""
    return _byte(text, TCP_FLAG_BITS, "TCP flag", several=True)


parse_proto.bounds = parse_tcp_flags.bounds = (0, 255)
parse_proto.__name__, parse_tcp_flags.__name__ = "protocol", "TCP flags"


def add_rule_flags(p, with_action: bool = True) -> None:
    """The original tool's flags plus prefix, limit and TTL (shared by `add` and `del`)."""
    p.add_argument("--src", help="source address (exact rule)")
    p.add_argument("--dst", help="destination address (exact or limit rule)")
    p.add_argument("--sport", type=PORT, help="source port 0-65535 (exact rule; default 0)")
    p.add_argument("--dport", type=PORT, help="destination port 0-65535 (default 0; limit: 0 = any port)")
    p.add_argument("--proto", type=parse_proto, help="tcp, udp, icmp, icmpv6 or a number 0-255")
    if with_action:
        p.add_argument("--action", default="drop", help="pass or drop (default drop)")
        p.add_argument("--ttl", type=TTL_S, help="seconds until the rule expires "
                       f"(up to {MAX_TTL_S}; default: never)")
    p.add_argument("--src-prefix", metavar="CIDR", help="source prefix rule: every port and destination")
    p.add_argument("--limit", metavar="PPS", type=RATE_PPS,
                   help=f"destination rate limit in packets per second (1-{U32_MAX})")
    p.add_argument("--tcp-flags", metavar="FLAGS", type=parse_tcp_flags,
                   help="limit only packets with all these TCP flags, e.g. syn or syn,ack or 0x12")


def parse_addr(text: str, flag: str) -> str:
    """An address in its one form (IPv4-mapped IPv6 written as IPv4); ConfigError if not one."""
    try:
        return canonical_address(text.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an IPv4 or IPv6 address") from None


def parse_cidr(text: str, flag: str) -> str:
    """A prefix in its one form (see records.rules.canonical_network); ConfigError if not one,
    or if it is an IPv6 prefix the maps would also apply to every IPv4 source."""
    try:
        return canonical_network(text.strip())
    except ValueError as exc:
        if "/" in text and "covers every IPv4" in str(exc):
            raise ConfigError(f"{flag} {text.strip()}: {exc}") from None
        raise ConfigError(f"{flag} {text!r} is not an IPv4 or IPv6 prefix (CIDR)") from None


def rule_from_args(args, now_ns: int | None = None) -> Rule:
    """The Rule that `add`/`del` flags describe (origin manual); numbers come already checked by
    their argparse types. ConfigError (one line) for flags that do not fit together."""
    action_text = (getattr(args, "action", None) or "drop").lower()
    if action_text not in ("drop", "pass"):
        raise ConfigError(f"--action {action_text!r}: use pass or drop")
    sport, dport, proto = args.sport or 0, args.dport or 0, args.proto or 0
    now_ns = time.time_ns() if now_ns is None else now_ns
    ttl = getattr(args, "ttl", None)
    if args.src_prefix is not None and args.limit is not None:
        raise ConfigError("use either --src-prefix or --limit, not both")
    if args.src_prefix is not None:
        if args.src or args.dst or args.sport is not None or args.dport is not None or \
                args.proto is not None:
            raise ConfigError("--src-prefix matches every destination and port; drop the other flags")
        rule = _rule(Scope.SRC_PREFIX, Action(action_text),
                     src=parse_cidr(args.src_prefix, "--src-prefix"))
    elif args.limit is not None:
        if not args.dst:
            raise ConfigError("--limit needs --dst")
        if args.src or args.sport is not None:
            raise ConfigError("a limit is per destination: --src and --sport do not apply")
        flags = args.tcp_flags or 0
        if flags and proto not in (0, PROTO_TCP):
            raise ConfigError("--tcp-flags needs --proto tcp")
        if flags:
            proto = PROTO_TCP
        if dport and not proto:
            raise ConfigError("--dport on a limit needs --proto")
        rule = _rule(Scope.DST_LIMIT, Action.LIMIT, dst=parse_addr(args.dst, "--dst"), dport=dport,
                     proto=proto, tcp_flags=flags, rate_pps=args.limit)
    else:
        if not args.src or not args.dst:
            raise ConfigError("an exact rule needs --src and --dst (or use --src-prefix / --limit)")
        if args.tcp_flags is not None:
            raise ConfigError("--tcp-flags applies to --limit rules only")
        if args.proto is None:
            raise ConfigError("an exact rule needs --proto (tcp, udp, icmp or a number)")
        src, dst = parse_addr(args.src, "--src"), parse_addr(args.dst, "--dst")
        if (":" in src) != (":" in dst):
            raise ConfigError(f"--src {src} and --dst {dst} are different IP versions")
        rule = _rule(Scope.FLOW, Action(action_text), src=src, dst=dst, sport=sport, dport=dport,
                     proto=proto)
    return rule.with_times(now_ns, ttl)


def _rule(scope: Scope, action: Action, **fields) -> Rule:
    """A manual Rule; whatever Rule itself still refuses is a ConfigError (one line)."""
    try:
        return Rule(scope, action, origin=Origin.MANUAL, **fields)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
