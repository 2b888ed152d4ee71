"""`xdpguard flows`: totals, unique 5-tuples and top flows of a log in the original
tool's format (check_unique parity).

`read_checked` is how `flows` and `analyze` read a log: bad lines are reported on stderr by
number and skipped; a log with no valid line at all is an error (exit 1).
"""
from __future__ import annotations

import sys
from collections import Counter

from services.common.errors import ConfigError
from services.records.packet import PROTO_NAMES


def register(sub) -> None:
    p = sub.add_parser("flows", help="count packets and unique 5-tuple flows of a JSON-lines log "
                       "in the original tool's format (docs/origins.md)")
    p.add_argument("--file", "-f", default="firewall_log.json", help="JSON-lines log in the original tool's format")
    p.add_argument("--top", type=int, default=10, help="how many top flows (default 10)")
    p.set_defaults(func=cmd_flows)


def format_flows(packets, top: int = 10) -> str:
    counts = Counter(p.flow_key() for p in packets)
    lines = [f"Total packets in log: {len(packets)}", f"Unique flows (5-tuple): {len(counts)}", "",
             f"Top {top} flows by packet count:"]
    for i, ((src, dst, sport, dport, proto), n) in enumerate(counts.most_common(top), start=1):
        name = PROTO_NAMES.get(proto, str(proto)).upper()
        lines.append(f"{i}. {src}:{sport} → {dst}:{dport} ({name}): {n} packets")
    return "\n".join(lines)


def read_checked(path: str, verb: str, shown: int = 10):
    """The log at `path` (services.offline.seedlog.SeedLog). Each bad line is reported on stderr
    as `xdpguard VERB: PATH line N: reason` (the first `shown`, then how many more); ConfigError
    when the file cannot be read or holds no valid line."""
    from services.offline.seedlog import read_log

    try:
        log = read_log(path)
    except FileNotFoundError:
        raise ConfigError(f"log file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    for lineno, reason in log.skipped[:shown]:
        print(f"xdpguard {verb}: {path} line {lineno}: {reason} (skipped)", file=sys.stderr)
    if len(log.skipped) > shown:
        print(f"xdpguard {verb}: {path}: {len(log.skipped) - shown} more bad lines skipped",
              file=sys.stderr)
    if not log.packets:
        what = f"{len(log.skipped)} bad lines" if log.skipped else "empty"
        raise ConfigError(f"{path} holds no valid log entry ({what})")
    return log


def cmd_flows(args) -> int:
    if args.top < 1:
        raise ConfigError("--top must be at least 1")
    log = read_checked(args.file, "flows")
    print(format_flows(log.packets, args.top))
    if log.skipped:
        print(f"\n({len(log.skipped)} bad lines skipped)")
    return 0
