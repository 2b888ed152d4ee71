"""Every faust/mode internal the scorer relies on is still where services/scorer/
faust_internals.py reaches for it, and no other scorer module reaches for one. A faust or mode
upgrade that moves one fails here, naming it, instead of quietly degrading the worker (most
readers fall back at run time: a moved `last_poll_timestamp` would only show as late events)."""
from __future__ import annotations

import ast
from pathlib import Path

import mode
import pytest
from faust.types import TP

from services.scorer import faust_internals
from tests.support.scorer_app import scorer_without_broker

SCORER = Path(faust_internals.__file__).parent


@pytest.fixture
def scorer():
    return scorer_without_broker()


@pytest.mark.parametrize("seam", faust_internals.SEAMS, ids=lambda s: s.path)
def test_each_faust_internal_is_where_the_scorer_reaches_for_it(scorer, seam):
    problem = faust_internals.check(seam, scorer.app, scorer.topics.src_table)
    assert problem is None, (f"faust/mode moved {problem}: update services/scorer/"
                             "faust_internals.py (and docs/scorer.md where a rule relies on it)")


def test_a_moved_internal_is_named(scorer, monkeypatch):
    monkeypatch.delattr(mode.Worker, "_signal_stop_time")
    monkeypatch.delattr(scorer.app.consumer, "_thread")
    moved = faust_internals.moved(scorer.app, scorer.topics.src_table)
    assert moved[0] == "mode.Worker._signal_stop_time"
    assert moved[1].startswith("app.consumer._thread._ensure_consumer (AttributeError: ")
    assert len(moved) == 2


class _AIOKafka:
    """Stands in for the aiokafka consumer faust's consumer thread holds once started."""
    in_transaction = False

    def highwater(self, tp):
        return 42

    def last_poll_timestamp(self, tp):
        return 1_700_000_000_123

    def __init__(self, fetcher=None) -> None:
        self._fetcher, self._fetch_max_wait_ms = fetcher, 1500


class _Fetcher:
    _fetch_max_wait_ms = 1500


def test_the_consumer_readers_go_through_faust_own_consumer_thread(scorer, monkeypatch):
    app, tp = scorer.app, TP("p.packets", 3)
    assert faust_internals.last_poll_ns(app, tp) is None  # not started: no bound, no crash
    monkeypatch.setattr(app.consumer._thread, "_consumer", _AIOKafka())
    assert faust_internals.last_poll_ns(app, tp) == 1_700_000_000_123_000_000
    assert faust_internals.highwater(app, tp) == 42


def test_the_fetch_wait_is_set_on_the_running_consumers_fetcher(scorer, monkeypatch):
    app = scorer.app
    assert faust_internals.fetch_wait(app, 0.1) is False  # not started: call again later
    monkeypatch.setattr(app.consumer._thread, "_consumer", _AIOKafka())
    assert faust_internals.fetch_wait(app, 0.1) is False  # started, no fetcher yet
    consumer = _AIOKafka(_Fetcher())
    monkeypatch.setattr(app.consumer._thread, "_consumer", consumer)
    assert faust_internals.fetch_wait(app, 0.1) is True
    assert consumer._fetcher._fetch_max_wait_ms == consumer._fetch_max_wait_ms == 100


def test_the_tick_sets_the_fetch_wait_once_the_consumer_runs(scorer, monkeypatch):
    import asyncio
    calls = []
    monkeypatch.setattr(faust_internals, "fetch_wait",
                        lambda app, s: calls.append(s) or len(calls) > 1)
    monkeypatch.setattr(faust_internals, "settling", lambda app: True)
    for _ in range(3):
        asyncio.run(scorer.tick())
    assert calls == [scorer.s.fetch_wait_s] * 2 and scorer.fetch_wait_set


def _guarded() -> set[str]:
    return {a for seam in faust_internals.SEAMS for a in seam.attrs}


def test_no_other_scorer_module_reaches_for_a_faust_internal():
    offenders = []
    for path in sorted(SCORER.glob("*.py")):
        if path.name == "faust_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in _guarded() and not (
                    isinstance(node.value, ast.Name) and node.value.id == "faust_internals"):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offenders == [], "faust/mode internals outside faust_internals.py: " + ", ".join(offenders)
