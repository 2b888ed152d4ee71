"""A connection pool retrying a database that is down, seen at the database's host: source
`half_open` (half-open TCP flows to the source's busiest destination in a window) against its
floor of 64 (services/detection/bounds.py FLOORS). At the earlier floor of 20 the app host was
blocked, with every query it made once the database was back: the real-tool captures dbrefused
(30 psql workers retrying a refusing database every 1 s: 50.75% of its packets dropped) and
dbblackhole (a pool of 50 reconnecting to a blackholed one: 33.95%). A flood of SYNs from one
address above the floor is still blocked within 3 s."""
from __future__ import annotations

import pytest

from services.detection.bounds import FLOORS
from services.offline.replay import replay
from tests.support import synthetic_traffic as G
from tests.support.replay_checks import first_block_s, reasons_and_drops

pytestmark = pytest.mark.unit

T0 = 1_800_000_000 * 10**9 + 370_000_000  # windows do not line up with the traffic
S = 10**9


def _max_half_open(pk) -> int:
    """The most SYN-only packets of one source to one host in a window (a stand-in for the
    measure, so the benign cases below are shown to carry what the old floor counted)."""
    by: dict = {}
    for p in pk:
        if p.tcp_flags == G.SYN:
            k = ((p.ts_ns - T0) // S, p.src, p.dst)
            by[k] = by.get(k, 0) + 1
    return max(by.values())


@pytest.mark.parametrize("refused", [True, False])
def test_a_pool_of_50_retrying_a_database_that_is_down_loses_nothing(detector, refused):
    pk = G.db_pool_outage(T0, 45, workers=50, refused=refused)
    assert _max_half_open(pk) >= 20  # over the old floor: this case can fail
    assert reasons_and_drops(pk, detector) == ([], 0)


def test_the_shipped_model_carries_the_floor(detector):
    assert detector.evidence.bounds["src"]["half_open"] >= FLOORS["src"]["half_open"] == 64


@pytest.mark.parametrize("pps", [100, 2000])
def test_a_syn_flood_from_one_address_is_still_blocked_within_3_s(detector, pps):
    """hping3 -S -p 80 without --rand-source: one address, a new source port per SYN."""
    pk = [G._tcp(T0 + i * S // pps, "203.0.113.44", "10.0.0.10", 1024 + i % 60000, 80, G.SYN, 74)
          for i in range(10 * pps)]
    res = replay(pk, detector)
    first = first_block_s(pk, res.dropped)
    assert first is not None and first <= 3.0
    assert float(res.dropped.sum()) / len(pk) >= 0.7
