"""A flow chunk's flows as columns (FlowTable): what stage 1 builds from a closing window and
stage 2 reads, and their wire form inside a version-4 `FlowChunk` record. Pure: no Kafka, no
faust.

One numpy structured row per flow (`FLOW_DTYPE`, little-endian, 70 bytes): the 5-tuple's ports
and protocol, stage 1's flow state, the 5-tuple's hash64, and indexes into three small tables
sent beside it: `addresses` (text; a flow's source and destination), `nodes` (capture node
names) and `features` (SRC_FEATURES lists, one per source, msgpack numbers so their int/float
types survive as in the entries of version 3). Counters, ports, protocol and flags are in range
by their dtype; `table_error` checks the rest (indexes, addresses and their families,
first <= last, features finite within +-MAX_FEATURE), what chunks.flow_entry_error checks of a
version-3 entry.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from itertools import chain

import numpy as np

from services.detection.features import SRC_FEATURES

FLOW_DTYPE = np.dtype([("src", "<u4"), ("dst", "<u4"), ("sport", "<u2"), ("dport", "<u2"),
                       ("proto", "u1"), ("flags", "u1"), ("first", "<u8"), ("last", "<u8"),
                       ("packets", "<u8"), ("bytes", "<u8"), ("syn", "<u8"), ("hash", "<u8"),
                       ("node", "<u4"), ("feat", "<u4")])
MAX_FEATURE = 1e30  # far above any real aggregate, far below float32's range (the model's)
_INSIDE = MAX_FEATURE * 0.999  # float(x) within this: x itself is within MAX_FEATURE
_FAMILY: dict[str, bool] = {}  # valid address -> IPv6 (bounded cache of checked ones)


@dataclass
class FlowTable:
    """Flows as columns: `rows` (n,) of FLOW_DTYPE whose src/dst index `addresses`, node
    `nodes` and feat `features` (lists of len(SRC_FEATURES) numbers)."""
    rows: np.ndarray
    addresses: list[str]
    nodes: list[str]
    features: list[list]

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, sel: np.ndarray) -> "FlowTable":
        """The flows at positions `sel` (in that order), with only the table entries they use."""
        width = FLOW_DTYPE.itemsize  # rows as bytes: numpy gathers those faster than records
        rows = np.ascontiguousarray(self.rows).view(np.uint8).reshape(-1, width)[sel]
        rows = rows.reshape(-1).view(FLOW_DTYPE)
        addrs, (rows["src"], rows["dst"]) = _compact(self.addresses, rows["src"], rows["dst"])
        nodes, (rows["node"],) = _compact(self.nodes, rows["node"])
        feats, (rows["feat"],) = _compact(self.features, rows["feat"])
        return FlowTable(rows, addrs, nodes, feats)

    def entries(self) -> list[list]:
        """The flows as version-3 entries: [src, dst, sport, dport, proto, first_ns, last_ns,
        packets, bytes, flags, syn_noack, node, *SRC_FEATURES, hash64]."""
        r, a, nd, fe = self.rows, self.addresses, self.nodes, self.features
        cols = [r[f].tolist() for f in FLOW_DTYPE.names]
        return [[a[s], a[d], sp, dp, pr, t0, t1, p, b, fl, sy, nd[n], *fe[fi], h]
                for s, d, sp, dp, pr, fl, t0, t1, p, b, sy, h, n, fi in zip(*cols)]

    @classmethod
    def from_entries(cls, flows: list[list]) -> "FlowTable":
        """The table of version-3 entries (valid ones: chunks.flow_entry_error), a feature
        row per entry."""
        rows = np.zeros(len(flows), dtype=FLOW_DTYPE)
        if not flows:
            return cls(rows, [], [], [])
        at: dict[str, int] = {}
        nodes: dict[str, int] = {}
        cols = list(zip(*flows))
        rows["src"] = [at.setdefault(x, len(at)) for x in cols[0]]
        rows["dst"] = [at.setdefault(x, len(at)) for x in cols[1]]
        at_hash = 12 + len(SRC_FEATURES)  # an entry's fields past its hash are not read
        for name, i in (("sport", 2), ("dport", 3), ("proto", 4), ("first", 5), ("last", 6),
                        ("packets", 7), ("bytes", 8), ("flags", 9), ("syn", 10), ("hash", at_hash)):
            rows[name] = np.array(cols[i], dtype=np.uint64)
        rows["node"] = [nodes.setdefault(x, len(nodes)) for x in cols[11]]
        rows["feat"] = np.arange(len(flows))
        return cls(rows, list(at), list(nodes), [f[12:at_hash] for f in flows])


def _compact(table: list, *indexes: np.ndarray) -> tuple[list, list[np.ndarray]]:
    """(the entries of `table` that `indexes` use, in table order; the indexes renumbered)."""
    used = np.zeros(len(table), dtype=bool)
    for x in indexes:
        used[x] = True
    at = np.cumsum(used) - 1  # an entry's place among the used ones
    return list(map(table.__getitem__, np.flatnonzero(used).tolist())), \
        [at[x].astype(np.uint32) for x in indexes]


def table_error(rows: object, addresses: object, nodes: object, features: object) -> str:
    """Why these decoded fields do not make a FlowTable stage 2 can use ("" if they do):
    `rows` bytes of whole FLOW_DTYPE rows, `addresses` a list of textual IP addresses,
    `nodes` a list of strings, `features` a list of len(SRC_FEATURES) finite numbers within
    +-MAX_FEATURE; every index within its table, a flow's addresses of one family and its
    first_ns <= last_ns."""
    if type(rows) is not bytes or len(rows) % FLOW_DTYPE.itemsize:
        return "rows are not whole flow rows"
    if type(addresses) is not list or type(nodes) is not list or type(features) is not list:
        return "address, node or feature table is not a list"
    fam = _FAMILY
    if len(fam) > 1 << 16:
        fam.clear()
    for a in addresses:
        if type(a) is not str or a not in fam:
            if type(a) is not str or not _is_address(a):
                return f"address {a!r:.60} is not one"
            fam[a] = ":" in a
    if not all(type(n) is str for n in nodes):
        return "node is not a string"
    problem = features_error(features)
    if problem:
        return problem
    r = np.frombuffer(rows, dtype=FLOW_DTYPE)
    if not r.size:
        return ""
    for name, table in (("src", addresses), ("dst", addresses), ("node", nodes),
                        ("feat", features)):
        if int(r[name].max()) >= len(table):
            return f"{name} index past its table"
    v6 = np.array([fam[a] for a in addresses], dtype=bool)
    if np.any(v6[r["src"]] != v6[r["dst"]]):
        return "source and destination of different IP families"
    if np.any(r["first"] > r["last"]):
        return "first_ns after last_ns"
    return ""


def features_error(features: list) -> str:
    """Why `features` is not a list of SRC_FEATURES rows of finite numbers within
    +-MAX_FEATURE ("" if it is)."""
    n = len(SRC_FEATURES)
    if not all(type(f) is list and len(f) == n for f in features):
        return f"feature row is not a list of {n} numbers"
    if not features:
        return ""
    if not set(map(type, chain.from_iterable(features))) <= {int, float}:
        return "source feature is not a number"
    try:
        block = np.array(features, dtype=np.float64)
    except OverflowError:  # an integer past float64's range
        return "source feature is not a finite number"
    if not np.all(np.abs(block) <= _INSIDE):  # NaN fails too; near the bound: exactly
        for x in chain.from_iterable(features):
            if not -MAX_FEATURE <= x <= MAX_FEATURE:
                return f"source feature {x!r:.40} is not a finite number"
    return ""


def _is_address(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return False
    return True
