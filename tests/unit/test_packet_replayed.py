"""Packet.replayed: what the offline replays (evaluation's shift and renumbering, folds'
sustained repetition) keep of a packet. Each of those rebuilt the Packet field by field before,
so a header field added to Packet was dropped silently until each copy learnt it."""
from __future__ import annotations

import dataclasses

from services.offline.evaluation import _renumber, _shifted
from services.offline.folds import sustained
from services.records.packet import Packet

CAPTURE_OWN = {"ifindex", "sample_rate", "node", "seq"}  # the capturing side's, not the packet's


def _odd_packet(ts_ns: int = 1_000_000_000) -> Packet:
    """A packet with every field away from its default, so a dropped field shows."""
    values = {"ts_ns": ts_ns, "src": "192.0.2.7", "dst": "198.51.100.9", "sport": 40000,
              "dport": 443, "proto": 58, "tcp_flags": 0x12, "length": 1234, "ifindex": 3,
              "sample_rate": 17, "node": "n1", "seq": 99, "icmp_type": 135}
    missing = {f.name for f in dataclasses.fields(Packet)} - set(values)
    assert not missing, f"give the new Packet field(s) {missing} a non-default value here"
    return Packet(**values)


def _header(p: Packet, *leave: str) -> dict:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(Packet)
            if f.name not in CAPTURE_OWN and f.name not in leave}


def test_replayed_keeps_every_header_field_and_resets_the_capture_fields():
    p = _odd_packet()
    q = p.replayed(ts_ns=5, src="10.0.0.1")
    assert (q.ts_ns, q.src, q.dst) == (5, "10.0.0.1", p.dst)
    assert _header(q, "ts_ns", "src") == _header(p, "ts_ns", "src")
    defaults = Packet(0, "", "", 0, 0, 0, 0, 0)
    assert {n: getattr(q, n) for n in CAPTURE_OWN} == {n: getattr(defaults, n) for n in CAPTURE_OWN}
    assert p.replayed() == dataclasses.replace(p, ifindex=0, sample_rate=1, node="", seq=0)


def test_the_offline_copies_keep_the_header_fields():
    packets = [_odd_packet(1_000_000_000 + i * 10_000_000) for i in range(5)]
    shifted = [q for q, _ in _shifted(packets, 7_000_000_000, 0)]
    assert shifted[0].ts_ns == 7_000_000_000
    renumbered = _renumber(packets, 0)
    assert renumbered[0].src != packets[0].src
    repeated = list(sustained(packets, 0.2))
    assert len(repeated) > len(packets)  # repeated past the capture's own span
    for copies, moved in ((shifted, ("ts_ns",)), (renumbered, ("ts_ns", "src", "dst")),
                          (repeated, ("ts_ns",))):
        for q in copies:
            assert _header(q, *moved) == _header(packets[0], *moved)
