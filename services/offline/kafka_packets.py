"""Read packet events from the Kafka `packets` topic for a time range (training source).

Offsets are looked up by record timestamp (`offsets_for_times`) on every partition, then read
until the partition's end offset or a record newer than `to_ns`; each record is decoded with
services.wire.codec.decode_packets (single event or micro-batch) and packets outside the
range are dropped. Undecodable records are counted, not fatal. The packets are held in memory
(about 300 bytes each as `Packet`s), so a read stops once it holds more than `max_packets`
and says so (`TopicRead.truncated`): the caller refuses rather than train on the first part of
a range, or exhaust a firewall host's memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from services.common.errors import KafkaUnavailable
from services.records.packet import Packet
from services.common.settings import CommonSettings
from services.wire.topics import topic_partitions


@dataclass
class TopicRead:
    packets: list[Packet] = field(default_factory=list)
    records: int = 0
    undecodable: int = 0
    truncated: bool = False  # stopped at max_packets: the range holds more


async def read_packets(common: CommonSettings, from_ns: int, to_ns: int, *,
                       topic: str | None = None, progress=None, idle_polls: int = 10,
                       max_packets: int | None = None) -> TopicRead:
    """Packets with `from_ns <= ts_ns <= to_ns`; gives up on a partition after `idle_polls`
    empty one-second polls (a broker that stopped answering mid-read), and on the whole read
    once it holds more than `max_packets` (`truncated` set; None: no limit)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from services.wire.codec import decode_packets
    from services.common.errors import DecodeError
    from services.wire.kafka import client_options, stop_quietly
    from services.wire.topics import PACKETS

    topic = topic or common.topic(PACKETS)
    out = TopicRead()
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(common))
    try:
        await consumer.start()
    except KafkaError as exc:
        await stop_quietly(consumer)
        raise KafkaUnavailable(f"cannot reach Kafka at {common.kafka_bootstrap}: {exc}") from None
    try:
        parts = [TopicPartition(topic, p) for p in await topic_partitions(common, topic)]
        if not parts:
            return out
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.offsets_for_times({tp: from_ns // 1_000_000 for tp in parts})
        todo = {}
        for tp in parts:
            off = starts.get(tp)
            if off is None or off.offset >= ends[tp]:
                continue
            consumer.seek(tp, off.offset)
            todo[tp] = ends[tp]
        idle = 0
        while todo and idle < idle_polls:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            idle = 0 if batch else idle + 1
            for tp, recs in batch.items():
                for rec in recs:
                    out.records += 1
                    if rec.timestamp * 1_000_000 > to_ns or rec.offset + 1 >= todo.get(tp, 0):
                        todo.pop(tp, None)
                    try:
                        pk = decode_packets(rec.value)
                    except DecodeError:
                        out.undecodable += 1
                        continue
                    out.packets.extend(p for p in pk if from_ns <= p.ts_ns <= to_ns)
                if progress:
                    progress(len(recs))
            if max_packets is not None and len(out.packets) > max_packets:
                out.truncated = True
                break
    finally:
        await stop_quietly(consumer)
    out.packets.sort(key=lambda p: p.ts_ns)
    return out
