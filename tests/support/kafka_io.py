"""Produce to and read from the test broker directly (no service in between): raw records,
verdicts, and every packet event of a topic."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.common.settings import CommonSettings
from services.records.packet import Packet
from services.records.verdict import Verdict
from services.wire import codec
from services.wire.kafka import client_options
from services.wire.topics import PACKETS, VERDICTS


async def produce_raw(common: CommonSettings, topic: str, records) -> None:
    """Send (key, value) pairs to the full topic name `topic`, each acknowledged by all replicas;
    values up to twice codec.MAX_RECORD_BYTES are accepted by the client."""
    producer = AIOKafkaProducer(**client_options(common), acks="all",
                                max_request_size=codec.MAX_RECORD_BYTES * 2)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def publish(common: CommonSettings, verdicts: list[Verdict]) -> None:
    """Send verdicts to the `verdicts` topic, as the scorer does (no key)."""
    await produce_raw(common, common.topic(VERDICTS), [(None, codec.encode_verdict(v))
                                                       for v in verdicts])


async def consume_all(common: CommonSettings, expected: int, timeout: float = 30
                      ) -> list[tuple[int, Packet]]:
    """(partition, event) of the `packets` topic from the start, until `expected` events came,
    plus whatever else arrives within 0.5 s more (so a test sees events beyond those it sent).
    Raises TimeoutError after `timeout` seconds."""
    topic = common.topic(PACKETS)
    consumer = AIOKafkaConsumer(topic, **client_options(common), group_id=f"{topic}.check",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < expected:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        for p in codec.decode_packets(r.value):
                            got.append((tp.partition, p))
        extra = await consumer.getmany(timeout_ms=500)  # nothing beyond what was sent
        got.extend((tp.partition, p) for tp, rs in extra.items() for r in rs
                   for p in codec.decode_packets(r.value))
    finally:
        await consumer.stop()
    return got


async def read_topic(common: CommonSettings, topic: str) -> list[Packet]:
    """Every packet event in the full topic name `topic`, from the start to the end offsets
    taken now (at most 60 s)."""
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: list[Packet] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or
                                                       await _partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        async with asyncio.timeout(60):
            while remaining:
                for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                    for r in records:
                        got.extend(codec.decode_packets(r.value))
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return got


async def _partitions(consumer, topic):
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()
