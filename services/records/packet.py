"""The pure, in-memory packet record every part of xdpguard agrees on.

Capture turns kernel ring-buffer events into it, the codec carries it through Kafka, and the
feature module, training, evaluation and the scorer consume it. Addresses are text (IPv4 or
IPv6) so the record is independent of the kernel's layout.
"""
from __future__ import annotations

from dataclasses import dataclass

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

PROTO_NAMES = {PROTO_ICMP: "icmp", PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMPV6: "icmpv6"}

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# Packet.icmp_type when no ICMP type was read: not ICMP/ICMPv6, a non-first fragment, a record
# or capture written before the field existed (the XDP program's XG_ICMP_NONE, bpf/xdpguard.h).
# 255 is reserved in both ICMP (RFC 4884's registry) and ICMPv6 (RFC 4443): a packet that does
# carry it is read as "other", as an unknown type is
ICMP_TYPE_UNKNOWN = 255
# The ICMP "kind" bits a flow's packets OR together (`icmp_kind`): in the flow state's flag
# field of an ICMP/ICMPv6 flow (features.flow_update, the scorer's fold), where a TCP flow
# keeps its TCP flags; no model feature reads that field for a flow that is not TCP
ICMP_ECHO, ICMP_REPLY, ICMP_LINK, ICMP_OTHER = 0x01, 0x02, 0x04, 0x08
# ICMPv6 types of neighbour discovery, MLD and router messages (RFC 4861 133-137, RFC 2710
# 130-132, RFC 3810 143): hop limit 255 or 1, link-local scope, never routed
ICMP6_LINK_TYPES = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})


def icmp_kind(proto: int, icmp_type: int) -> int:
    """The kind bit of one packet (ICMP_ECHO, ICMP_REPLY, ICMP_LINK or ICMP_OTHER) from its IP
    protocol and ICMP type (ICMP 8/0, ICMPv6 128/129 echo request/reply; ICMPv6 ND/MLD/router
    messages ICMP6_LINK_TYPES; any other type, or ICMP_TYPE_UNKNOWN, other); 0 for a protocol
    that is neither ICMP (1) nor ICMPv6 (58)."""
    if proto == PROTO_ICMP:
        return ICMP_ECHO if icmp_type == 8 else ICMP_REPLY if icmp_type == 0 else ICMP_OTHER
    if proto == PROTO_ICMPV6:
        if icmp_type == 128:
            return ICMP_ECHO
        if icmp_type == 129:
            return ICMP_REPLY
        return ICMP_LINK if icmp_type in ICMP6_LINK_TYPES else ICMP_OTHER
    return 0


@dataclass(frozen=True, slots=True)
class Packet:
    ts_ns: int            # capture time, Unix epoch nanoseconds
    src: str              # source address, textual IPv4 or IPv6
    dst: str              # destination address
    sport: int            # 0 when the protocol has no ports (or a non-first fragment)
    dport: int
    proto: int            # IP protocol number
    tcp_flags: int        # TCP flag byte (0 for other protocols)
    length: int           # whole frame length incl. the Ethernet header
    ifindex: int = 0
    sample_rate: int = 1  # 1-in-N sampling in force when captured: this record stands for N packets
    node: str = ""        # capturing node id
    seq: int = 0          # per-node sequence number (loss is measurable end to end)
    icmp_type: int = ICMP_TYPE_UNKNOWN  # ICMP/ICMPv6 type (0..255) when proto is 1 or 58 and
    # the header was read; ICMP_TYPE_UNKNOWN otherwise

    def flow_key(self) -> tuple[str, str, int, int, int]:
        """Directional 5-tuple, as the original tool aggregated flows."""
        return (self.src, self.dst, self.sport, self.dport, self.proto)
