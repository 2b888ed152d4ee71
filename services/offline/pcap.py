"""Read pcap / pcapng captures into Packet records (I/O adapter; parsing is `parse_frame`).

Link types: Ethernet (1, with 802.1Q/802.1ad tags), Linux SLL (113), Linux SLL2 (276) and raw IP
(12, 14, 101, 228, 229). IPv4 (any header length; non-first fragments get ports 0) and IPv6 (hop-
by-hop, routing, destination-options and fragment extension headers skipped). Frames that carry
no IP packet are skipped. `length` is the Ethernet-equivalent frame length, as the XDP program
would see it: the original wire length, with the SLL/SLL2/raw header replaced by 14 bytes.

scapy's RawPcapReader reads the records (both formats); the headers are decoded here with
`struct`, which is ~10x faster than building scapy layers (40k packets in about a second).
"""
from __future__ import annotations

import ipaddress
import os
import struct
from typing import Iterator

from services.records.packet import (ICMP_TYPE_UNKNOWN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
                                     PROTO_UDP, Packet)

ETH_LEN = 14
LINK_ETHERNET, LINK_SLL, LINK_SLL2 = 1, 113, 276
LINK_RAW = (12, 14, 101, 228, 229)
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options (fragment = 44 handled apart)


def _link_payload(linktype: int, frame: bytes) -> tuple[int, int, int] | None:
    """(ethertype, offset of the network header, link header length) or None."""
    if linktype == LINK_ETHERNET:
        if len(frame) < ETH_LEN:
            return None
        etype, off = struct.unpack_from("!H", frame, 12)[0], ETH_LEN
        while etype in _VLAN_TYPES and len(frame) >= off + 4:
            etype, off = struct.unpack_from("!H", frame, off + 2)[0], off + 4
        return etype, off, ETH_LEN
    if linktype == LINK_SLL:
        return (struct.unpack_from("!H", frame, 14)[0], 16, 16) if len(frame) >= 16 else None
    if linktype == LINK_SLL2:
        return (struct.unpack_from("!H", frame, 0)[0], 20, 20) if len(frame) >= 20 else None
    if linktype in LINK_RAW and frame:
        version = frame[0] >> 4
        return ({4: 0x0800, 6: 0x86DD}.get(version, 0), 0, 0)
    return None


def parse_frame(linktype: int, frame: bytes, wirelen: int, ts_ns: int) -> Packet | None:
    """Decode one captured frame; None when it carries no IPv4/IPv6 packet."""
    link = _link_payload(linktype, frame)
    if link is None:
        return None
    etype, off, link_len = link
    first_fragment = True
    if etype == 0x0800 and len(frame) >= off + 20:
        ihl = (frame[off] & 0x0F) * 4
        frag = struct.unpack_from("!H", frame, off + 6)[0]
        first_fragment = (frag & 0x1FFF) == 0
        proto = frame[off + 9]
        src = str(ipaddress.IPv4Address(frame[off + 12:off + 16]))
        dst = str(ipaddress.IPv4Address(frame[off + 16:off + 20]))
        l4 = off + max(ihl, 20)
    elif etype == 0x86DD and len(frame) >= off + 40:
        proto = frame[off + 6]
        src = str(ipaddress.IPv6Address(frame[off + 8:off + 24]))
        dst = str(ipaddress.IPv6Address(frame[off + 24:off + 40]))
        l4 = off + 40
        for _ in range(8):
            if proto in _V6_EXT and len(frame) >= l4 + 2:
                proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
            elif proto == 44 and len(frame) >= l4 + 8:
                first_fragment = (struct.unpack_from("!H", frame, l4 + 2)[0] & 0xFFF8) == 0
                proto, l4 = frame[l4], l4 + 8
            else:
                break
    else:
        return None
    sport = dport = flags = 0
    icmp_type = ICMP_TYPE_UNKNOWN
    if first_fragment and proto in (PROTO_TCP, PROTO_UDP) and len(frame) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        if proto == PROTO_TCP and len(frame) >= l4 + 14:
            flags = frame[l4 + 13]  # the whole byte (ECE, CWR too), as the XDP program reads it
    elif first_fragment and proto in (PROTO_ICMP, PROTO_ICMPV6) and len(frame) >= l4 + 4:
        icmp_type = frame[l4]  # the XDP program reads it when the 4-byte header is there
    return Packet(ts_ns=ts_ns, src=src, dst=dst, sport=sport, dport=dport, proto=proto,
                  tcp_flags=flags, length=max(wirelen - link_len + ETH_LEN, ETH_LEN),
                  icmp_type=icmp_type)


def read_pcap(path: str | os.PathLike, *, progress=None) -> list[Packet]:
    """All IP packets of a pcap/pcapng file, in file order. `progress(n)` is called every 4096."""
    from scapy.utils import RawPcapNgReader, RawPcapReader

    out: list[Packet] = []
    reader = RawPcapReader(str(path))
    try:
        ng = isinstance(reader, RawPcapNgReader)
        for i, (frame, meta) in enumerate(reader):
            if ng:
                ts = (meta.tshigh << 32) | meta.tslow
                ts_ns = ts * 1_000_000_000 // meta.tsresol
                linktype, wirelen = meta.linktype, meta.wirelen
            else:
                ts_ns = meta.sec * 1_000_000_000 + meta.usec * (1 if reader.nano else 1000)
                linktype, wirelen = reader.linktype, meta.wirelen
            pkt = parse_frame(linktype, frame, wirelen, ts_ns)
            if pkt is not None:
                out.append(pkt)
            if progress is not None and i % 4096 == 4095:
                progress(4096)
    finally:
        reader.close()
    return out
