"""Stage 2 of the scorer's windows, per intermediate `scorer-flows` partition (= per set of
DESTINATION addresses): flow chunks from every stage 1 partition (services/scorer/windows.py)
-> per-destination aggregates, then one feature row per flow (features.row order: its evidence
measures computed here, evidence.assess), scored in a batch by the caller, which passes the
window's evidence and the partition's escalation memory to detect.suggest
(scoring.verdicts_for). A window closes when every source partition's progress mark is past it.
Pure: no Kafka, no faust.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from services.detection.detect import Escalation
from services.detection.evidence import (DST_MEASURES, SRC_MEASURES, Answers, ProbeFates,
                                         WindowEvidence, assess)
from services.detection.features import FEATURE_NAMES

from .chunks import FLOW_LEN, HASH_AT, OWN_AT, SRC_AT, FlowChunk
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
    fates: ProbeFates | None = None   # the sources' probe fates (evidence.src_measures)
    _answers: Answers | None = None
    _answers_ws: int = -1

    def __post_init__(self) -> None:
        if not self.progress:
            self.progress = [-1] * self.num_sources
        if self.fates is None:
            self.fates = ProbeFates(self.width_ns)
        self.last_heard = [self.clock()] * self.num_sources

    def add(self, key: bytes, chunk: FlowChunk) -> bool:
        """Keep a chunk (a re-sent chunk replaces its first copy); False if it came too late."""
        if chunk.window_ns <= self.closed_upto:
            self.late += len(chunk.flows)
            return False
        self.windows.setdefault(chunk.window_ns, {})[key] = chunk
        return True

    def mark(self, src_partition: int, closed_upto: int) -> None:
        if 0 <= src_partition < self.num_sources:
            self.progress[src_partition] = max(self.progress[src_partition], closed_upto)
            self.last_heard[src_partition] = self.clock()

    def due(self) -> list[int]:
        if not self.windows:
            return []
        # Silence is judged against the newest mark heard, not the wall clock: when this worker
        # itself was stalled (a long scoring call on a busy CPU) every source looks silent to
        # the wall clock, and closing everything then would drop the flows still in flight.
        # A partition whose owner died falls behind the others, which keep marking.
        newest = max(self.last_heard)
        alive = [up for up, heard in zip(self.progress, self.last_heard)
                 if newest - heard < self.max_wait_s]
        done = min(alive) if alive else max(self.windows)
        return sorted(ws for ws in self.windows if ws <= done)

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
        flows: dict[tuple, dict] = {}
        nodes: dict[tuple, str] = {}
        entry: dict[tuple, list] = {}
        own: dict[str, list] = {}
        sent_flows, senders, addresses, columns = [], [], [], []
        entries = 0
        for chunk in chunks.values():
            for f in chunk.flows:
                key, st = tuple(f[:5]), f[5:12]
                flows[key] = flow_dict(key, st)
                nodes[key] = st[6]
                entry[key] = f  # a key's last entry counts (as for its flow state)
                if key[0] not in own:
                    own[key[0]] = f[OWN_AT:HASH_AT]
            if chunk.flows:  # every entry counts in its destination's aggregate
                columns.append(chunk.flow_columns())
                entries += len(chunk.flows)
            for h_flow, h_sender in chunk.sent:
                sent_flows.append(h_flow)
                if h_sender:
                    senders.append(h_sender)
            addresses += chunk.senders
        end = ws + self.width_ns
        prev = self._answers if self._answers_ws == ws - self.width_ns else None
        answers = Answers(addresses, sent_flows, senders, prev, hashed=True)
        self._answers, self._answers_ws = answers, ws
        keys = list(flows)
        ev = assess(keys, flows, answers, end, own, self.fates, ws, self.num_sources)
        cols = [tuple(chain.from_iterable(c[i] for c in columns)) for i in range(FLOW_LEN)] \
            if columns else []
        if not keys:
            matrix = np.empty((0, len(FEATURE_NAMES)), dtype=np.float64)
        else:
            agg, _ = agg_rows(cols[1], cols[0], cols[7], cols[8], cols[10], cols[4], cols[3],
                              cols[HASH_AT])
            if len(entry) < entries:  # a re-sent flow: its last entry makes its row
                cols = list(zip(*(entry[k] for k in keys)))
            matrix = _matrix(keys, cols, ev, agg)
        return ClosedWindow(ws, end, self.partition, keys, flows, nodes, matrix, list(chunks),
                            ev, self.memory)


# the measures the model sees (evidence.WindowEvidence.model_inputs): all but packets
_SRC_INPUTS, _DST_INPUTS = len(SRC_MEASURES) - 1, len(DST_MEASURES) - 1


def _matrix(keys: list[tuple], cols: list[tuple], ev: WindowEvidence,
            agg: dict[str, list]) -> np.ndarray:
    """The model rows of flows `keys` (`cols`: their chunk entries as columns): flow features,
    the source features stage 1 shipped, the source's evidence inputs, then the destination's
    aggregate features (`agg`) and evidence inputs."""
    seed = flow_feature_matrix(cols[5], cols[6], cols[7], cols[8], cols[9], cols[4], cols[2],
                               cols[3])
    shipped = np.array(cols[SRC_AT:OWN_AT], dtype=np.float64).reshape(OWN_AT - SRC_AT, -1).T
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
