"""A decoded packet record as columns (services.wire.codec.decode_packet_columns makes it;
the scorer's stage 1 folds it: services/scorer/fold.py)."""
from __future__ import annotations

import array
from typing import Any

from services.records.packet import Packet

# the integer columns (codec.PACKET_COLUMNS's attributes, in its order)
_INT_ATTRS = ("ts_ns", "seq", "sport", "dport", "proto", "tcp_flags", "length", "ifindex",
              "sample_rate")


def _int_column(attr: str) -> property:
    def get(self: PacketColumns) -> list[int]:
        col = self._ints.get(attr)
        if col is None:  # made once, on first use, from the wire array
            col = self._ints[attr] = self.arrays[attr].tolist()
        return col
    return property(get, doc=f"the {attr} of each event (a list of ints)")


class PacketColumns:
    """A decoded packet record as columns (the scorer's fast path: no Packet per event):
    `n` events; per event `ts_ns`, `seq`, `src`, `dst` (address texts), `sport`, `dport`,
    `proto`, `tcp_flags`, `length`, `ifindex`, `sample_rate`, `node`, each a list.
    `arrays`: the integer columns as decoded (Packet attribute -> array.array of the wire
    type, native byte order; None for a one-event record), for numpy without a copy per
    element (np.frombuffer): the scorer's vectorised fold (services/scorer/fold.py). An
    integer column's list is made from its array on first use only: the fold reads the
    arrays, so a worker never makes most of them (0.03 s of 400,000 events'
    0.22 s of decode, docs/benchmarks.md). Read-only; equal when every column is."""
    __slots__ = ("n", "src", "dst", "node", "arrays", "_ints")

    def __init__(self, n: int, ts_ns: list[int] | None = None, seq: list[int] | None = None,
                 src: list[str] = (), dst: list[str] = (), sport: list[int] | None = None,
                 dport: list[int] | None = None, proto: list[int] | None = None,
                 tcp_flags: list[int] | None = None, length: list[int] | None = None,
                 ifindex: list[int] | None = None, sample_rate: list[int] | None = None,
                 node: list[str] = (), arrays: dict[str, array.array] | None = None) -> None:
        """Integer columns given as lists, or left None and read from `arrays` (all of them
        there) when first used."""
        ints = {"ts_ns": ts_ns, "seq": seq, "sport": sport, "dport": dport, "proto": proto,
                "tcp_flags": tcp_flags, "length": length, "ifindex": ifindex,
                "sample_rate": sample_rate}
        ints = {k: v for k, v in ints.items() if v is not None}
        if len(ints) < len(_INT_ATTRS) and (arrays is None
                                            or any(a not in arrays for a in _INT_ATTRS)):
            raise TypeError("PacketColumns: an integer column is neither a list nor an array")
        set_ = object.__setattr__
        set_(self, "n", n)
        set_(self, "src", src)
        set_(self, "dst", dst)
        set_(self, "node", node)
        set_(self, "arrays", arrays)
        set_(self, "_ints", ints)

    ts_ns, seq = _int_column("ts_ns"), _int_column("seq")
    sport, dport, proto = _int_column("sport"), _int_column("dport"), _int_column("proto")
    tcp_flags, length = _int_column("tcp_flags"), _int_column("length")
    ifindex, sample_rate = _int_column("ifindex"), _int_column("sample_rate")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PacketColumns is read-only (cannot set {name!r})")

    __delattr__ = __setattr__
    __hash__ = None  # type: ignore[assignment]  # lists inside, as before

    def _columns(self) -> tuple:
        return (self.n, self.ts_ns, self.seq, self.src, self.dst, self.sport, self.dport,
                self.proto, self.tcp_flags, self.length, self.ifindex, self.sample_rate,
                self.node)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._columns() == other._columns()

    def __repr__(self) -> str:
        names = ("n", "ts_ns", "seq", "src", "dst", "sport", "dport", "proto", "tcp_flags",
                 "length", "ifindex", "sample_rate", "node")
        return "PacketColumns(" + ", ".join(f"{k}={v!r}" for k, v in
                                             zip(names, self._columns())) + ")"

    def packets(self) -> list[Packet]:
        return [Packet(*row) for row in zip(
            self.ts_ns, self.src, self.dst, self.sport, self.dport, self.proto, self.tcp_flags,
            self.length, self.ifindex, self.sample_rate, self.node, self.seq)]
