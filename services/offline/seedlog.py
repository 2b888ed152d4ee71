"""The original tool's JSON-lines packet log (`firewall_log.json`, format in docs/origins.md) and
commands file (I/O adapter).

Log lines: `{"src_ip", "dst_ip", "src_port", "dst_port", "proto", "tcp_flags", "len",
"timestamp"}`; `len` is the whole frame incl. Ethernet, `timestamp` nanoseconds since boot (so
not epoch: Packet.ts_ns then holds boot-time ns, which only matters for differences).
Missing fields get the original tool's defaults (ports/proto/flags 0, len 64); undecodable lines
are skipped and counted, as the original tool did.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable

from services.records.packet import Packet


@dataclass
class SeedLog:
    packets: list[Packet] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def packet_from_entry(obj: dict) -> Packet:
    """A Packet from one log object. ValueError when a flow's identity is missing or invalid
    (src_ip, dst_ip: addresses; ports 0-65535, proto 0-255): such a line would otherwise make
    a flow of 0.0.0.0:0. The other fields keep the original tool's defaults."""
    import ipaddress
    for name in ("src_ip", "dst_ip"):
        if name not in obj:
            raise ValueError(f"no {name}")
        ipaddress.ip_address(str(obj[name]))  # ValueError naming the text
    for name, top in (("src_port", 65535), ("dst_port", 65535), ("proto", 255)):
        if not 0 <= int(obj.get(name, 0) or 0) <= top:
            raise ValueError(f"{name} {obj[name]} out of range 0-{top}")
    return Packet(ts_ns=int(obj.get("timestamp", 0) or 0), src=str(obj.get("src_ip", "0.0.0.0")),
                  dst=str(obj.get("dst_ip", "0.0.0.0")), sport=int(obj.get("src_port", 0) or 0),
                  dport=int(obj.get("dst_port", 0) or 0), proto=int(obj.get("proto", 0) or 0),
                  tcp_flags=int(obj.get("tcp_flags", 0) or 0), length=int(obj.get("len", 64)))


def entry_from_packet(pkt: Packet, timestamp: int | None = None) -> dict:
    """One log line's object, keys in the log's order; `timestamp` (ns since boot, as `xdpguard
    monitor` writes the kernel's clock) in place of pkt.ts_ns when given."""
    return {"src_ip": pkt.src, "dst_ip": pkt.dst, "src_port": pkt.sport, "dst_port": pkt.dport,
            "proto": pkt.proto, "tcp_flags": pkt.tcp_flags, "len": pkt.length,
            "timestamp": pkt.ts_ns if timestamp is None else timestamp}


def parse_lines(lines: Iterable[str]) -> SeedLog:
    log = SeedLog()
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            log.packets.append(packet_from_entry(obj))
        except (ValueError, TypeError, OverflowError) as exc:  # Overflow: 1e400, Infinity
            log.skipped.append((lineno, str(exc)))
    return log


def read_log(path: str | os.PathLike) -> SeedLog:
    # errors="replace": a binary line becomes a line that does not parse (skipped, counted)
    with open(path, encoding="utf-8", errors="replace") as fh:
        return parse_lines(fh)


def write_log(path: str | os.PathLike, packets: Iterable[Packet]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for pkt in packets:
            fh.write(json.dumps(entry_from_packet(pkt)) + "\n")
            n += 1
    return n
