"""The scorer creates every topic it needs (shared, repartition, changelogs, leader) before its
worker joins the group, with faust's partition counts and configs; a stale internal topic with
the wrong partition count is one clear error. Nobody has to pre-create `scorer-flows`."""
from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.common.errors import ConfigError
from services.wire.kafka import client_options
from services.wire.topics import DEADLETTER, PACKETS, VERDICTS, TopicSpec, ensure_topics, list_topics
from services.scorer.app import create_app
from services.scorer.topics import ensure_scorer_topics, internal_topic_specs
from services.scorer.scoring import VerdictPolicy
from services.scorer.settings import ScorerSettings
from tests.support.scorer_traffic import benign, syn_flood, window_ahead, with_seq
from tests.support.scorer_worker import produce_packets, start_worker, wait_for

pytestmark = pytest.mark.timeout(90)


class _D:
    threshold, wide_threshold, model_id = 0.5, 0.5, "t"


async def _describe(common, names):
    admin = AIOKafkaAdminClient(**client_options(common))
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def test_every_internal_topic_exists_before_the_worker_starts(broker):
    app, scorer = create_app(ScorerSettings(), broker, _D(), VerdictPolicy())
    await ensure_scorer_topics(broker, app, scorer)
    names = set(await list_topics(broker))
    p = broker.topic_prefix
    internal = {f"{p}xdpguard-scorer-scorer-flows", f"{p}xdpguard-scorer-src-records-changelog",
                f"{p}xdpguard-scorer-dst-chunks-changelog", f"{p}xdpguard-scorer-__assignor-__leader"}
    assert internal | {broker.topic(t) for t in (PACKETS, VERDICTS, DEADLETTER)} <= names
    parts = await _describe(broker, sorted(internal))
    n = broker.packets_partitions
    assert parts == {f"{p}xdpguard-scorer-scorer-flows": n, f"{p}xdpguard-scorer-src-records-changelog": n,
                     f"{p}xdpguard-scorer-dst-chunks-changelog": n,
                     f"{p}xdpguard-scorer-__assignor-__leader": 1}
    specs = {t.name: t for t in internal_topic_specs(app, scorer)}
    assert specs[f"{p}xdpguard-scorer-src-records-changelog"].config["cleanup.policy"] == "compact"
    assert await ensure_scorer_topics(broker, app, scorer) == []  # idempotent


async def test_a_stale_internal_topic_with_the_wrong_partition_count_is_refused(broker):
    app, scorer = create_app(ScorerSettings(), broker, _D(), VerdictPolicy())
    await ensure_topics(broker, [TopicSpec(scorer.topics.flows.get_topic_name(), 1, 1)])
    with pytest.raises(ConfigError, match="scorer-flows has 1 partitions, needs 8"):
        await ensure_scorer_topics(broker, app, scorer)


async def test_a_worker_on_fresh_topics_scores_without_a_missing_topic(broker, model, tmp_path):
    w = await start_worker(broker, model, tmp_path, name="fresh")  # no topic pre-created but packets'
    try:
        t0 = window_ahead()
        await produce_packets(broker, with_seq(benign(t0, 2, clients=5) + syn_flood(t0, 1, pps=500)))
        await wait_for(lambda: w.metric("xdpguard_scorer_flows_scored_total"), 30, "flows scored (stage 2)")
    finally:
        assert w.stop() == 0
    assert "Ignoring missing topic" not in (tmp_path / "fresh.log").read_text()
