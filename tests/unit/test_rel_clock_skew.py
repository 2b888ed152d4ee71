"""One capture node's wrong clock must not cost the other nodes their events (issue 13, case 5:
one packet event stamped an hour ahead made stage 1's watermark jump, and 1,800 of the next 2,500
correctly stamped events were counted late). Stage 1 windows (services/scorer/windows.py) bound
event time by this host's clock: events stamped more than max_future_ns ahead are refused and
counted per node, the watermark and the announced progress never pass the host's clock, and each
node's skew is noted. tests/broker/test_rel_scorer_clock_skew.py replays the report on a live
worker."""
from __future__ import annotations

from dataclasses import replace

from services.records.packet import Packet
from services.scorer.windows import SourcePartition
from services.wire.codec import decode_packet_columns
from tests.support.packet_records import encode_packets
from tests.support.scorer_stages import T0, W, Clock
from tests.support.scorer_traffic import benign, with_seq

HOUR = 3600 * 10**9
BOUND = 10 * 10**9


class Wall:
    """This host's clock (Unix epoch ns), moved by hand."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def partition(wall: Wall, clock: Clock) -> SourcePartition:
    return SourcePartition(0, W, W // 10, clock, wall=wall, max_future_ns=BOUND)


def one(ts: int, node: str, src: str = "10.1.0.1") -> bytes:
    return encode_packets([Packet(ts, src, "10.99.0.10", 4000, 80, 6, 2, 60, node=node)])


def feed_live(part: SourcePartition, packets: list[Packet], wall: Wall, clock: Clock,
              first_offset: int = 1, batch: int = 50, skew: dict[str, int] | None = None) -> int:
    """Feed `packets` (in real time order) in batches that arrive 20 ms after their newest
    event really happened (its stamp less its node's `skew`), the wall and monotonic clocks
    moving along, closing windows as they fall due. Returns the events accepted."""
    accepted, skew = 0, skew or {}
    for i in range(0, len(packets), batch):
        chunk = packets[i:i + batch]
        arrival = max(p.ts_ns - skew.get(p.node, 0) for p in chunk) + 20 * 10**6
        if arrival > wall.ns:
            clock.t += (arrival - wall.ns) / 1e9
            wall.ns = arrival
        accepted += part.add(first_offset + i // batch, decode_packet_columns(encode_packets(chunk)))
        for ws in part.due():
            part.close(ws, 4)
            part.sent(ws)
    return accepted


def good_traffic(start: int) -> list[Packet]:
    packets = sorted(benign(start, 5.0, clients=40, seed=7), key=lambda p: p.ts_ns)
    assert len(packets) >= 2500
    return with_seq(packets)


def test_rel_an_event_an_hour_ahead_is_refused_and_costs_no_other_event():
    wall, clock = Wall(T0), Clock()
    part = partition(wall, clock)
    assert part.add(0, decode_packet_columns(one(T0 + HOUR, "bad-clock"))) == 0
    assert part.future == {"bad-clock": 1} and part.skew_ns["bad-clock"] == HOUR
    assert part.watermark() <= wall()
    good = good_traffic(T0 + W // 10)
    assert feed_live(part, good, wall, clock) == len(good)
    assert part.late == 0


def test_rel_a_node_ahead_within_the_bound_closes_no_window_under_the_others():
    """5 s ahead is accepted (its windows close when this host's clock gets there), but
    neither the watermark nor the announced progress may run ahead with it."""
    wall, clock = Wall(T0), Clock()
    part = partition(wall, clock)
    good = good_traffic(T0 + W // 10)
    ahead = [replace(p, ts_ns=p.ts_ns + 5 * 10**9, node="fast-clock") for p in good[::10]]
    mixed = sorted(good + ahead, key=lambda p: (p.ts_ns - 5 * 10**9 if p.node == "fast-clock"
                                                 else p.ts_ns))
    assert feed_live(part, mixed, wall, clock, skew={"fast-clock": 5 * 10**9}) == len(mixed)
    assert part.late == 0 and part.future == {}
    assert part.skew_ns["fast-clock"] >= 4 * 10**9
    assert part.watermark() <= wall()
    assert part.progress(wall()) <= wall() - W  # never vouches for a window not yet passed


def test_rel_a_node_behind_loses_only_its_own_late_events():
    wall, clock = Wall(T0 + HOUR), Clock()
    part = partition(wall, clock)
    good = good_traffic(T0 + HOUR + W // 10)
    feed_live(part, good, wall, clock)
    late_before = part.late
    assert late_before == 0
    assert part.add(999, decode_packet_columns(one(T0, "slow-clock"))) == 0
    assert part.late == 1 and part.skew_ns["slow-clock"] < -HOUR + 10 * W


def test_rel_without_a_bound_the_report_still_reproduces():
    """The pure class without `wall` is the old behaviour (tests with events in another year):
    this documents the failure the bound prevents."""
    wall, clock = Wall(T0), Clock()
    part = SourcePartition(0, W, W // 10, clock)
    part.add(0, decode_packet_columns(one(T0 + HOUR, "bad-clock")))
    good = good_traffic(T0 + W // 10)
    accepted = feed_live(part, good, wall, clock)
    assert part.late == len(good) - accepted and part.late > 0.9 * len(good)
