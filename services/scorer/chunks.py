"""The record between the scorer's two stages: a FlowChunk, the flows of one closed stage 1
window from one `packets` partition bound for one `<app id>-scorer-flows` partition, its msgpack
form and its validation. Pure: no Kafka, no faust.

A flow entry is a list: [src, dst, sport, dport, proto, first_ns, last_ns, packets, bytes,
flags, syn_noack, node, *SRC_FEATURES, hash64] (the 5-tuple, stage 1's flow state, the source's
features, the last SRC_EVIDENCE_FEATURES of them its own evidence measures, and the 5-tuple's
hash). A chunk also carries what the sources of its destination partition sent in the window
(`sent`: [hash64 of a flow's 5-tuple, hash64 of its evidence.sent_from_key or 0], `senders`: the
source addresses), where stage 2 looks up whether a destination answered (evidence.Answers). `FlowChunk.decode` refuses (DecodeError) anything stage 2 could not close and score
(`flow_entry_error`), so a record that decodes can never stop a worker, nor, stored in the
`dst-chunks` table, make it crash again after a restart.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from itertools import chain

import msgpack
import numpy as np

from services.common.errors import DecodeError
from services.detection.features import SRC_EVIDENCE_FEATURES, SRC_FEATURES

FLOWS_VERSION = 3  # 2: source features include the horizon; 3: evidence (own measures, sent flows)
# a flow entry: 5-tuple and stage-1 state (12), source features (the last of them its own
# evidence measures), hash64
SRC_AT = 12
OWN_AT = SRC_AT + len(SRC_FEATURES) - len(SRC_EVIDENCE_FEATURES)
HASH_AT = SRC_AT + len(SRC_FEATURES)
FLOW_LEN = HASH_AT + 1


@dataclass
class FlowChunk:
    """Flows of one window from one source partition, bound for one destination partition."""
    window_ns: int
    src_partition: int
    dst_partition: int
    index: int
    flows: list[list]  # [src, dst, sport, dport, proto, *state, *SRC_FEATURES, hash64]
    sent: list[list[int]] = field(default_factory=list)  # [hash64 5-tuple, hash64 sender key or 0]
    senders: list[str] = field(default_factory=list)     # the sources of this partition
    # `flows` as columns (flow_columns), kept from decode's check: stage 2 needs them again
    columns: list[tuple] | None = field(default=None, compare=False, repr=False)

    def key(self) -> bytes:
        return f"{self.window_ns}/{self.src_partition}/{self.dst_partition}/{self.index}".encode()

    def encode(self) -> bytes:
        return msgpack.packb({"v": FLOWS_VERSION, "t": "flows", "ws": self.window_ns,
                              "sp": self.src_partition, "dp": self.dst_partition,
                              "i": self.index, "f": self.flows, "s": self.sent,
                              "a": self.senders}, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> "FlowChunk":
        """The chunk in `data`, every field checked for the type and range stage 2 relies on
        (flow_entry_error); DecodeError naming the first problem otherwise, never another
        exception: a record that decodes can be closed and scored."""
        try:
            rec = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises a zoo of types for bad input
            raise DecodeError(f"flows: not msgpack ({type(exc).__name__}: {exc})") from None
        if type(rec) is not dict or rec.get("v") != FLOWS_VERSION or rec.get("t") != "flows":
            what = (rec.get("t"), rec.get("v")) if type(rec) is dict else type(rec).__name__
            raise DecodeError(f"flows: unsupported record {what!r:.80}")
        head = [rec.get(k) for k in ("ws", "sp", "dp", "i")]
        if not all(type(x) is int and 0 <= x < 2**63 for x in head) or head[1] >= 2**31 \
                or head[2] >= 2**31:
            raise DecodeError(f"flows: window/partition/index {head!r:.120} not integers in range")
        flows = rec.get("f")
        if type(flows) is not list:
            raise DecodeError("flows: 'f' is not a list")
        columns = _valid_columns(flows)
        if columns is None:  # find the first bad entry and say why
            for n, f in enumerate(flows):
                problem = flow_entry_error(f)
                if problem:
                    raise DecodeError(f"flows: flow {n}: {problem}")
        sent, senders = rec.get("s"), rec.get("a")
        if type(sent) is not list or not all(
                type(x) is list and len(x) == 2 and all(type(h) is int and 0 <= h < _U64 for h in x)
                for x in sent):
            raise DecodeError("flows: malformed sent entry")
        if type(senders) is not list or not all(type(a) is str and _is_address(a) for a in senders):
            raise DecodeError("flows: malformed sender")
        chunk = cls(*head, flows, sent, senders)
        chunk.columns = columns
        return chunk

    def flow_columns(self) -> list[tuple]:
        """The flow entries' first FLOW_LEN fields as columns (a tuple per field; [] for no
        flows), as decode left them or transposed now."""
        if self.columns is None:
            self.columns = list(zip(*self.flows))[:FLOW_LEN]
        return self.columns


_U64 = 2**64
_FIELDS = ((2, "sport", 65536), (3, "dport", 65536), (4, "proto", 256), (5, "first_ns", _U64),
           (6, "last_ns", _U64), (7, "packets", _U64), (8, "bytes", _U64), (9, "flags", 256),
           (10, "syn_noack", _U64))
MAX_FEATURE = 1e30  # far above any real aggregate, far below float32's range (the model's)


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


_INSIDE = MAX_FEATURE * 0.999  # float(x) within this: x itself is within MAX_FEATURE
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


def _is_address(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return False
    return True
