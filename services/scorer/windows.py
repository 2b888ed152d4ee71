"""Event-time tumbling windows of the scorer, in two stages. Pure: no Kafka, no faust.

Stage 1, per `packets` partition (= per set of SOURCE addresses): packet events -> per-flow
state per window. A window closes when the partition's watermark passes its end + lateness; the
watermark is the newest event time seen, advanced by the wall-clock time elapsed since the last
record arrived when the partition has no backlog, so the last window of a burst closes without
waiting for more traffic while a worker catching up never closes windows early. Event time is
bounded by this host's clock (`wall`, Unix epoch ns): an event stamped more than `max_future_ns`
ahead of it is refused and counted per capture node (`future`), neither the watermark nor the
progress a partition announces ever passes it, and each node's clock skew as seen here is kept
(`skew_ns`), so one node's wrong clock never closes windows under the other nodes' events. A closed
window yields its flows, each with its source's aggregate features (complete: a source lives on
one partition) and horizon features (the source over the last ten windows, kept per partition),
grouped by DESTINATION partition for stage 2. It also carries the source's own evidence
measures (evidence.SourceWatch: half-open flows, probes of one target group over the horizon,
login sessions) and, towards the partition each SOURCE address belongs to as a destination,
what that address sent (hashes of its flows' 5-tuples and sender keys): stage 2 looks up there
whether a destination answered or asked for what it receives (evidence.Answers).

Stage 2 (services/scorer/dst_windows.py), per intermediate `scorer-flows` partition (= per set of
DESTINATION addresses): flow chunks from every source partition -> per-destination aggregates,
then one feature row per flow (features.row order: its evidence measures computed here,
evidence.assess), scored in a batch by the caller, which passes the window's evidence and the
partition's escalation memory to detect.suggest (scoring.verdicts_for). Every source partition
broadcasts its progress (the newest window it has closed, or that passed without events) to
every stage 2 partition; a window closes when all source partitions are past it.

Flow state (a list, for speed): [first_ns, last_ns, packets, bytes, flags, syn_noack, node].
A record is folded in by fold.py (numpy group-by on window and 5-tuple, then one dict update per
group), equal to the per-event fold to the bit (tests/unit/test_scorer_fold.py). The aggregates
are rebuilt from the window's flows rather than per packet: counts add up, and the distinct-count
sketches are idempotent per item, so the result equals features.WindowState's per-packet one.
When a window closes its flows are transposed once into the FlowTable rows its chunks carry
(_window_rows: sources first among the addresses, one index per address), its flows hashed
in one pass (hash64_keys), and its sources' aggregates and horizon entries computed from those
rows (rows.agg_by_index, rows.horizon_from: sums with numpy, distinct counts as the distinct
sketch positions per source, a peer's position once per distinct destination); equal to the
flow-by-flow aggregation to the bit (tests/unit/test_scorer_fold.py, support/fold_reference.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from operator import add, itemgetter
from typing import Callable

import numpy as np

from services.detection.evidence import GRACE_NS, SourceWatch, asks, sent_from_key
from services.detection.features import SourceHorizon, _cached_pos, hash64, hash64_keys
from services.detection.answers import REFUSAL_SALT, refusals, tunnel_key, tunnels
from services.detection.ports import LOGIN_PORTS, TUNNEL_PORTS
from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_ACK
from services.wire.codec import PacketColumns
from services.wire.partition import address_partition

from .chunks import FlowChunk
from .flowtable import FLOW_DTYPE, FlowTable
from .fold import fold_columns, merge_folded
from .rows import REFLECTOR_ARRAY, agg_by_index, horizon_from

CHUNK_FLOWS = 2000  # flows per intermediate record (~150 KB)
Clock = Callable[[], float]
_NONE = np.zeros(0, dtype=np.intp)
_LOGIN = np.array(sorted(LOGIN_PORTS), dtype=np.int64)
_TUNNEL_ARRAY = np.array(sorted(TUNNEL_PORTS), dtype=np.int64)
# FLOW_DTYPE fields read from a flow's 5-tuple ("key") or its flow state ("state"), by position
_ROW_FIELDS = (("sport", "key", 2), ("dport", "key", 3), ("proto", "key", 4),
               ("first", "state", 0), ("last", "state", 1), ("packets", "state", 2),
               ("bytes", "state", 3), ("flags", "state", 4), ("syn", "state", 5))


def flow_dict(key: tuple, st: list) -> dict:
    """A stage flow state in features' flow-state form."""
    return {"first": st[0], "last": st[1], "packets": st[2], "bytes": st[3], "flags": st[4],
            "syn": st[5], "proto": key[4], "sport": key[2], "dport": key[3]}


@dataclass
class SourcePartition:
    """Stage 1 state of one `packets` partition."""
    partition: int
    width_ns: int
    lateness_ns: int
    clock: Clock = time.monotonic
    windows: dict[int, dict[tuple, list]] = field(default_factory=dict)
    closed_upto: int = -1          # start of the newest closed window; older events are late
    max_ts: int = 0
    last_arrival: float = 0.0
    records: dict[int, int] = field(default_factory=dict)  # offset -> newest window it feeds
    late: int = 0
    backlog: bool = False          # records are waiting: event time alone moves the watermark
    idle_ns: int = 0               # arrivals must pause this long before the clock moves it
    sending: set[int] = field(default_factory=set)  # closed windows whose chunks are in transit
    # When the consumer last heard from the broker about this partition (`clock` time; None:
    # not tracked). Quiet time counts only up to there: later records may exist unfetched.
    polled_at: float | None = None
    # Sources' recent windows (features.SourceHorizon, evidence.SourceWatch). Not restored
    # after a restart or a rebalance: they then cover the windows closed since.
    horizon: SourceHorizon | None = None
    # This host's clock (Unix epoch ns) bounding event time; None: unbounded (pure tests whose
    # events are stamped in another year).
    wall: Callable[[], int] | None = None
    max_future_ns: int = 10 * 10**9
    future: dict[str, int] = field(default_factory=dict)   # node -> events refused as future
    skew_ns: dict[str, int] = field(default_factory=dict)  # node -> newest event time - wall
    watch: SourceWatch | None = None
    _home: bool | None = None  # sources co-partitioned with stage 2 (`_copartitioned`)

    def __post_init__(self) -> None:
        self.last_arrival = self.clock()
        if self.horizon is None:
            self.horizon = SourceHorizon(self.width_ns)
        if self.watch is None:
            self.watch = SourceWatch(self.width_ns, self.horizon.span)

    def add(self, offset: int, c: PacketColumns) -> int:
        """Fold one decoded record into its windows (vectorised: fold.fold_columns); returns
        the events accepted. Events of closed windows count in `late`; with `wall`, events
        stamped beyond wall() + max_future_ns count in `future` per node and the record's
        nodes' skews are noted."""
        now = self.wall() if self.wall is not None else None
        limit = now + self.max_future_ns if now is not None else 2**64
        f = fold_columns(c, self.width_ns, self.closed_upto, limit)
        for node, n in (f.future or {}).items():
            self.future[node] = self.future.get(node, 0) + n
        self.late += f.late
        merge_folded(self.windows, f)
        if f.max_ts > self.max_ts:
            self.max_ts = f.max_ts
        self.last_arrival = self.clock()
        if f.newest >= 0:
            self.records[offset] = max(f.newest, self.records.get(offset, -1))
        if now is not None:
            self._note_skew(c, now)
        return f.accepted

    def _note_skew(self, c: PacketColumns, now: int) -> None:
        """Each node's newest event time in `c` minus `now`: its clock's offset from this
        host's, less the time the event took to get here."""
        nodes = set(c.node)
        if len(nodes) == 1:
            self.skew_ns[c.node[0]] = max(c.ts_ns) - now
            return
        newest: dict[str, int] = {}
        for node, ts in zip(c.node, c.ts_ns):
            if ts > newest.get(node, -1):
                newest[node] = ts
        for node, ts in newest.items():
            self.skew_ns[node] = ts - now

    def watermark(self) -> int:
        """Event time up to which this partition has seen everything (see the module
        docstring); never past wall() when bounded."""
        if self.backlog:  # a pause in reading is not a pause in traffic
            wm = self.max_ts
        else:
            quiet_until = self.clock()
            if self.polled_at is not None:
                quiet_until = min(quiet_until, self.polled_at)
            wm = self.max_ts + max(0, int((quiet_until - self.last_arrival) * 1e9) - self.idle_ns)
        return wm if self.wall is None else min(wm, self.wall())

    def due(self) -> list[int]:
        """Starts of the windows whose end + lateness the watermark has passed, oldest first."""
        limit = self.watermark() - self.width_ns - self.lateness_ns
        return sorted(ws for ws in self.windows if ws <= limit)

    def progress(self, clock_ns: int) -> int:
        """Start of the newest window this partition will not add to any more: windows up to it
        are closed (and their chunks sent) or never had events here. A caught-up partition with
        nothing open follows `clock_ns` (the worker's event clock) when that is ahead of its own
        watermark."""
        upto = self._progress(clock_ns)
        if self.sending:  # a mark must not overtake the chunks of a window still being sent
            upto = min(upto, min(self.sending) - self.width_ns)
        if self.wall is not None:  # nor vouch for windows this host's clock has not passed
            mark = self.wall() - self.width_ns - self.lateness_ns
            upto = min(upto, max(self.closed_upto, mark - mark % self.width_ns))
        return upto

    def _progress(self, clock_ns: int) -> int:
        if self.windows:
            return max(self.closed_upto, min(self.windows) - self.width_ns)
        if self.backlog and not self.max_ts:
            # Records are waiting and none read yet: their times are unknown, so the clock
            # must not vouch for them (their flows would reach stage 2 after it closed).
            return self.closed_upto
        own = self.watermark() if self.max_ts else 0
        # Under a backlog only event time counts. Caught up, the event clock moves it, as it
        # does a partition that never had events: its own watermark alone would keep, for good,
        # the delay with which its last record was read (a partition that lagged under a flood
        # held every later window of every destination back by that lag).
        wm = own if self.backlog else max(own, clock_ns)
        mark = wm - self.width_ns - self.lateness_ns
        return max(self.closed_upto, mark - mark % self.width_ns)

    def close(self, ws: int, num_dst_partitions: int) -> tuple[list[FlowChunk], list[int]]:
        """Close window `ws`: its flow chunks for stage 2, and the closed_records(). The window
        counts as being sent (progress stops short of it) until `sent(ws)`."""
        flows = self.windows.pop(ws, {})
        self.closed_upto = max(self.closed_upto, ws)
        self.sending.add(ws)
        keys = list(flows)
        rows, addresses, n_src, nodes = _window_rows(flows, keys)
        rows["hash"] = np.fromiter(hash64_keys(keys), dtype=np.uint64, count=len(keys))
        names = addresses[:n_src]
        table = FlowTable(rows, addresses, nodes,
                          self._source_features(ws, flows, keys, rows, addresses, n_src))
        if self._home is None and names:
            self._home = self._copartitioned(names, num_dst_partitions)
        addr_q = np.zeros(len(addresses), dtype=np.int64)
        if self._home:  # sources take the addresses' first places (_window_rows)
            addr_q[:n_src] = self.partition
            rest = addresses[n_src:]
        else:
            rest = addresses
        at = len(addresses) - len(rest)
        addr_q[at:] = [address_partition(a, num_dst_partitions) for a in rest]
        dq, sq = addr_q[rows["dst"]], addr_q[rows["src"]]
        sent_by = _sender_hashes(keys, rows)
        # a refusal (answers.refuses) is shipped salted: it answers everything but a SYN-ACK
        answer_hash = np.where(refusals(rows["proto"], rows["packets"], rows["flags"]),
                               rows["hash"] ^ np.uint64(REFUSAL_SALT), rows["hash"])
        src_names = np.array(names, dtype=object)
        senders = {q: src_names[i].tolist() for q, i in _by_partition(addr_q[:n_src]).items()}
        chunks = []
        by_dst, by_src = _by_partition(dq), _by_partition(sq)
        for q in sorted(set(by_dst) | set(by_src)):
            fl, se, sa = by_dst.get(q, _NONE), by_src.get(q, _NONE), senders.get(q, [])
            for i in range(max(len(fl), len(se), len(sa), 1) // CHUNK_FLOWS + 1):
                part = slice(i * CHUNK_FLOWS, (i + 1) * CHUNK_FLOWS)
                if len(fl[part]) or len(se[part]) or sa[part]:
                    chunks.append(FlowChunk(ws, self.partition, q, i, senders=sa[part],
                                            table=table.take(fl[part]),
                                            sent_flows=answer_hash[se[part]],
                                            sent_by=sent_by[se[part]]))
        return chunks, self.closed_records()

    def closed_records(self) -> list[int]:
        """Offsets no open window needs (taken out of `records`): delete their stored copies."""
        done = [off for off, newest in self.records.items() if newest <= self.closed_upto]
        for off in done:
            del self.records[off]
        return done

    def _source_features(self, ws: int, flows: dict[tuple, list], keys: list[tuple],
                         rows: np.ndarray, addresses: list[str], n_src: int) -> list[list]:
        """SRC_FEATURES of every source of window `ws`, in the order of `addresses[:n_src]`
        (the sources in order of first appearance; `rows` and `addresses`: the window's flows
        as _window_rows built them, their hashes filled in; `keys`: the 5-tuples of `flows`,
        in the same order): its aggregate (rows.agg_by_index, from columns), horizon and
        evidence measures; adds the window to the horizon and the watch."""
        agg: dict[str, list] = {}
        recent: dict[str, list] = {}
        watched: dict[str, list] = {}
        shakes: dict[str, list] = {}  # completed handshakes: the watch's outage memory
        settle_by = ws + self.width_ns - GRACE_NS  # evidence.settled
        if keys:
            of, dst = rows["src"].astype(np.intp), rows["dst"]
            used = np.unique(dst)  # a peer's sketch position once per distinct destination
            pos = np.zeros(int(used[-1]) + 1, dtype=np.int64)
            pos[used] = [_cached_pos(addresses[i]) for i in used.tolist()]
            peer_pos = pos[dst]
            names = addresses[:n_src]
            aggs, packets, peer_codes = agg_by_index(
                of, len(names), peer_pos, rows["packets"], rows["bytes"], rows["syn"],
                rows["proto"], rows["dport"], rows["hash"])
            agg = dict(zip(names, aggs))
            recent = horizon_from(names, packets, peer_codes)
            count, states = SourceWatch.count, list(flows.values())
            proto, flags, syn = rows["proto"], rows["flags"], rows["syn"]
            for i in _candidates(proto, rows["dport"], flags, syn, rows["last"],
                                 rows["packets"], settle_by).tolist():
                s = states[i]
                count(watched, keys[i], s[2], s[4], s[5], s[1] <= settle_by)
            shakes = _handshakes(keys, proto, flags, syn)
        self.horizon.add_entries(ws, recent)
        self.watch.add_entries(ws, watched, flows, shakes)
        hz = self.horizon.features_of(ws, agg)
        own = self.watch.measures(ws, agg)
        # both dicts list the sources in `agg`'s order: one concatenation per source, C loops
        return list(map(add, map(add, agg.values(), hz.values()), own.values()))

    def _copartitioned(self, srcs, n: int) -> bool:
        """Whether this partition's sources are all at home in stage 2 partition `partition`:
        true when the packets topic has as many partitions as the flows topic (the adapter's
        case: both are XDPGUARD's packets partition count, and capture partitions by the same
        murmur2 of the source address), so stage 1 need not hash every source again (a spoofed
        flood brings a new source per packet). Read from up to 16 sources, once."""
        sample = list(srcs)[:16]
        return all(address_partition(a, n) == self.partition for a in sample)

    def sent(self, ws: int) -> None:
        """Every chunk of closed window `ws` is queued to stage 2, ahead of any later mark."""
        self.sending.discard(ws)


def _window_rows(flows: dict[tuple, list], keys: list[tuple]
                 ) -> tuple[np.ndarray, list[str], int, list[str]]:
    """A closing window's `flows` (5-tuple -> flow state; `keys`: its 5-tuples) as FLOW_DTYPE
    rows (hash left 0, feat = the source's index): (rows, addresses, number of sources,
    nodes). The addresses are the sources in order of first appearance (so a flow's feature
    row is its source's index), then the other destinations in order of first appearance.
    Read a field at a time (itemgetter): no tuple per flow, which under a window's many live
    flows costs more in the collector's passes than the copying itself."""
    n = len(flows)
    rows = np.zeros(n, dtype=FLOW_DTYPE)
    if not n:
        return rows, [], 0, []
    states = list(flows.values())
    src, dst = list(map(itemgetter(0), keys)), list(map(itemgetter(1), keys))
    at = dict.fromkeys(src)
    n_src = len(at)
    at.update(dict.fromkeys(dst))  # distinct destinations not yet held go after the sources
    at = dict(zip(at, range(len(at))))
    for name, col in (("src", src), ("dst", dst)):
        rows[name] = np.fromiter(map(at.__getitem__, col), dtype=np.uint32, count=n)
    rows["feat"] = rows["src"]
    node = list(map(itemgetter(6), states))
    nodes = list(dict.fromkeys(node))
    if len(nodes) > 1:  # else every flow's is node 0
        of = dict(zip(nodes, range(len(nodes))))
        rows["node"] = np.fromiter(map(of.__getitem__, node), dtype=np.uint32, count=n)
    for name, table, i in _ROW_FIELDS:
        rows[name] = np.fromiter(map(itemgetter(i), keys if table == "key" else states),
                                 dtype=FLOW_DTYPE[name], count=n)
    return rows, list(at), n_src, nodes


def _sender_hashes(keys: list[tuple], rows: np.ndarray) -> np.ndarray:
    """Per flow (5-tuples `keys`, FLOW_DTYPE `rows`), hash64 of its evidence.sent_from_key
    where an answer could be looked up by it (a request to a reflector port of a multicast or
    broadcast address: answers.asks, evidence.Answers.solicited), of its answers.tunnel_key
    for a flow to a tunnel port of one host (answers.tunnels: it answers the other end's
    flows to that port), else 0. Reflector and tunnel ports are disjoint."""
    out = np.zeros(len(rows), dtype=np.uint64)
    udp = rows["proto"] == PROTO_UDP
    for i in np.flatnonzero(udp & np.isin(rows["dport"], REFLECTOR_ARRAY)).tolist():
        if asks(keys[i]):
            out[i] = hash64(sent_from_key(keys[i]))
    for i in np.flatnonzero(udp & np.isin(rows["dport"], _TUNNEL_ARRAY)).tolist():
        if tunnels(keys[i]):
            out[i] = hash64(tunnel_key(keys[i]))
    return out


def _by_partition(q: np.ndarray) -> dict[int, np.ndarray]:
    """Positions of each partition's flows in `q` (partition per flow), in flow order."""
    order = np.argsort(q, kind="stable")
    parts, starts = np.unique(q[order], return_index=True)
    ends = [*starts[1:].tolist(), len(q)]
    return {p: order[a:b] for p, a, b in zip(parts.tolist(), starts.tolist(), ends)}


def _watch_candidates(k: list[tuple], st: list[tuple], settle_by: int) -> np.ndarray:
    """_candidates of a window's flows given as their 5-tuples and flow states as columns
    (`k`, `st`)."""
    def ints(col, dtype=np.int64):
        return np.fromiter(col, dtype=dtype, count=len(col))
    return _candidates(ints(k[4]), ints(k[3]), ints(st[4]), ints(st[5], np.uint64),
                       ints(st[1], np.uint64), ints(st[2], np.uint64), settle_by)


def _handshakes(keys: list[tuple], proto: np.ndarray, flags: np.ndarray,
                syn: np.ndarray) -> dict[str, list]:
    """Source -> (dst, proto, dport) of each completed handshake (a TCP flow with its SYN and
    its ACK: the outage memory's) among the flows (`keys`: 5-tuples; their protocol, flags and
    SYN-without-ACK packets as arrays), in flow order: what evidence.SourceWatch.count notes
    in its `handshakes`, without a Python call per flow (a busy server's every client
    completes one)."""
    out: dict[str, list] = {}
    for i in np.flatnonzero((proto == PROTO_TCP) & (syn != 0) & ((flags & TCP_ACK) != 0)).tolist():
        src, d, _, dport, p = keys[i]
        t = out.get(src)
        if t is None:
            out[src] = [(d, p, dport)]
        else:
            t.append((d, p, dport))
    return out


def _candidates(proto: np.ndarray, dport: np.ndarray, flags: np.ndarray, syn: np.ndarray,
                last: np.ndarray, packets: np.ndarray, settle_by: int) -> np.ndarray:
    """Positions of the flows evidence.SourceWatch.count may count (their protocol,
    destination port, flags, SYN-without-ACK packets, last time (ns) and packets as arrays):
    a SYN-only TCP flow settled by `settle_by`, a SYN to a login port, or one of at most 2
    packets that is not TCP or is SYN-only (a probe or an unsettled SYN; `count` itself
    leaves out those towards group addresses). The others it skips, so they are not passed
    (completed handshakes, for the outage memory, are collected apart: `_source_features`)."""
    tcp = proto == PROTO_TCP
    syn = syn != 0
    ack = (flags & TCP_ACK) != 0
    syn_only = tcp & syn & ~ack
    done = last <= np.uint64(max(settle_by, 0))
    if settle_by < 0:
        done[:] = False
    login = tcp & syn & np.isin(dport, _LOGIN)
    few = packets <= 2
    return np.flatnonzero((syn_only & done) | login | (few & (~tcp | syn_only)))
