"""A verdict's reason as the scorer writes it (issue 14, item 5): the scorer's stage 2 window
carries flows and per-destination aggregates but no per-source ones, and a source block's
reason printed `3000 anomalous flows [] (score ...)`. An aggregate that is not known is left
out, not shown as empty brackets."""
import re

from services.detection.features import WindowState
from services.records.packet import Packet
from services.records.rules import Scope
from services.scorer.scoring import VerdictPolicy, verdicts_for
from services.scorer.windows import ClosedWindow


def closed(pkts) -> ClosedWindow:
    w = WindowState(10**9)
    for p in pkts:
        w.add(p)
    keys, rows = w.rows()
    return ClosedWindow(window_ns=10**9, end_ns=2 * 10**9, partition=0, keys=keys,
                        flows=w.flows, nodes={}, dsts=w.dsts, rows=rows, chunk_keys=[])


def test_a_source_block_reason_has_no_empty_brackets():
    win = closed([Packet(10**9 + i, "10.0.0.66", "10.0.0.1", 4444, p, 6, 0x02, 58)
                  for i, p in enumerate(range(20, 60))])
    (v,) = verdicts_for(win, [0.9] * len(win.keys), threshold=0.5, model_id="m",
                        policy=VerdictPolicy())
    assert v.rule.scope is Scope.SRC_PREFIX
    assert "40 anomalous flows" in v.reason and "[]" not in v.reason, v.reason


def test_a_flood_limit_reason_keeps_its_destination_aggregate():
    win = closed([Packet(10**9 + i, f"198.51.{i // 200}.{i % 200}", "10.10.10.10", 1000 + i, 80,
                         6, 0x02, 60) for i in range(100)])
    (v,) = verdicts_for(win, [1.0] * len(win.keys), threshold=0.5, model_id="m",
                        policy=VerdictPolicy())
    assert v.rule.scope is Scope.DST_LIMIT
    assert re.search(r" \[\d+ flows, \d+ pkts", v.reason) and "[]" not in v.reason, v.reason
