"""The worker's garbage collector set-up (service.tune_collector): start-up objects frozen, the
young generation's threshold raised, Python's ratios kept for the older ones, 0 = unchanged."""
import gc
import weakref

import pytest

from services.scorer.service import tune_collector
from services.scorer.settings import ScorerSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def collector():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_collector_freezes_start_up_and_raises_young_threshold(collector):
    gc.set_threshold(700, 10, 10)
    kept = [[i] for i in range(100)]  # alive at start-up: frozen with the rest
    tune_collector(ScorerSettings().gc_young)
    assert gc.get_threshold() == (50000, 10, 10)
    assert gc.get_freeze_count() >= len(kept)


def test_young_zero_keeps_pythons_thresholds(collector):
    gc.set_threshold(700, 10, 10)
    tune_collector(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() > 0


def test_cycles_are_still_collected(collector):
    tune_collector(1000)

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # a cycle: reference counting alone does not free it
    kept = [[] for _ in range(1500)]  # net new containers past the young threshold
    assert gone() is None and len(kept) == 1500
