"""`xdpguard learn --kafka-from/--kafka-to`: a site model from a time range of a real broker's
packets topic, validated and written; traffic outside the range is not learnt."""
import asyncio
import json
import time
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer

from services.manager.cli import main
from services.wire.kafka import client_options
from services.wire.topics import PACKETS, TopicSpec, ensure_topics
from tests.support import synthetic_traffic as S
from tests.support.packet_records import encode_packets
from tests.support.site_baseline import make_baseline


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()


async def test_learn_builds_a_validated_site_model_from_a_topic_range(broker, tmp_path, monkeypatch):
    topic = broker.topic(PACKETS)
    await ensure_topics(broker, [TopicSpec(topic, 2, 1)])
    t0 = time.time_ns() - 200 * 10**9
    before = S.p2p_node(t0 - 100 * 10**9, 20)          # outside the range
    site = S.p2p_node(t0, 60)
    producer = AIOKafkaProducer(**client_options(broker), acks="all")
    await producer.start()
    try:
        for pk in (before, site):
            for i in range(0, len(pk), 200):
                part = pk[i:i + 200]
                await producer.send_and_wait(topic, encode_packets(part), partition=i // 200 % 2,
                                             timestamp_ms=part[0].ts_ns // 10**6)
    finally:
        await producer.stop()
    model = await asyncio.to_thread(make_baseline, tmp_path, t0)
    monkeypatch.setenv("XDPGUARD_TOPIC_PREFIX", broker.topic_prefix)
    out = tmp_path / "site.joblib"
    rc = await asyncio.to_thread(main, [
        "learn", "--kafka-from", _iso(t0 - 10**9), "--kafka-to", _iso(t0 + 61 * 10**9),
        "--baseline-model", str(model), "--sustain", "5", "--trees", "50", "--out", str(out)])
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    learnt = [c for c in meta["training"]["captures"] if c["name"] == "site:kafka:packets"]
    held = meta["training"]["site"]["validation"]["held_back"]["packets"]
    assert learnt[0]["packets"] + held == len(site)
    assert meta["training"]["site"]["validation"]["failures"] == []
