"""`xdpguard flows`: totals, unique 5-tuples and top flows of a log in the original tool's
format (check_unique parity)."""
from __future__ import annotations

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


def cmd_flows(args) -> int:
    from services.offline.seedlog import read_log

    try:
        log = read_log(args.file)
    except FileNotFoundError:
        raise ConfigError(f"log file not found: {args.file}") from None
    print(format_flows(log.packets, args.top))
    if log.skipped:
        print(f"\n({len(log.skipped)} undecodable lines skipped)")
    return 0
