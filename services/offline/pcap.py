"""Read pcap / pcapng captures into Packet records (I/O adapter; parsing is `parse_frame`).

Link types: Ethernet (1, with up to two 802.1Q/802.1ad tags), Linux SLL (113), Linux SLL2 (276)
and raw IP (12, 14, 101, 228, 229). The network and transport layers are read as the XDP program
reads them (`parse_frame`), so a replay sees the packets the data plane would sample: IPv4 of any
valid header length (later fragments get ports 0), IPv6 behind up to eight hop-by-hop, routing,
destination-options, fragment and AH headers. Frames the program would not sample are skipped.
`length` is the Ethernet-equivalent frame length, as the XDP program would see it: the original
wire length, with the SLL/SLL2/raw header replaced by 14 bytes.

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
# the XDP program's XG_VLAN_MAX and XG_IPV6_EXT_MAX (services.dataplane.structs mirrors them;
# offline code does not import the data plane: tests/unit/test_pcap_reader.py holds them equal)
VLAN_MAX, IPV6_EXT_MAX = 2, 8
_VLAN_TYPES = (0x8100, 0x88A8)  # 802.1Q, 802.1ad: the TPIDs the XDP program follows
_FRAGMENT, _AH = 44, 51
_V6_EXT = (0, 43, 60, _FRAGMENT, _AH)  # hop-by-hop, routing, destination options, fragment, AH
_L4_LEN = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMP: 4, PROTO_ICMPV6: 4}  # the header it reads


def _link_payload(linktype: int, frame: bytes) -> tuple[int, int, int] | None:
    """(ethertype, offset of the network header, link header length) or None."""
    if linktype == LINK_ETHERNET:
        if len(frame) < ETH_LEN:
            return None
        etype, off = struct.unpack_from("!H", frame, 12)[0], ETH_LEN
        for _ in range(VLAN_MAX):  # a third tag: not IP for the program
            if etype not in _VLAN_TYPES or len(frame) < off + 4:
                break
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
    """Decode one captured frame as the XDP program would (docs/dataplane.md, "Parse"): a
    Packet where it would sample an event, None where it would not: no IPv4/IPv6 packet (a
    third VLAN tag, a malformed IPv4 header: version not 4, IHL < 5), a fragment hiding or
    overlapping its transport header (`drop_frag`), an IPv6 chain longer than eight extension
    headers, and, in a frame captured whole, a header cut short (`parse_fail`, `partial`).
    A frame the capture itself cut (snaplen: shorter than `wirelen`) was whole on the wire: it
    keeps what was read, ports 0 and protocol 0 (an IPv6 chain cut) where the cut took them.
    tests/unit/test_pcap_reader.py checks Ethernet frames against the data plane's reference
    parser (tests/support/xdpfuzz.py), which the kernel fuzz tests hold the program to."""
    link = _link_payload(linktype, frame)
    if link is None:
        return None
    etype, off, link_len = link
    whole, end = len(frame) >= wirelen, len(frame)
    later = False
    if etype == 0x0800 and end >= off + 20:
        ihl = (frame[off] & 0x0F) * 4
        if frame[off] >> 4 != 4 or ihl < 20 or (whole and off + ihl > end):
            return None
        frag = struct.unpack_from("!H", frame, off + 6)[0]
        proto, l4, later = frame[off + 9], off + ihl, (frag & 0x1FFF) != 0
        if later and (frag & 0x1FFF) * 8 < _L4_LEN.get(proto, 0):
            return None  # a later fragment starting inside the transport header
        src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
    elif etype == 0x86DD and end >= off + 40:
        src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
        proto, l4 = frame[off + 6], off + 40
        for _ in range(IPV6_EXT_MAX):
            if proto not in _V6_EXT:
                break
            if l4 + 8 > end:  # the chain cut: the XDP program saw it whole unless `whole`
                if whole:
                    return None
                proto, l4 = 0, end
                break
            if proto == _FRAGMENT:
                offset = struct.unpack_from("!H", frame, l4 + 2)[0]
                proto, l4 = frame[l4], l4 + 8
                if offset & 0xFFF8:
                    later = True
                    if (offset & 0xFFF8) < _L4_LEN.get(proto, 0):
                        return None
                    break
            elif proto == _AH:
                proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 2) * 4  # RFC 4302: 4-byte units
            else:
                proto, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
        else:
            if proto in _V6_EXT:
                return None  # longer than the program follows: partial, never sampled
    else:
        return None
    sport = dport = flags = 0
    icmp_type = ICMP_TYPE_UNKNOWN
    if not later:
        need = _L4_LEN.get(proto, 0)  # other protocols: nothing read, wherever the chain ended
        if whole and need and l4 + need > end:
            return None  # transport header cut: partial (a first fragment: drop_frag)
        if proto in (PROTO_TCP, PROTO_UDP) and end >= l4 + 4:
            sport, dport = struct.unpack_from("!HH", frame, l4)
            if proto == PROTO_TCP and end >= l4 + 14:
                flags = frame[l4 + 13]  # the whole byte (ECE, CWR too), as the XDP program reads it
        elif proto in (PROTO_ICMP, PROTO_ICMPV6) and end >= l4 + 4:
            icmp_type = frame[l4]
    return Packet(ts_ns=ts_ns, src=_text(src), dst=_text(dst), sport=sport, dport=dport,
                  proto=proto, tcp_flags=flags,
                  length=max(wirelen - link_len + ETH_LEN, ETH_LEN), icmp_type=icmp_type)


def _text(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw))


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
