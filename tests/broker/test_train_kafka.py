"""`xdpguard train` source: packet events read back from a real broker for a time range."""
import time

from aiokafka import AIOKafkaProducer

from services.wire.kafka import client_options
from services.offline.kafka_packets import read_packets
from services.records.packet import Packet
from tests.support.packet_records import encode_packets


async def test_packets_topic_time_range_reads_only_that_range(broker, fresh_topic):
    now = time.time_ns()
    def batch(t0, n):
        return [Packet(t0 + i * 1000, "10.0.0.1", "10.0.0.2", 1000 + i, 80, 6, 2, 60) for i in range(n)]
    old, mid, new = batch(now - 100 * 10**9, 5), batch(now, 7), batch(now + 100 * 10**9, 3)
    producer = AIOKafkaProducer(**client_options(broker), acks="all")
    await producer.start()
    try:
        for part in (old, mid, new):
            await producer.send_and_wait(fresh_topic, encode_packets(part), partition=1,
                                         timestamp_ms=part[0].ts_ns // 10**6)
        await producer.send_and_wait(fresh_topic, b"\x00garbage", partition=1,
                                     timestamp_ms=now // 10**6)
    finally:
        await producer.stop()
    got = await read_packets(broker, now - 10 * 10**9, now + 10 * 10**9, topic=fresh_topic)
    assert [p.sport for p in got.packets] == [p.sport for p in mid]
    assert got.undecodable == 1 and not got.truncated
    capped = await read_packets(broker, now - 200 * 10**9, now + 200 * 10**9, topic=fresh_topic,
                                max_packets=3)
    assert capped.truncated and len(capped.packets) > 3  # stops after the poll that passed it


async def test_train_verb_fits_a_model_from_the_packets_topic(broker, tmp_path, monkeypatch):
    import asyncio
    from datetime import datetime, timezone

    from services.detection.model import load_model
    from services.wire.topics import PACKETS, TopicSpec, ensure_topics
    from services.manager.cli import main

    topic = broker.topic(PACKETS)
    await ensure_topics(broker, [TopicSpec(topic, 2, 1)])
    t0 = time.time_ns() - 60 * 10**9
    pk = [Packet(t0 + w * 10**9 + i * 10**6, f"10.0.{w}.{i % 7}", "10.1.0.1", 30000 + i, 443, 6,
                 0x10, 60 + i) for w in range(30) for i in range(12)]
    producer = AIOKafkaProducer(**client_options(broker), acks="all")
    await producer.start()
    try:
        for i in range(0, len(pk), 40):
            part = pk[i:i + 40]
            await producer.send_and_wait(topic, encode_packets(part), partition=0,
                                         timestamp_ms=part[0].ts_ns // 10**6)
    finally:
        await producer.stop()
    monkeypatch.setenv("XDPGUARD_TOPIC_PREFIX", broker.topic_prefix)
    iso = lambda ns: datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()
    out = tmp_path / "k.joblib"
    rc = await asyncio.to_thread(main, ["train", "--kafka-from", iso(t0 - 10**9), "--kafka-to",
                                        iso(t0 + 40 * 10**9), "--train-frac", "1", "--trees", "20",
                                        "--out", str(out)])
    assert rc == 0
    rc = await asyncio.to_thread(main, ["train", "--kafka-from", iso(t0 - 10**9), "--kafka-to",
                                        iso(t0 + 40 * 10**9), "--max-packets", "100",
                                        "--out", str(tmp_path / "no.joblib")])
    assert rc != 0 and not (tmp_path / "no.joblib").exists()
    det = load_model(out)
    assert det.meta["training"]["captures"][0]["name"] == "kafka:packets"
    assert det.meta["training"]["captures"][0]["packets"] == len(pk)
