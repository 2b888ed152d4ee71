"""The scorer's window tables and progress marks: every key format, defined here only, and the
table I/O both stages go through.

`src-records` (stage 1; keys of packets partition p, all starting b"<p>/"):
    b"<p>/r/<offset, 20 digits>"  the packets record as consumed, until every window it feeds
                                  has closed (zero-padded: sorted keys replay in offset order)
    b"<p>/hw"                     msgpack [newest closed window start, newest offset folded in]
`dst-chunks` (stage 2; keys of flows partition q, all starting b"<q>/"):
    b"<q>/c/<FlowChunk.key()>"    an encoded FlowChunk (window/source p/dest q/index: a re-sent
                                  chunk replaces the first)
    b"<q>/hw"                     msgpack [newest closed window start, [progress per source p]]
`<app id>-scorer-flows` records: chunks keyed by FlowChunk.key(), progress marks keyed
    b"mark/<p>" with value msgpack [p, upto] (upto: newest window start p will not add to),
    and tally marks keyed b"tally/<q>", sent by stage 2 partition q to every other one:
    msgpack [q, through, [[window start, [[source, probes, unanswered,
    [[dst, proto, dport, unanswered?], ...]], ...]], ...]] (through: every window up to it is
    closed at q; the windows listed are those q closed since its last tally mark, with their
    probe tallies: evidence.probe_tally, dst_windows.DstPartition.settle).

Both tables are faust Tables with changelogs; a write goes to the store and, awaited, to the
changelog partition of the key (faust_internals.write_through). Restore reads the store faust
has rebuilt from the changelog.
"""
from __future__ import annotations

import reprlib

from itertools import islice

import msgpack

from services.common.errors import DecodeError

from . import faust_internals
from .chunks import FlowChunk

MARK_PREFIX = b"mark/"


def mark_key(p: int) -> bytes:
    """Key of packets partition `p`'s progress marks on the flows topic."""
    return MARK_PREFIX + b"%d" % p


def is_mark(key: bytes | None) -> bool:
    return bool(key) and key.startswith(MARK_PREFIX)


def encode_mark(p: int, upto: int) -> bytes:
    return msgpack.packb([p, upto])


def decode_mark(value: bytes) -> tuple[int, int]:
    """(source partition, upto) of a progress mark: two integers, the partition >= 0, upto a
    window start (>= -1, < 2**63). Raises DecodeError (text: the cause)."""
    src, upto = _ints(value, 2, "progress mark")
    if src < 0 or upto < -1:
        raise DecodeError(f"progress mark [{src}, {upto}] out of range")
    return src, upto


def _unpack(value, what: str):
    try:
        return msgpack.unpackb(value)
    except Exception as exc:  # msgpack raises a zoo of types for bad input
        raise DecodeError(f"{what}: not msgpack ({type(exc).__name__}: {exc})") from None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 40, 40


def _brief(value) -> str:
    """A short repr of a decoded value for an error text: bounded in depth and length (a list
    nested ~1000 deep, which msgpack unpacks, made the plain repr raise RecursionError)."""
    return _REPR.repr(value)


def _ints(value, n: int, what: str) -> list[int]:
    """`value` as msgpack of a list of `n` integers in -2**63..2**63-1, or DecodeError."""
    got = _unpack(value, what) if isinstance(value, (bytes, bytearray)) else value
    if type(got) is not list or len(got) != n or \
            not all(type(x) is int and -2**63 <= x < 2**63 for x in got):
        raise DecodeError(f"{what}: expected {n} integers, got {_brief(got)}")
    return got


def decode_source_marker(value: bytes) -> tuple[int, int]:
    """`src-records` marker: (newest closed window start, newest offset folded in); DecodeError."""
    closed_upto, seen = _ints(value, 2, "src-records marker")
    return closed_upto, seen


def decode_dest_marker(value: bytes, sources: int) -> tuple[int, list[int]]:
    """`dst-chunks` marker: (newest closed window start, progress of each of `sources` source
    partitions); DecodeError."""
    got = _unpack(value, "dst-chunks marker")
    if type(got) is not list or len(got) != 2 or type(got[1]) is not list:
        raise DecodeError(f"dst-chunks marker: expected [closed, [progress...]], got {_brief(got)}")
    closed_upto = _ints([got[0]], 1, "dst-chunks marker")[0]
    return closed_upto, _ints(got[1], len(got[1]), "dst-chunks marker progress")[:sources]


TALLY_PREFIX = b"tally/"


def tally_key(q: int) -> bytes:
    """Key of stage 2 partition `q`'s tally marks on the flows topic."""
    return TALLY_PREFIX + b"%d" % q


def is_tally(key: bytes | None) -> bool:
    return bool(key) and key.startswith(TALLY_PREFIX)


# Targets per source and tally mark: a sweep's window can hold every address of a /16; and the
# bytes of a mark's entries: the producer refuses records over 1,000,000 bytes (faust's
# default). 16,384 IPv6 targets of one source take 770,000; counted by targets alone, 20,000
# IPv6 sources of 1 target each took 1,351,161 bytes in one mark.
TALLY_TARGETS = 16384
TALLY_BYTES = 900_000


def encode_tallies(q: int, through: int, tallies: dict[int, dict[str, list]],
                   max_targets: int = TALLY_TARGETS, max_bytes: int = TALLY_BYTES) -> list[bytes]:
    """The tally marks (module docstring) of stage 2 partition `q`: one, or more when the
    tallies' entries take more than `max_bytes` (each mark holds whole sources; a source's
    targets past `max_targets` are left out, its counts kept: no LAN monitor has that many
    in one window of one partition, and a sweep's share is the same without them). A mark
    followed by more parts of a window says `through` below that window: a peer settling
    between two marks must not count this partition as having told all of it."""
    marks, part, size = [], {}, 0
    for ws, tally in tallies.items():
        for s, (n, quiet, t) in tally.items():
            entry = [s, n, quiet, [[d, proto, dport, u] for (d, proto, dport), u
                                   in islice(t.items(), max_targets)]]
            b = len(msgpack.packb(entry))
            if part and size + b > max_bytes:
                marks.append(part)
                part, size = {}, 0
            part.setdefault(ws, []).append(entry)
            size += b
    if part or not marks:
        marks.append(part)
    out, later = [], through
    for m in reversed(marks):
        out.append(msgpack.packb([q, min(through, later), [[ws, e] for ws, e in m.items()]]))
        later = min([later, *(ws - 1 for ws in m)])
    return out[::-1]


def decode_tallies(value: bytes) -> tuple[int, int, dict[int, dict[str, list]]]:
    """(q, through, window start -> probe tally) of a tally mark; DecodeError (text: the cause)
    for anything else, counts out of range included."""
    got = _unpack(value, "tally mark")
    if type(got) is not list or len(got) != 3 or type(got[2]) is not list:
        raise DecodeError(f"tally mark: expected [q, through, [windows]], got {_brief(got)}")
    q, through = _ints(got[:2], 2, "tally mark")
    if q < 0 or through < -1:
        raise DecodeError(f"tally mark [{q}, {through}, ...] out of range")
    out: dict[int, dict[str, list]] = {}
    try:
        for ws, sources in got[2]:
            tally = out[_ints([ws], 1, "tally mark window")[0]] = {}
            for s, n, quiet, targets in sources:
                n, quiet = _ints([n, quiet], 2, "tally mark counts")
                if type(s) is not str or not 0 <= quiet <= n or n == 0:
                    raise DecodeError(f"tally mark: bad source entry {_brief([s, n, quiet])}")
                t = {}
                for d, proto, dport, u in targets:
                    proto, dport = _ints([proto, dport], 2, "tally mark target")
                    if type(d) is not str or type(u) is not bool or \
                            not (0 <= proto < 256 and 0 <= dport < 65536):
                        raise DecodeError(f"tally mark: bad target {_brief([d, proto, dport, u])}")
                    t[(d, proto, dport)] = u
                tally[s] = [n, quiet, t]
    except (TypeError, ValueError) as exc:  # an entry of the wrong shape or length
        raise DecodeError(f"tally mark: bad entry ({exc})") from None
    return q, through, out


class WindowTable:
    """One faust Table whose keys start with their partition (b"<partition>/")."""

    def __init__(self, table) -> None:
        self.table = table

    @property
    def topic(self) -> str:
        """The table's changelog topic (where a bad stored value came from, for dead letters)."""
        return faust_internals.changelog_topic(self.table).get_topic_name()

    def _marker(self, partition: int) -> bytes | None:
        return faust_internals.table_store(self.table).get(b"%d/hw" % partition)

    async def _put_marker(self, partition: int, marker: list) -> None:
        await faust_internals.write_through(self.table, partition, b"%d/hw" % partition,
                                            msgpack.packb(marker))

    def _items(self, partition: int, kind: bytes) -> list[tuple[bytes, bytes]]:
        """(key, value) of `partition`'s keys of one kind (b"r", b"c"), sorted by key."""
        data = faust_internals.table_store(self.table)
        prefix = b"%d/%s/" % (partition, kind)
        return [(k, data[k]) for k in sorted(k for k in list(data.keys()) if k.startswith(prefix))]

    def raw(self, key: bytes) -> bytes | None:
        """The value stored under `key` as stored (None: none)."""
        return faust_internals.table_store(self.table).get(key)

    async def forget(self, partition: int, key: bytes, bad: bytes) -> bool:
        """Delete `key` if it still holds `bad` (a value found bad and dead-lettered) so no
        restore reads it again; a value written there since (a marker moved on, a chunk sent
        again in a format that decodes) stays. True if deleted."""
        if self.raw(key) != bad:
            return False
        await faust_internals.write_through(self.table, partition, key, None)
        return True


class SourceRecords(WindowTable):
    """`src-records`: stage 1's open records and per-partition marker."""

    def marker(self, p: int) -> tuple[int, int] | None:
        """(newest closed window start, newest offset folded in), or None if never written;
        DecodeError if what is stored is not that."""
        raw = self._marker(p)
        return None if raw is None else decode_source_marker(raw)

    def marker_key(self, p: int) -> bytes:
        return b"%d/hw" % p

    async def put_marker(self, p: int, closed_upto: int, seen: int) -> None:
        await self._put_marker(p, [closed_upto, seen])

    def records(self, p: int) -> list[tuple[int, bytes]]:
        """(offset, raw record) of every stored record of packets partition `p`, oldest first
        (the offset is in the key: keys that hold none are left out)."""
        out = []
        for k, v in self._items(p, b"r"):
            tail = k.rsplit(b"/", 1)[1]
            if tail.isdigit():
                out.append((int(tail), v))
        return out

    def record_key(self, p: int, offset: int) -> bytes:
        return b"%d/r/%020d" % (p, offset)

    async def put_record(self, p: int, offset: int, value: bytes | None) -> None:
        """Store (value None: delete) the record at `offset` of packets partition `p`."""
        await faust_internals.write_through(self.table, p, self.record_key(p, offset), value)


class DestChunks(WindowTable):
    """`dst-chunks`: stage 2's open flow chunks and per-partition marker."""

    def marker(self, q: int, sources: int) -> tuple[int, list[int]] | None:
        """(newest closed window start, progress of each of `sources` source partitions), or
        None if never written; DecodeError if what is stored is not that."""
        raw = self._marker(q)
        return None if raw is None else decode_dest_marker(raw, sources)

    def marker_key(self, q: int) -> bytes:
        return b"%d/hw" % q

    async def put_marker(self, q: int, closed_upto: int, progress: list[int]) -> None:
        await self._put_marker(q, [closed_upto, progress])

    @staticmethod
    def chunk_key(q: int, chunk: FlowChunk) -> bytes:
        return b"%d/c/%s" % (q, chunk.key())

    def chunks(self, q: int) -> list[tuple[bytes, bytes]]:
        """(key, encoded chunk) of every stored chunk of flows partition `q`, sorted by key."""
        return self._items(q, b"c")

    async def put_chunk(self, q: int, key: bytes, value: bytes | None) -> None:
        """Store (value None: delete) chunk `key` (from chunk_key) of flows partition `q`."""
        await faust_internals.write_through(self.table, q, key, value)
