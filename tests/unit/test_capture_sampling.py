"""The capture raises the sampling rate under loss or backlog, up to its maximum, and lowers it
back to the base only after a run of calm rounds."""
from services.capture.sampling import SamplingController


def test_rate_doubles_on_loss_or_backlog_and_stops_at_the_maximum():
    c = SamplingController(base=1, maximum=8)
    assert c.update(backlog=0, bound=100, lost=5) == 2
    assert c.update(backlog=60, bound=100, lost=0) == 4
    assert c.update(backlog=0, bound=100, lost=1) == 8
    assert c.update(backlog=90, bound=100, lost=1) is None and c.rate == 8


def test_rate_falls_back_to_the_base_only_after_calm_rounds():
    c = SamplingController(base=2, maximum=64, calm_rounds=3, rate=16)
    assert [c.update(0, 100, 0) for _ in range(3)] == [None, None, 8]
    assert c.update(20, 100, 0) is None            # between the marks: the calm run restarts
    assert [c.update(0, 100, 0) for _ in range(6)] == [None, None, 4, None, None, 2]
    assert [c.update(0, 100, 0) for _ in range(6)] == [None] * 6 and c.rate == 2
