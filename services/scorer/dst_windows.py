"""Stage 2 of the scorer's windows, per intermediate `scorer-flows` partition (= per set of
DESTINATION addresses): flow chunks from every stage 1 partition (services/scorer/windows.py)
-> per-destination aggregates, then one feature row per flow (features.row order: its evidence
measures computed here, evidence.assess), scored in a batch by the caller, which passes the
window's evidence and the partition's escalation memory to detect.suggest
(scoring.verdicts_for). A window closes when every source partition's progress mark is past it.

A closed window is then SETTLED before it is scored: a source's probes are spread over every
partition (by destination), and each partition knows the answers to its own destinations only.
Every partition sends its window's probe tally (evidence.probe_tally) and how far it has closed
to every partition (`through`, `peer`); a window settles once every live partition is past it,
with probe_other (evidence and model rows) weighted by the share over ALL partitions
(evidence.merge_tallies, _merged_inputs, hold_tallied): the same values as with one partition.
Pure: no Kafka, no faust.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from services.detection.detect import Escalation
from services.detection.evidence import (DST_MEASURES, SRC_MEASURES, Answers, ProbeFates,
                                         WindowEvidence, assess, hold_tallied, merge_tallies,
                                         probe_groups)
from services.detection.features import FEATURE_NAMES

from .chunks import OWN_AT, SRC_AT, FlowChunk
from .evidence_columns import assess_columns
from .rows import agg_rows, flow_feature_matrix, window_matrix
from .windows import Clock, flow_dict

@dataclass
class ClosedWindow:
    """A stage 2 window ready to score: flows towards this partition's destinations."""
    window_ns: int
    end_ns: int
    partition: int
    keys: list[tuple]
    flows: dict[tuple, dict]      # features flow-state form, by 5-tuple
    nodes: dict[tuple, str]
    matrix: np.ndarray            # (len(keys), len(FEATURE_NAMES)) float64: a row per key
    chunk_keys: list[bytes]
    evidence: WindowEvidence | None = None
    memory: Escalation | None = None   # the partition's (detect.Escalation), across windows
    bounds: object = None              # the model's EvidenceBounds, set by scoring.score_windows
    groups: dict[str, float] = field(default_factory=dict)  # probe groups of its candidates
    closed_at: float = 0.0             # the partition's clock when it closed (settle's wait)

    @property
    def rows(self) -> list[list[float]]:
        """The rows as lists (features.FEATURE_NAMES order), for readers of single rows."""
        return self.matrix.tolist()


@dataclass
class DstPartition:
    """Stage 2 state of one `scorer-flows` partition. Window W closes once every source
    partition has reported (a progress mark) that it is past W. A source partition silent for
    `max_wait_s` (no owner: a worker died and the group has not rebalanced yet) is not waited
    for; owners repeat their marks, so a busy partition is never mistaken for a silent one."""
    partition: int
    width_ns: int
    num_sources: int
    max_wait_s: float
    clock: Clock = time.monotonic
    windows: dict[int, dict[bytes, FlowChunk]] = field(default_factory=dict)
    progress: list[int] = field(default_factory=list)      # per source partition: past up to
    last_heard: list[float] = field(default_factory=list)  # per source partition: last mark
    closed_upto: int = -1
    late: int = 0
    # rules suggested before (escalation) and the previous window's sent flows (answers);
    # in memory only, like the stage 1 horizon
    memory: Escalation = field(default_factory=Escalation)
    fates: ProbeFates | None = None   # the sources' probe fates (evidence.hold_probe_other)
    _answers: Answers | None = None
    _answers_ws: int = -1

    # settling (module docstring): closed windows waiting for the other partitions' tallies;
    # per stage 2 partition (as many as sources) how far it has closed and when it said so;
    # tallies by window start and partition; the newest window settled
    pending: dict[int, ClosedWindow] = field(default_factory=dict)
    peers_upto: list[int] = field(default_factory=list)
    peers_heard: list[float] = field(default_factory=list)
    peers_first: list[int | None] = field(default_factory=list)  # its first `through` heard
    tallies: dict[int, dict[int, dict]] = field(default_factory=dict)
    tallied_at: dict[int, float] = field(default_factory=dict)  # window -> first tally came
    settled_upto: int = -1
    wanted: int = -1  # the newest window some partition sent a tally of (it waits to settle)

    def __post_init__(self) -> None:
        if not self.progress:
            self.progress = [-1] * self.num_sources
        if self.fates is None:
            self.fates = ProbeFates(self.width_ns)
        self.last_heard = [self.clock()] * self.num_sources
        self.peers_upto = [-1] * self.num_sources
        self.peers_heard = [self.clock()] * self.num_sources
        self.peers_first = [None] * self.num_sources

    def add(self, key: bytes, chunk: FlowChunk) -> bool:
        """Keep a chunk (a re-sent chunk replaces its first copy); False if it came too late."""
        if chunk.window_ns <= self.closed_upto:
            self.late += len(chunk)
            return False
        self.windows.setdefault(chunk.window_ns, {})[key] = chunk
        return True

    def mark(self, src_partition: int, closed_upto: int) -> None:
        if 0 <= src_partition < self.num_sources:
            self.progress[src_partition] = max(self.progress[src_partition], closed_upto)
            self.last_heard[src_partition] = self.clock()

    def due(self) -> list[int]:
        """Start times of the open windows every live source partition is past, oldest first."""
        if not self.windows:
            return []
        done = self._done()
        done = max(self.windows) if done is None else done
        return sorted(ws for ws in self.windows if ws <= done)

    def _done(self) -> int | None:
        """The newest window start every live source partition is past (None: none alive)."""
        # Silence is judged against the newest mark heard, not the wall clock: when this worker
        # itself was stalled (a long scoring call on a busy CPU) every source looks silent to
        # the wall clock, and closing everything then would drop the flows still in flight.
        # A partition whose owner died falls behind the others, which keep marking.
        return _live_min(self.progress, self.last_heard, self.max_wait_s)

    def through(self) -> int:
        """The newest window start W such that every window up to W is closed here and no
        flow will be added to it: what this partition's tally marks say (`peer`)."""
        done = self._done()
        if done is None:
            return -1
        waiting = [ws for ws in self.windows if ws <= done]
        return min(done, min(waiting) - 1) if waiting else done

    def discard(self, ws: int) -> None:
        """Forget window `ws` as if closed (it could not be: the caller dead-letters it)."""
        self.windows.pop(ws, None)
        self.closed_upto = max(self.closed_upto, ws)

    def close(self, ws: int) -> ClosedWindow:
        """Close window `ws`: its flows, evidence (answers looked up in
        what this partition's addresses sent, this window and the one before) and rows (with
        the destinations' aggregate features, rows.agg_rows)."""
        chunks = self.windows.pop(ws, {})
        self.closed_upto = max(self.closed_upto, ws)
        cs = list(chunks.values())
        by = np.concatenate([_NO_HASH, *(c.sent_by for c in cs)])
        by = by[by != 0]
        # a tunnel flow's sent_by (answers.tunnel_key) answers like a flow; an ask's hash among
        # the flows matches no 5-tuple's
        sent = np.concatenate([_NO_HASH, *(c.sent_flows for c in cs), by]).tolist()
        addresses = list(chain.from_iterable(c.senders for c in cs))
        end = ws + self.width_ns
        # windows this partition got no chunk of since the last one (answers.Answers)
        skipped = (ws - self._answers_ws) // self.width_ns - 1
        answers = Answers(addresses, sent, by.tolist(), self._answers, hashed=True,
                          skipped=skipped)
        self._answers, self._answers_ws = answers, ws
        f = _flows(c.table for c in cs if len(c))
        if f is None:
            ev = assess([], {}, answers, end, {})
            return self._pending(ClosedWindow(
                ws, end, self.partition, [], {}, {},
                np.empty((0, len(FEATURE_NAMES)), dtype=np.float64), list(chunks), ev,
                self.memory))
        keys = list(zip(f.src, f.dst, f.rows["sport"].tolist(), f.rows["dport"].tolist(),
                        f.rows["proto"].tolist()))
        last = dict(zip(keys, range(len(keys))))  # a key's last entry counts (a re-sent flow)
        rows, node, shipped = f.rows, f.node, f.shipped
        if len(last) < len(keys):
            sel = np.fromiter(last.values(), dtype=np.intp, count=len(last))
            keys, rows, shipped = list(last), rows[sel], shipped[sel]
            node = [node[i] for i in sel.tolist()]
        cols = [rows[name].tolist() for name in ("first", "last", "packets", "bytes", "flags",
                                                  "syn")]
        flows = {k: flow_dict(k, st) for k, *st in zip(keys, *cols)}
        ev = assess_columns(keys, rows["packets"], rows["bytes"], rows["flags"], rows["syn"],
                            rows["last"], answers, end, f.own)
        r = f.rows  # every entry counts in its destination's aggregate
        agg, _ = agg_rows(f.dst, f.src, r["packets"], r["bytes"], r["syn"], r["proto"],
                          r["dport"], r["hash"])
        seed = flow_feature_matrix(rows["first"], rows["last"], rows["packets"], rows["bytes"],
                                   rows["flags"], rows["proto"], rows["sport"], rows["dport"])
        matrix = _matrix(keys, seed, shipped, ev, agg)
        return self._pending(ClosedWindow(ws, end, self.partition, keys, flows,
                                          dict(zip(keys, node)), matrix, list(chunks), ev,
                                          self.memory, groups=probe_groups(ev.src, f.own)))

    def _pending(self, w: ClosedWindow) -> ClosedWindow:
        w.closed_at = self.clock()
        self.pending[w.window_ns] = w
        return w

    # --- settling -----------------------------------------------------------------------------
    def peer(self, q: int, upto: int, tallies: dict[int, dict]) -> None:
        """Stage 2 partition `q` (this one included) has closed every window up to `upto`;
        `tallies`: window start -> its probe tally there, or a part of it (evidence.probe_tally;
        parts of one window hold disjoint sources and are joined; a window without candidate
        probes may be left out). Tallies of windows already settled here are dropped."""
        if not 0 <= q < self.num_sources:
            return
        now = self.clock()
        if self.peers_first[q] is None:
            self.peers_first[q] = upto
        self.peers_upto[q] = max(self.peers_upto[q], upto)
        self.peers_heard[q] = now
        for ws, tally in tallies.items():
            self.wanted = max(self.wanted, ws)
            if ws > self.settled_upto:
                self.tallies.setdefault(ws, {}).setdefault(q, {}).update(tally)
                self.tallied_at.setdefault(ws, now)

    def settle(self) -> list[ClosedWindow]:
        """The closed windows ready to score, oldest first, their evidence's `held` set
        (module docstring). A window without candidate probes here (no tally) needs nothing
        from the others and goes at once. Any other settles once every live partition (one
        heard from within max_wait_s of the newest) is past it, or once it or a tally of its
        window has waited max_wait_s (a live partition that stopped closing must not stop
        decisions). A partition counts as having told when it is past the window and its
        tally of the window came (a split tally's earlier marks say `through` below it), or
        when it was past the window having been heard before it got there (a partition created
        since, by a restore, cannot tell an empty tally from one sent before it listened).
        Settled without every partition's tally, or closed here after the window was settled
        from the others' tallies, a window's candidate sources are held to probe_other 0: no
        probe evidence from a partial view (a monitor's dead targets would read as a sweep's;
        the next complete window decides)."""
        now = self.clock()
        out = self._ready()
        done = _live_min(self.peers_upto, self.peers_heard, self.max_wait_s)
        done = -1 if done is None else done
        waited = [ws for ws, w in self.pending.items() if now - w.closed_at >= self.max_wait_s]
        waited += [ws for ws, t in self.tallied_at.items() if now - t >= self.max_wait_s]
        forced = max(waited, default=-1)
        for ws in sorted(set(self.pending) | set(self.tallies)):
            if ws > done and ws > forced:
                break
            got = self.tallies.pop(ws, {})
            self.tallied_at.pop(ws, None)
            merged = merge_tallies(got[q] for q in sorted(got))
            w = self.pending.pop(ws, None)
            if w is None:  # no candidates here; the others' probe fates count over the horizon
                self.fates.add_tally(ws, merged)
            else:
                # a peer's tally counts once its `through` is past the window: a split
                # tally's earlier marks say less (tables.encode_tallies), and a peer that
                # died between them left part of it out
                told = sum(q == self.partition or
                           (up >= ws and (q in got or (first is not None and first < ws)))
                           for q, (up, first) in enumerate(zip(self.peers_upto, self.peers_first)))
                w.evidence.held = self._hold(w, merged, told >= self.num_sources)
                out.append(w)
            self.settled_upto = max(self.settled_upto, ws)
        out += self._ready()
        out.sort(key=lambda w: w.window_ns)
        return out

    def _ready(self) -> list[ClosedWindow]:
        """The pending windows that need no tally, oldest first, up to the first one waiting
        for tallies: windows are scored in order (the escalation memory keeps the last one
        scored; the marker, decided_upto, is below every window not scored yet)."""
        out = []
        for ws in sorted(self.pending):
            w = self.pending[ws]
            if w.evidence.tally and ws > self.settled_upto:
                break
            del self.pending[ws]
            if w.evidence.tally:  # its own targets still count over the horizon
                w.evidence.held = self._hold(w, w.evidence.tally, complete=False)
            out.append(w)
        return out

    def _hold(self, w: ClosedWindow, tally: dict, complete: bool) -> dict[str, float]:
        """Window `w`'s held probe_other from `tally` (merged over the partitions that told),
        its evidence and model rows first set from the tally if every partition told
        (_merged_inputs), to 0 for its candidates if not."""
        if complete:
            _merged_inputs(w, tally)
            return hold_tallied(tally, w.groups, w.evidence.src, self.fates, w.window_ns)
        self.fates.add_tally(w.window_ns, tally)
        held = {s: 0.0 for s in w.groups if w.evidence.src.get(s, _NO_SRC)[_PROBE_OTHER] > 0}
        _write_rows(w, held)  # the model reads no probe evidence from a partial view either
        return held

    def decided_upto(self) -> int:
        """The newest window start W such that every window up to W closed here has been
        settled (what the table's marker records: later ones are closed again on restore)."""
        return min(self.closed_upto, min(self.pending) - 1) if self.pending else self.closed_upto


def _merged_inputs(w: ClosedWindow, tally: dict) -> None:
    """Window `w`'s probe_other, in its evidence and in its model rows, from `tally` (merged
    over every partition): the group times the share of the source's known probes nobody
    answered over ALL partitions, evidence.src_measures' arithmetic over the whole window, so
    the model and the decision read the replay's value. At close a partition had only the
    probes towards its own destinations (a monitor's dead targets alone read "all
    unanswered"); from a partial view the decision and the model read 0 instead
    (DstPartition._hold)."""
    changed: dict[str, float] = {}
    for s, (probes, quiet, _) in tally.items():
        g, here = w.groups.get(s), w.evidence.src.get(s)
        if g is None or here is None or not probes:
            continue
        v = g * quiet / probes
        if v != here[_PROBE_OTHER]:
            here[_PROBE_OTHER] = v
            changed[s] = v
    _write_rows(w, changed)


def _write_rows(w: ClosedWindow, values: dict[str, float]) -> None:
    """Source -> probe_other `values` written into the model rows of `w`'s flows from them."""
    if values:
        rows = [i for i, k in enumerate(w.keys) if k[0] in values]
        w.matrix[rows, _PROBE_OTHER_COL] = [values[w.keys[i][0]] for i in rows]


def _live_min(upto: list[int], heard: list[float], max_wait_s: float) -> int | None:
    """The lowest of `upto` among the entries heard within `max_wait_s` of the newest one
    heard (None: none)."""
    newest = max(heard)
    alive = [u for u, h in zip(upto, heard) if newest - h < max_wait_s]
    return min(alive) if alive else None


@dataclass
class _Flows:
    """A window's flow entries from all its chunks, in chunk order: `rows` (FLOW_DTYPE; its
    index fields are per chunk), addresses and node as text, the shipped source features
    (float64, SRC_AT..OWN_AT of an entry) and each source's own measures (its first entry's)."""
    rows: np.ndarray
    src: list[str]
    dst: list[str]
    node: list[str]
    shipped: np.ndarray
    own: dict[str, list]


_NO_HASH = np.zeros(0, dtype=np.uint64)
_PROBE_OTHER = SRC_MEASURES.index("probe_other")
_PROBE_OTHER_COL = FEATURE_NAMES.index("src_h_probe_other")  # its column in the model rows
_NO_SRC = [0.0] * len(SRC_MEASURES)
_OWN = OWN_AT - SRC_AT  # where a feature row's own evidence measures start


def _flows(tables) -> _Flows | None:
    """The entries of FlowTables `tables` as one _Flows (None if there are none)."""
    rows, src, dst, node, shipped, own = [], [], [], [], [], {}
    for t in tables:
        r = t.rows
        a = np.array(t.addresses, dtype=object)
        s = a[r["src"]].tolist()
        src += s
        dst += a[r["dst"]].tolist()
        node += np.array(t.nodes, dtype=object)[r["node"]].tolist()
        fi = r["feat"]
        block = np.array(t.features, dtype=np.float64).reshape(len(t.features), -1)
        shipped.append(block[fi, :_OWN])
        first = dict(zip(reversed(s), reversed(fi.tolist())))  # a source's first entry
        for x, i in first.items():
            if x not in own:
                own[x] = t.features[i][_OWN:]
        rows.append(r)
    if not rows:
        return None
    return _Flows(np.concatenate(rows), src, dst, node, np.concatenate(shipped), own)


# the measures the model sees (evidence.WindowEvidence.model_inputs): all but packets
_SRC_INPUTS, _DST_INPUTS = len(SRC_MEASURES) - 1, len(DST_MEASURES) - 1


def _matrix(keys: list[tuple], seed: np.ndarray, shipped: np.ndarray, ev: WindowEvidence,
            agg: dict[str, list]) -> np.ndarray:
    """The model rows of flows `keys`: their flow features (`seed`), the source features
    stage 1 shipped, the source's evidence inputs, then the destination's aggregate features
    (`agg`) and evidence inputs."""
    src_at = {s: i for i, s in enumerate(ev.src)}
    dst_at = {d: i for i, d in enumerate(agg)}
    n = len(keys)
    src_of = np.fromiter((src_at[k[0]] for k in keys), dtype=np.intp, count=n)
    dst_of = np.fromiter((dst_at[k[1]] for k in keys), dtype=np.intp, count=n)
    dst = np.concatenate([_table(agg.values()),
                          _table([ev.dst[d] for d in agg])[:, :_DST_INPUTS]], axis=1)
    return window_matrix(seed, shipped, src_of, _table(ev.src.values())[:, :_SRC_INPUTS],
                         dst_of, dst)


def _table(rows) -> np.ndarray:
    """Per-address lists of values (all of one length) as one float64 array, a row each."""
    rows = list(rows)
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)
