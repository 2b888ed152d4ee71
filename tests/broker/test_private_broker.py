"""The fault-test broker really stops and comes back with its data."""
import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.errors import KafkaUnavailable
from services.common.settings import load_common
from services.wire.topics import TopicSpec, ensure_topics, wait_ready


async def test_private_broker_stops_and_restarts_with_its_data(private_broker):
    common = load_common(kafka_bootstrap=private_broker.bootstrap)
    await ensure_topics(common, [TopicSpec("survivor", 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=private_broker.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait("survivor", b"before")
    finally:
        await producer.stop()

    await asyncio.to_thread(private_broker.stop)
    with pytest.raises(KafkaUnavailable):
        await wait_ready(common, timeout=2)
    await asyncio.to_thread(private_broker.start)

    consumer = AIOKafkaConsumer("survivor", bootstrap_servers=private_broker.bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        rec = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert rec.value == b"before"
