"""The scorer's stop contract: the first SIGTERM is a clean stop (exit 0), the second forces.
A close-windows tick racing the stop (the producer already stopped: faust's NotReady) used to
crash the app, so the worker exited 1 on about one SIGTERM in four."""
from __future__ import annotations

import asyncio

import pytest
from faust.exceptions import NotReady

from services.common.settings import CommonSettings
from services.scorer import app as scorer_app
from services.scorer import faust_internals
from services.scorer.scoring import VerdictPolicy
from services.scorer.settings import ScorerSettings


class _Detector:
    threshold, wide_threshold, model_id = 0.5, 0.5, "test"


@pytest.fixture
def scorer():
    _, sc = scorer_app.create_app(ScorerSettings(), CommonSettings(), _Detector(), VerdictPolicy())
    return sc


def _raise_not_ready():
    async def tick():
        raise NotReady("Producer service not yet started")
    return tick


@pytest.mark.parametrize("body,timer", [("tick", "tick_safely"), ("repeat_marks", "marks_safely")])
def test_a_timer_racing_the_stop_is_not_a_crash(scorer, monkeypatch, body, timer):
    monkeypatch.setattr(scorer, body, _raise_not_ready())
    monkeypatch.setattr(type(scorer), "stopping", lambda self: self._fake_stop)
    scorer._fake_stop = False
    with pytest.raises(NotReady):  # a real failure while running still crashes the worker
        asyncio.run(getattr(scorer, timer)())
    calls = []

    async def tick():
        calls.append(1)
        scorer._fake_stop = True  # the stop begins during the tick ...
        raise NotReady("Producer service not yet started")  # ... and the producer is gone
    monkeypatch.setattr(scorer, body, tick)
    asyncio.run(getattr(scorer, timer)())
    asyncio.run(getattr(scorer, timer)())  # stopping: no tick at all
    assert calls == [1]


def test_the_worker_is_ours_and_a_second_signal_forces(monkeypatch):
    opts = scorer_app.faust_settings(ScorerSettings(), CommonSettings())
    assert opts["Worker"] is faust_internals.ScorerWorker
    exits, stops = [], []
    monkeypatch.setattr(faust_internals.os, "_exit", lambda code: exits.append(code))
    w = faust_internals.ScorerWorker.__new__(faust_internals.ScorerWorker)
    w._signal_stop_time = None
    monkeypatch.setattr(faust_internals.faust.Worker, "_on_sigterm",
                        lambda self: (stops.append(1), setattr(self, "_signal_stop_time", 1.0)))
    w._on_sigterm()
    assert stops == [1] and exits == []
    w._on_sigterm()
    assert exits == [1]
