"""Packet records written as a pcap file (Ethernet, IPv4, TCP/UDP/ICMP headers, padded to each
record's frame length), for tests that give the CLI captures of synthetic traffic."""
from __future__ import annotations

from pathlib import Path

from services.records.packet import Packet


def write_pcap(packets: list[Packet], path: Path) -> Path:
    """`path`, holding one frame per packet at its timestamp (IPv4 addresses only)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    frames = []
    for p in packets:
        ip = IP(src=p.src, dst=p.dst, proto=p.proto)
        l4 = (TCP(sport=p.sport, dport=p.dport, flags=p.tcp_flags) if p.proto == 6 else
              UDP(sport=p.sport, dport=p.dport) if p.proto == 17 else ICMP())
        f = Ether() / ip / l4
        f = f / Raw(b"\0" * max(0, p.length - len(f)))
        f.time = p.ts_ns / 1e9
        frames.append(f)
    wrpcap(str(path), frames)
    return path
