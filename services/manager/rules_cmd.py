"""`xdpguard add|del|list|allow|stats`: edit and read the live maps of the loaded program."""
from __future__ import annotations

import json
import time
from ipaddress import ip_network

from services.common.errors import ConfigError
from services.dataplane.datapath import Datapath, RuleStats
from services.records.packet import PROTO_NAMES
from services.records.rules import Action, Scope
from services.manager.load_cmd import pin_dir
from services.manager.ruleargs import add_rule_flags, parse_cidr, rule_from_args

EXAMPLES = """examples:
  xdpguard add --src 10.0.0.1 --dst 10.0.0.2 --sport 1234 --dport 80 --proto tcp --action drop
  xdpguard add --src-prefix 203.0.113.0/24 --ttl 600
  xdpguard add --limit 1000 --dst 10.0.0.2 --dport 80 --proto tcp --tcp-flags syn
  xdpguard del --src-prefix 203.0.113.0/24
"""


def register(sub) -> None:
    a = sub.add_parser("add", help="add (or replace) a rule", epilog=EXAMPLES,
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_rule_flags(a)
    a.add_argument("--force", action="store_true",
                   help=f"drop a source prefix wider than /{WIDE_V4} (IPv4) or /{WIDE_V6} (IPv6)")
    a.set_defaults(func=cmd_add)
    d = sub.add_parser("del", help="delete a rule (same flags as add)")
    add_rule_flags(d, with_action=False)
    d.set_defaults(func=cmd_del)

    ls = sub.add_parser("list", help="rules with hit and byte counters")
    ls.add_argument("--json", action="store_true", help="a JSON array, one object per rule")
    ls.set_defaults(func=cmd_list)

    al = sub.add_parser("allow", help="allowlist prefixes (never dropped)")
    asub = al.add_subparsers(dest="allow_verb", metavar="ACTION", parser_class=type(al))
    asub.required = True
    for verb, func, help_ in (("add", cmd_allow_add, "allow a source prefix"),
                              ("del", cmd_allow_del, "remove an allowlist prefix")):
        p = asub.add_parser(verb, help=help_)
        p.add_argument("cidr", metavar="CIDR")
        p.set_defaults(func=func)
    asub.add_parser("list", help="list allowlist prefixes").set_defaults(func=cmd_allow_list)

    st = sub.add_parser("stats", help="global per-CPU counters summed")
    st.add_argument("--json", action="store_true", help="one JSON object")
    st.set_defaults(func=cmd_stats)


def _describe(rule) -> str:
    if rule.scope is Scope.SRC_PREFIX:
        return f"source prefix {rule.src}"
    if rule.scope is Scope.DST_LIMIT:
        return (f"limit {rule.rate_pps} pps to {rule.dst} proto {rule.proto} port {rule.dport} "
                f"flags {rule.tcp_flags:#x}")
    return f"{rule.src}:{rule.sport} -> {rule.dst}:{rule.dport} proto {rule.proto}"


# A drop for a prefix wider than these covers whole regions of the Internet (0.0.0.0/0: every
# IPv4 source, the operator's own session included); `add` wants --force for one.
WIDE_V4, WIDE_V6 = 8, 16


def cmd_add(args) -> int:
    rule = rule_from_args(args)
    if rule.scope is Scope.SRC_PREFIX and rule.action is Action.DROP and not args.force:
        net = ip_network(rule.src)
        if net.prefixlen < (WIDE_V4 if net.version == 4 else WIDE_V6):
            raise ConfigError(f"--src-prefix {rule.src} drops {net.num_addresses:,} source "
                              "addresses (the allowlist still wins); add --force if you mean it")
    with Datapath.open(pin_dir()) as dp:
        dp.add_rule(rule)
    print(f"added {rule.action.value} {_describe(rule)}")
    return 0


def cmd_del(args) -> int:
    rule = rule_from_args(args)
    with Datapath.open(pin_dir()) as dp:
        found = dp.delete_rule(rule)
    print(f"deleted {_describe(rule)}" if found else f"no such rule: {_describe(rule)}")
    return 0 if found else 1


def _row(rs: RuleStats, now_ns: int) -> dict:
    r = rs.rule
    action = r.action.value if r.scope is not Scope.DST_LIMIT else f"limit:{r.rate_pps}pps"
    return {"scope": r.scope.value, "src": r.src or "*", "dst": r.dst or "*", "sport": r.sport,
            "dport": r.dport, "proto": r.proto, "action": action, "hits": rs.hits,
            "bytes": rs.bytes, "dropped": rs.dropped, "origin": r.origin.value,
            "expires": r.expires_ns or None, "tcp_flags": r.tcp_flags, "rate_pps": r.rate_pps,
            "expired": r.expired(now_ns)}


def _expires_text(row: dict, now_ns: int) -> str:
    if row["expires"] is None:
        return "never"
    left = (row["expires"] - now_ns) / 1e9
    return "expired" if left <= 0 else f"in {left:.0f}s"


def cmd_list(args) -> int:
    with Datapath.open(pin_dir()) as dp:
        rules = dp.rules()
    now = time.time_ns()
    rows = [_row(rs, now) for rs in rules]
    if args.json:
        print(json.dumps(rows))
        return 0
    cols = ("SRC_IP", "DST_IP", "SPORT", "DPORT", "PROTO", "ACTION", "HITS", "BYTES", "ORIGIN", "EXPIRES")
    table = [[r["src"], r["dst"], str(r["sport"]), str(r["dport"]),
              PROTO_NAMES.get(r["proto"], str(r["proto"])) if r["proto"] else "*",
              r["action"] + (f"(flags {r['tcp_flags']:#x})" if r["tcp_flags"] else ""),
              str(r["hits"]), str(r["bytes"]), r["origin"], _expires_text(r, now)] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(cols)]
    for line in [list(cols)] + table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    return 0


def cmd_allow_add(args) -> int:
    cidr = parse_cidr(args.cidr, "CIDR")
    with Datapath.open(pin_dir()) as dp:
        dp.allow_add(cidr)
    print(f"allowed {cidr}")
    return 0


def cmd_allow_del(args) -> int:
    cidr = parse_cidr(args.cidr, "CIDR")
    with Datapath.open(pin_dir()) as dp:
        found = dp.allow_del(cidr)
    print(f"removed {cidr}" if found else f"{cidr} is not on the allowlist")
    return 0 if found else 1


def cmd_allow_list(args) -> int:
    with Datapath.open(pin_dir()) as dp:
        for cidr in dp.allowlist():
            print(cidr)
    return 0


def cmd_stats(args) -> int:
    with Datapath.open(pin_dir()) as dp:
        stats = dp.stats()
        stats["sample_rate"] = dp.sample_rate()
    if args.json:
        print(json.dumps(stats))
    else:
        for name, value in stats.items():
            print(f"{name:<12} {value}")
    return 0
