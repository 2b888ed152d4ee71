"""Issue 13, case 5, replayed on a live scorer worker: one packet event stamped an hour ahead (a
capture node with a wrong clock) on a `packets` partition, then normal traffic on the same
partition. Before the fix its watermark jumped an hour and most of the following events were
counted late (1,451 of 3,414). Now the event is refused and counted for its node, the node's
clock skew is a metric, and every other event is folded in and scored."""
from __future__ import annotations

import pytest

from services.records.packet import Packet
from tests.support.scorer_traffic import benign, window_ahead, with_seq
from tests.support.scorer_worker import produce_packets, start_worker, wait_for

pytestmark = pytest.mark.timeout(120)
HOUR = 3600 * 10**9


async def test_rel_one_future_stamped_event_costs_nobody_their_events(broker, model, tmp_path):
    w = await start_worker(broker, model, tmp_path)
    try:
        t0 = window_ahead()
        good = with_seq(benign(t0, 3.0, clients=40, seed=5))
        bad = Packet(t0 + HOUR, good[0].src, "10.99.0.10", 4000, 80, 6, 2, 60, node="bad-clock")
        await produce_packets(broker, [bad])  # first on the partition of good[0].src
        await produce_packets(broker, good)
        try:
            await wait_for(lambda: w.metric("xdpguard_scorer_events_total") >= len(good)
                           and w.metric("xdpguard_scorer_open_windows") == 0
                           and w.metric("xdpguard_scorer_flows_scored_total") > 0, 40,
                           "every event folded in and every window closed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; " + w.describe(
                "xdpguard_scorer_events_total", "xdpguard_scorer_late_events_total",
                "xdpguard_scorer_future_events_total", "xdpguard_scorer_open_windows")) from None
        assert w.metric("xdpguard_scorer_events_total") == len(good)
        assert w.metric("xdpguard_scorer_late_events_total") == 0
        assert w.metric("xdpguard_scorer_late_flows_total") == 0
        assert w.metric('xdpguard_scorer_future_events_total{node="bad-clock"}') == 1
        assert w.metric('xdpguard_scorer_node_clock_skew_seconds{node="bad-clock"}') > 3500
        assert abs(w.metric('xdpguard_scorer_node_clock_skew_seconds{node="node-a"}')) < 10
    finally:
        assert w.stop() == 0
