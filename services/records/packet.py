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
# carry it is read as unknown. The detection does not read the type yet (docs/detection.md,
# "The ICMP type in the event")
ICMP_TYPE_UNKNOWN = 255


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

    def replayed(self, ts_ns: int | None = None, src: str | None = None,
                 dst: str | None = None) -> Packet:
        """This packet as an offline replay re-sends it (services.offline: shifted in time,
        renumbered, repeated): every header field kept, `ts_ns`/`src`/`dst` replaced where
        given, the capture's own fields (ifindex, sample_rate, node, seq) back at their
        defaults, since the replay is a capture of its own. A header field added to Packet is
        carried here, in one place."""
        return Packet(self.ts_ns if ts_ns is None else ts_ns, self.src if src is None else src,
                      self.dst if dst is None else dst, self.sport, self.dport, self.proto,
                      self.tcp_flags, self.length, icmp_type=self.icmp_type)
