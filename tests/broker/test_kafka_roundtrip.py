"""A real broker: msgpack records produced with aiokafka are consumed through a consumer group."""
import asyncio

import msgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.wire.kafka import client_options


async def test_msgpack_records_roundtrip_through_a_consumer_group(broker, fresh_topic):
    sent = [{"v": 1, "seq": i, "src": "10.0.0.1", "len": 60 + i} for i in range(200)]
    producer = AIOKafkaProducer(**client_options(broker), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for rec in sent:
            await producer.send(fresh_topic, msgpack.packb(rec), key=str(rec["seq"] % 7).encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(fresh_topic, **client_options(broker), group_id=f"{fresh_topic}.g",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got = []
    try:
        async with asyncio.timeout(30):
            while len(got) < len(sent):
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    got.extend(msgpack.unpackb(r.value) for r in records)
        await consumer.commit()
        assert len(consumer.assignment()) == 4
    finally:
        await consumer.stop()
    assert sorted(got, key=lambda r: r["seq"]) == sent
