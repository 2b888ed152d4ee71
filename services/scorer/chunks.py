"""The record between the scorer's two stages: a FlowChunk, the flows of one closed stage 1
window from one `packets` partition bound for one `<app id>-scorer-flows` partition, its msgpack
form and its validation. Pure: no Kafka, no faust.

Version 4 (written) carries the flows as columns (flowtable.FlowTable: one fixed-width row per
flow, little-endian bytes, with tables of addresses, nodes and per-source features) and what
was sent as two uint64 columns. Version 3 (still decoded: chunks stored in the `dst-chunks`
table or sent by a worker of the version before) carries them as entries. A flow entry is a list: [src, dst, sport, dport, proto, first_ns, last_ns, packets, bytes,
flags, syn_noack, node, *SRC_FEATURES, hash64] (the 5-tuple, stage 1's flow state, the source's
features, the last SRC_EVIDENCE_FEATURES of them its own evidence measures, and the 5-tuple's
hash). A chunk also carries what the sources of its destination partition sent in the window
(`sent`: [hash64 of a flow's 5-tuple, hash64 of its evidence.sent_from_key or 0], `senders`: the
source addresses), where stage 2 looks up whether a destination answered (evidence.Answers). `FlowChunk.decode` refuses (DecodeError) anything stage 2 could not close and score
(`flow_entry_error`), so a record that decodes can never stop a worker, nor, stored in the
`dst-chunks` table, make it crash again after a restart.
"""
from __future__ import annotations

from itertools import chain

import msgpack
import numpy as np

from services.common.errors import DecodeError
from services.detection.features import SRC_EVIDENCE_FEATURES, SRC_FEATURES

from .flowtable import (_INSIDE, FLOW_DTYPE, MAX_FEATURE, FlowTable, _is_address,  # noqa: F401
                        table_error)

ENTRIES_VERSION = 3  # flows as entries (below); still decoded: stored chunks, older workers
FLOWS_VERSION = 4  # 2: source features include the horizon; 3: evidence; 4: flows as columns
# a version-3 flow entry: 5-tuple and stage-1 state (12), source features (the last of them its
# own evidence measures), hash64
SRC_AT = 12
OWN_AT = SRC_AT + len(SRC_FEATURES) - len(SRC_EVIDENCE_FEATURES)
HASH_AT = SRC_AT + len(SRC_FEATURES)
FLOW_LEN = HASH_AT + 1
_NO_HASHES = np.zeros(0, dtype=np.uint64)


class FlowChunk:
    """Flows of one window from one source partition, bound for one destination partition:
    `table` (flowtable.FlowTable, or `flows` as version-3 entries, turned into one), what the
    sources of partition `dst_partition` sent (`sent_flows`: hash64 of a flow's 5-tuple,
    `sent_by`: hash64 of its evidence.sent_from_key or 0; uint64 arrays, or `sent` as pairs)
    and those sources (`senders`)."""

    __slots__ = ("window_ns", "src_partition", "dst_partition", "index", "table", "sent_flows",
                 "sent_by", "senders")

    def __init__(self, window_ns: int, src_partition: int, dst_partition: int, index: int,
                 flows: list[list] | None = None, sent: list | None = None,
                 senders: list[str] | None = None, *, table: FlowTable | None = None,
                 sent_flows: np.ndarray | None = None, sent_by: np.ndarray | None = None):
        self.window_ns, self.src_partition = window_ns, src_partition
        self.dst_partition, self.index = dst_partition, index
        self.table = table if table is not None else FlowTable.from_entries(flows or [])
        if sent_flows is None:
            pairs = np.array(sent or [], dtype=np.uint64).reshape(-1, 2)
            sent_flows, sent_by = pairs[:, 0].copy(), pairs[:, 1].copy()
        self.sent_flows, self.sent_by = sent_flows, sent_by
        self.senders = list(senders or [])

    def __len__(self) -> int:
        """The number of flows."""
        return len(self.table)

    @property
    def flows(self) -> list[list]:
        """The flows as version-3 entries (built on each call: for tests and reports)."""
        return self.table.entries()

    @property
    def sent(self) -> list[list[int]]:
        """What was sent as [hash64 5-tuple, hash64 sender key or 0] pairs."""
        return [[a, b] for a, b in zip(self.sent_flows.tolist(), self.sent_by.tolist())]

    def key(self) -> bytes:
        return f"{self.window_ns}/{self.src_partition}/{self.dst_partition}/{self.index}".encode()

    def encode(self) -> bytes:
        """The version-4 record: flow rows and both sent columns as little-endian bytes."""
        t = self.table
        return msgpack.packb({"v": FLOWS_VERSION, "t": "flows", "ws": self.window_ns,
                              "sp": self.src_partition, "dp": self.dst_partition,
                              "i": self.index, "r": t.rows.tobytes(), "ad": t.addresses,
                              "nd": t.nodes, "fe": t.features,
                              "sh": self.sent_flows.astype("<u8").tobytes(),
                              "sb": self.sent_by.astype("<u8").tobytes(),
                              "a": self.senders}, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> "FlowChunk":
        """The chunk in `data` (version 4, or 3: flows as entries), every field checked for the
        type and range stage 2 relies on (flowtable.table_error, flow_entry_error);
        DecodeError naming the first problem otherwise, never another exception: a record
        that decodes can be closed and scored."""
        try:
            rec = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises a zoo of types for bad input
            raise DecodeError(f"flows: not msgpack ({type(exc).__name__}: {exc})") from None
        if type(rec) is not dict or rec.get("v") not in (FLOWS_VERSION, ENTRIES_VERSION) \
                or rec.get("t") != "flows":
            what = (rec.get("t"), rec.get("v")) if type(rec) is dict else type(rec).__name__
            raise DecodeError(f"flows: unsupported record {what!r:.80}")
        head = [rec.get(k) for k in ("ws", "sp", "dp", "i")]
        if not all(type(x) is int and 0 <= x < 2**63 for x in head) or head[1] >= 2**31 \
                or head[2] >= 2**31:
            raise DecodeError(f"flows: window/partition/index {head!r:.120} not integers in range")
        if rec["v"] == ENTRIES_VERSION:
            flows, sent = _checked_entries(rec.get("f")), _checked_sent(rec.get("s"))
            return cls(*head, flows, sent, _checked_senders(rec.get("a")))
        problem = table_error(rec.get("r"), rec.get("ad"), rec.get("nd"), rec.get("fe"))
        if problem:
            raise DecodeError(f"flows: {problem}")
        sh, sb = rec.get("sh"), rec.get("sb")
        if type(sh) is not bytes or type(sb) is not bytes or len(sh) != len(sb) or len(sh) % 8:
            raise DecodeError("flows: malformed sent columns")
        senders = _checked_senders(rec.get("a"))
        table = FlowTable(np.frombuffer(rec["r"], dtype=FLOW_DTYPE), rec["ad"], rec["nd"],
                          rec["fe"])
        return cls(*head, senders=senders, table=table,
                   sent_flows=np.frombuffer(sh, dtype="<u8"),
                   sent_by=np.frombuffer(sb, dtype="<u8"))


def _checked_entries(flows: object) -> list[list]:
    """Version-3 flow entries, checked (DecodeError naming the first bad one)."""
    if type(flows) is not list:
        raise DecodeError("flows: 'f' is not a list")
    if _valid_columns(flows) is None:  # find the first bad entry and say why
        for n, f in enumerate(flows):
            problem = flow_entry_error(f)
            if problem:
                raise DecodeError(f"flows: flow {n}: {problem}")
    return flows


def _checked_senders(senders: object) -> list[str]:
    if type(senders) is not list or not all(type(a) is str and _is_address(a) for a in senders):
        raise DecodeError("flows: malformed sender")
    return senders


def _checked_sent(sent: object) -> list[list[int]]:
    """Version-3 sent pairs, checked."""
    if type(sent) is not list or not all(
            type(x) is list and len(x) == 2 and all(type(h) is int and 0 <= h < _U64 for h in x)
            for x in sent):
        raise DecodeError("flows: malformed sent entry")
    return sent


_U64 = 2**64
_FIELDS = ((2, "sport", 65536), (3, "dport", 65536), (4, "proto", 256), (5, "first_ns", _U64),
           (6, "last_ns", _U64), (7, "packets", _U64), (8, "bytes", _U64), (9, "flags", 256),
           (10, "syn_noack", _U64))


def flow_entry_error(f) -> str:
    """Why `f` is not a flow entry stage 2 can use ("" if it is): [src, dst, sport, dport,
    proto, first_ns, last_ns, packets, bytes, flags, syn_noack, node, *SRC_FEATURES, hash64]
    with addresses as text, integers in their field's range, first <= last, the node a string,
    the source features finite numbers within +-MAX_FEATURE and the hash an unsigned 64-bit
    integer."""
    if type(f) is not list or len(f) < FLOW_LEN:
        return "not a list of at least %d values" % FLOW_LEN
    for i in (0, 1):
        if type(f[i]) is not str or not _is_address(f[i]):
            return f"address {f[i]!r:.60} is not one"
    if (":" in f[0]) != (":" in f[1]):
        return "source and destination of different IP families"
    for i, name, end in _FIELDS:
        if type(f[i]) is not int or not 0 <= f[i] < end:
            return f"{name} {f[i]!r:.40} is not an integer in 0..{end - 1}"
    if f[5] > f[6]:
        return "first_ns after last_ns"
    if type(f[11]) is not str:
        return "node is not a string"
    for x in f[SRC_AT:HASH_AT]:
        if type(x) not in (int, float) or not -MAX_FEATURE <= x <= MAX_FEATURE:  # NaN fails too
            return f"source feature {x!r:.40} is not a finite number"
    if type(f[HASH_AT]) is not int or not 0 <= f[HASH_AT] < _U64:
        return f"flow hash {f[HASH_AT]!r:.40} is not an unsigned 64-bit integer"
    return ""


_VALID_ADDRESSES: dict[str, bool] = {}  # address -> IPv6 (bounded cache of checked ones)


def _valid_columns(flows: list) -> list[tuple] | None:
    """The first FLOW_LEN fields of `flows` as columns if every entry passes flow_entry_error,
    checked a column at a time; else None (flow_entry_error then finds the first problem).
    Accepts nothing flow_entry_error refuses (tests/unit/test_scorer_chunk_checks.py)."""
    if not flows:
        return []
    if any(type(f) is not list for f in flows) or min(map(len, flows)) < FLOW_LEN:
        return None
    cols = list(zip(*flows))[:FLOW_LEN]
    if set(map(type, cols[0])) != {str} or set(map(type, cols[1])) != {str}:
        return None
    v6 = _VALID_ADDRESSES
    if len(v6) > 1 << 16:
        v6.clear()
    for a in set(cols[0]) | set(cols[1]):
        if a not in v6:
            if not _is_address(a):
                return None
            v6[a] = ":" in a
    if list(map(v6.__getitem__, cols[0])) != list(map(v6.__getitem__, cols[1])):
        return None
    for i, _, end in _FIELDS:
        col = cols[i]
        if set(map(type, col)) != {int} or min(col) < 0 or max(col) >= end:
            return None
    if not all(map(int.__le__, cols[5], cols[6])) or set(map(type, cols[11])) != {str}:
        return None
    feats = cols[SRC_AT:HASH_AT]
    if not set(map(type, chain.from_iterable(feats))) <= {int, float}:
        return None
    try:
        block = np.array(feats, dtype=np.float64)
    except OverflowError:  # an integer past float64's range
        return None
    if not np.all(np.abs(block) <= _INSIDE):  # NaN fails too; near the bound: the slow check
        return None
    h = cols[HASH_AT]
    return cols if set(map(type, h)) == {int} and min(h) >= 0 and max(h) < _U64 else None
