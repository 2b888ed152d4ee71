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


class _Owner:
    """faust's Consumer as the consumer thread sees it: flow and the live active set."""

    def __init__(self, live: set, flow_active: bool = True, buffered=()) -> None:
        self._active_partitions, self.flow_active = live, flow_active
        self._buffered_partitions = set(buffered)


class _Thread:
    def __init__(self, owner: _Owner) -> None:
        self.consumer = owner


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Subscriptions:
    import contextlib

    @contextlib.contextmanager
    def fetch_context(self):
        yield


class _DrainingFetcher:
    """aiokafka's Fetcher: fetched_records returns `drained` and first runs `meanwhile` (what
    the main thread does while the call waits for a fetch)."""
    _closed = False

    def __init__(self, drained: dict, meanwhile=lambda: None) -> None:
        self._subscriptions, self.drained, self.meanwhile, self.asked = _Subscriptions(), drained, meanwhile, []

    async def fetched_records(self, partitions, timeout=0, max_records=None):
        self.asked.append(partitions)
        self.meanwhile()
        return dict(self.drained)


class _SeekingConsumer:
    _closed = False

    def __init__(self, fetcher) -> None:
        self._fetcher, self.seeks = fetcher, []

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))


def _fetch(owner, fetcher, live):
    import asyncio
    consumer = _SeekingConsumer(fetcher)
    got = asyncio.run(faust_internals._guarded_fetch_records(_Thread(owner), consumer, live,
                                                             timeout=1.0, max_records=10))
    return got, consumer.seeks


def test_the_fetch_guard_asks_aiokafka_for_a_snapshot_and_nothing_for_an_empty_set():
    a, b = TP("p.packets", 0), TP("p.src-changelog", 0)
    live = {a}
    fetcher = _DrainingFetcher({a: [_Record(3)]})
    got, seeks = _fetch(_Owner(live), fetcher, live)
    assert got == fetcher.drained and seeks == []
    assert fetcher.asked == [{a}] and fetcher.asked[0] is not live  # a copy, not the live set
    live.clear()  # paused by the main thread: aiokafka would drain EVERY partition for this
    empty = _DrainingFetcher({b: [_Record(0)]})
    assert _fetch(_Owner(live), empty, live) == ({}, []) and empty.asked == []


def test_records_the_worker_would_drop_are_given_back_to_the_fetcher():
    """The issue 17 race: while the call waits, the main thread pauses the partitions (a
    rebalance) or stops the flow; what was drained for them is sought back to its first
    record, not handed to a main thread that drops it."""
    a, b = TP("p.packets", 0), TP("p.src-changelog", 5)
    live = {a, b}
    fetcher = _DrainingFetcher({a: [_Record(7), _Record(8)], b: [_Record(0), _Record(1)]},
                               meanwhile=lambda: live.discard(b))
    got, seeks = _fetch(_Owner(live), fetcher, live)
    assert list(got) == [a] and seeks == [(b, 0)]
    owner = _Owner({a, b})
    stops = _DrainingFetcher({a: [_Record(7)], b: [_Record(2)]},
                             meanwhile=lambda: setattr(owner, "flow_active", False))
    got, seeks = _fetch(owner, stops, owner._active_partitions)
    assert got == {} and sorted(seeks, key=str) == sorted([(a, 7), (b, 2)], key=str)


def test_the_fetch_guard_is_installed_on_faust_consumer_thread_by_the_app(scorer):
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    assert AIOKafkaConsumerThread._fetch_records is faust_internals._guarded_fetch_records
    assert faust_internals._ORIGINAL_FETCH_RECORDS is not None  # faust's, probed by the seam


def test_partitions_faust_set_aside_for_a_full_buffer_are_still_delivered():
    """faust's getmany also yields partitions it took out of the active set while their stream
    buffer was full (`_buffered_partitions`): the guard keeps those too."""
    a = TP("p.scorer-flows", 2)
    fetcher = _DrainingFetcher({a: [_Record(4)]}, meanwhile=lambda: live.discard(a))
    live = {a}
    got, seeks = _fetch(_Owner(live, buffered={a}), fetcher, live)
    assert got == {a: fetcher.drained[a]} and seeks == []
