"""A scorer worker's faust app and Scorer built without a broker (faust objects only: nothing
is started), for unit tests of the wiring, the tables and the faust internals."""
from __future__ import annotations

import time

from services.common.settings import CommonSettings
from services.scorer.app import create_app
from services.scorer.scoring import VerdictPolicy
from services.scorer.service import Scorer
from services.scorer.settings import ScorerSettings


class StubDetector:
    """The detector attributes the wiring reads (no model: nothing gets scored)."""
    threshold, wide_threshold, model_id, horizon_windows = 0.5, 0.5, "test", 10
    outage_memory_s = 3600.0


def scorer_without_broker() -> Scorer:
    """A Scorer with default settings; its app is `.app`, its topics and tables `.topics`. Its
    models feed counts as having read the `models` topic (empty) to its end now, so stage 2
    closes windows as a running worker's does."""
    _, scorer = create_app(ScorerSettings(), CommonSettings(), StubDetector(), VerdictPolicy())
    scorer.models.known_until_ns = time.time_ns()
    return scorer


def collect_stage(monkeypatch):
    """A worker's CollectStage without a broker: what it sends to the flows topic in `.sent`
    (key, partition, value), dead letters in `.dead_sent`; `.calls["fail"] = k` makes the
    k-th flows send raise."""
    sc = scorer_without_broker()
    sent, dead, calls = [], [], {"n": 0}

    async def send_flows(key, value, partition):
        calls["n"] += 1
        if calls.get("fail") == calls["n"]:
            raise RuntimeError("producer buffer full")
        sent.append((key, partition, value))

    async def send_dead(value, **_):
        dead.append(value)

    async def changelog(key, value, partition):
        pass
    monkeypatch.setattr(sc.topics.flows, "send", send_flows)
    monkeypatch.setattr(sc.topics.dead, "send", send_dead)
    monkeypatch.setattr(sc.topics.dst_table.changelog_topic, "send", changelog)
    sc.collect.sent, sc.collect.dead_sent, sc.collect.calls = sent, dead, calls
    return sc.collect
