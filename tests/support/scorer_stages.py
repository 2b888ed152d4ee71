"""The scorer's two window stages driven in-process (services/scorer/windows.py), no Kafka or
faust: packets split by source partition as the capture splits them, encoded and decoded as on
the wire, stage 1 closed, its flow chunks through the intermediate record format into stage 2,
every stage 2 window closed, the partitions' probe tallies exchanged and every window settled.
Time is a hand-moved clock."""
from __future__ import annotations

from services.scorer.chunks import FlowChunk
from services.scorer.dst_windows import DstPartition
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
    clock = clock or Clock()
    srcs = {p: SourcePartition(p, W, 0, clock) for p in range(n)}
    dsts = {q: DstPartition(q, W, n, 30.0, clock) for q in range(n)}
    by_part: dict[int, list] = {}
    for pkt in packets:
        by_part.setdefault(source_partition(pkt, n), []).append(pkt)
    for p, pkts in by_part.items():
        for off, i in enumerate(range(0, len(pkts), batch)):
            srcs[p].add(off, decode_packet_columns(encode_packets(pkts[i:i + batch])))
    clock.t += 100.0
    for p in by_part:
        part = srcs[p]
        for ws in part.due():
            for c in part.close(ws, n)[0]:
                c2 = FlowChunk.decode(c.encode())
                dsts[c2.dst_partition].add(c2.key(), c2)
            part.sent(ws)
        for q in dsts:
            dsts[q].mark(p, part.progress(0))
    closed = {q: [dsts[q].close(ws) for ws in dsts[q].due()] for q in range(n)}
    exchange_tallies(dsts, closed)
    return [w for q in range(n) for w in dsts[q].settle()]


def exchange_tallies(dsts: dict, closed: dict) -> None:
    """What every stage 2 partition's tally marks tell every other (collect.CollectStage sends
    them over the flows topic): how far it has closed and its closed windows' probe tallies."""
    for q, part in dsts.items():
        tallies = {w.window_ns: w.evidence.tally for w in closed.get(q, []) if w.evidence.tally}
        for other in dsts.values():
            if other.peers_first[q] is None:  # running partitions hear each other from the start
                other.peer(q, -1, {})
            other.peer(q, part.through(), tallies)
