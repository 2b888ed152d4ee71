"""The scorer's two window stages driven in-process (services/scorer/windows.py), no Kafka or
faust: packets split by source partition as the capture splits them, encoded and decoded as on
the wire, stage 1 closed, its flow chunks through the intermediate record format into stage 2,
every stage 2 window closed, the partitions' probe tallies exchanged and every window settled.
Time is a hand-moved clock."""
from __future__ import annotations

from services.scorer.chunks import FlowChunk
from services.scorer.dst_windows import DstPartition
from services.scorer.scoring import VerdictPolicy, score_windows, verdicts_for
from services.scorer.windows import SourcePartition
from services.wire.codec import decode_packet_columns
from services.wire.partition import source_partition
from tests.support.packet_records import encode_packets

T0 = 1_800_000_000 * 10**9   # a window boundary (ns), far from any real capture time
W = 10**9                     # window width (ns)


class Clock:
    """A monotonic clock (seconds) the test moves by hand: `clock.t += 1.0`."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run_stages(packets, n: int = 4, batch: int = 50, clock: Clock | None = None) -> list:
    """Closed stage 2 windows (dst_windows.ClosedWindow, in partition then time order) of `packets`
    over `n` packets partitions and `n` stage 2 partitions, fed `batch` events per record.

    After the events, the clock moves 100 s on so every watermark passes every window; only the
    partitions that got events report progress, as the worker counts a silent partition out once
    it has waited max_wait for it."""
    dsts, _ = _stage_1(packets, n, batch, clock or Clock())
    closed = {q: [dsts[q].close(ws) for ws in dsts[q].due()] for q in range(n)}
    exchange_tallies(dsts, closed)
    return [w for q in range(n) for w in dsts[q].settle()]


def _stage_1(packets, n: int, batch: int, clock: Clock) -> tuple[dict, list]:
    """Stage 2 partitions holding every flow chunk of `packets` with every source partition's
    progress past every window (module docstring), and the chunks (FlowChunk, as decoded)."""
    srcs = {p: SourcePartition(p, W, 0, clock) for p in range(n)}
    dsts = {q: DstPartition(q, W, n, 30.0, clock) for q in range(n)}
    hear_each_other(dsts)
    by_part: dict[int, list] = {}
    for pkt in packets:
        by_part.setdefault(source_partition(pkt, n), []).append(pkt)
    for p, pkts in by_part.items():
        for off, i in enumerate(range(0, len(pkts), batch)):
            srcs[p].add(off, decode_packet_columns(encode_packets(pkts[i:i + batch])))
    clock.t += 100.0
    chunks = []
    for p in by_part:
        part = srcs[p]
        for ws in part.due():
            for c in part.close(ws, n)[0]:
                c2 = FlowChunk.decode(c.encode())
                dsts[c2.dst_partition].add(c2.key(), c2)
                chunks.append(c2)
            part.sent(ws)
        for q in dsts:
            dsts[q].mark(p, part.progress(0))
    return dsts, chunks


def run_stages_restoring(packets, n: int, restored: int, windows: int, batch: int = 50) -> list:
    """run_stages, but stage 2 partition `restored`'s owner dies with its last `windows` windows
    closed and waiting to settle, after it had read the other partitions' tally marks of them:
    the next owner restores it (fresh state, those windows' chunks from the table), closes them
    again and hears the others first past them (their tallies are not read again)."""
    clock = Clock()
    dsts, chunks = _stage_1(packets, n, batch, clock)
    cut = sorted({c.window_ns for c in chunks})[-windows]
    closed = {q: [dsts[q].close(ws) for ws in dsts[q].due()] for q in range(n)}
    exchange_tallies(dsts, closed)
    out = [w for q in range(n) for w in dsts[q].settle() if q != restored or w.window_ns < cut]
    new = DstPartition(restored, W, n, 30.0, clock)
    new.closed_upto = cut - W
    for c in chunks:
        if c.dst_partition == restored and c.window_ns >= cut:
            new.add(c.key(), c)
    new.progress = list(dsts[restored].progress)
    reclosed = {restored: [new.close(ws) for ws in new.due()]}
    others = {q: part for q, part in dsts.items() if q != restored}
    exchange_tallies({**others, restored: new}, reclosed)
    return out + new.settle()


def hear_each_other(dsts: dict) -> None:
    """Each stage 2 partition tells every other it has closed nothing yet (tally marks repeat
    from a partition's start): a peer later past a window without its tally of it had none, it
    did not miss it."""
    for q in dsts:
        for other in dsts.values():
            other.peer(q, -1, {})


def exchange_tallies(dsts: dict, closed: dict) -> None:
    """What every stage 2 partition's tally marks tell every other (collect.CollectStage sends
    them over the flows topic): how far it has closed and its closed windows' probe tallies."""
    for q, part in dsts.items():
        tallies = {w.window_ns: w.evidence.tally for w in closed.get(q, []) if w.evidence.tally}
        for other in dsts.values():
            other.peer(q, part.through(), tallies)


def scorer_rules(windows, detector) -> set:
    """(window start, rule key, rate, expiry) of every verdict the scorer gives `windows`
    (closed stage 2 windows with rows) with `detector`'s model, threshold and the default
    policy: what the tests compare with the replay's suggestions."""
    out = set()
    for w, scores in zip(windows, score_windows(detector, windows)):
        for v in verdicts_for(w, scores, threshold=detector.threshold, model_id=detector.model_id,
                              policy=VerdictPolicy()):
            out.add((w.window_ns, v.rule.key(), v.rule.rate_pps, v.rule.expires_ns))
    return out
