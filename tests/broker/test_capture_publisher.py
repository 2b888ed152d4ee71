"""The capture's produce path against the real broker: contiguous per-node sequence numbers,
every event on its source's partition, and buffering while Kafka is unreachable (a client
bootstrapped at a port where nothing listens) that drains without gaps once Kafka is reachable."""
import asyncio

from aiokafka import AIOKafkaProducer

from services.capture.publisher import Publisher, default_producer
from services.wire.kafka import client_options
from services.records.packet import Packet
from services.wire.partition import source_partition
from services.wire.topics import PACKETS, ensure_topics
from tests.support.kafka_io import consume_all
from tests.support.services import free_port


def packets(n, start=0):
    return [Packet(ts_ns=1_700_000_000_000_000_000 + i, src=f"10.1.{i % 50}.{i % 200 + 1}",
                   dst="10.9.9.9", sport=1024 + i % 60000, dport=80, proto=6, tcp_flags=2,
                   length=60, ifindex=3) for i in range(start, start + n)]


async def test_sequence_numbers_are_contiguous_and_events_land_on_their_source_partition(broker):
    await ensure_topics(broker)
    pub = Publisher(broker, batch_events=128, compression="gzip")
    await pub.start()
    try:
        for i in range(0, 20_000, 1000):
            assert pub.submit(packets(1000, i), sample_rate=4) == 1000
            await asyncio.sleep(0)
        assert await pub.flush(30)
    finally:
        await pub.stop()
    assert pub.stats.acked == 20_000 and pub.stats.produce_errors == 0
    got = await consume_all(broker, 20_000)
    assert sorted(p.seq for _, p in got) == list(range(20_000))
    assert all(part == source_partition(p, broker.packets_partitions) for part, p in got)
    assert {(p.node, p.sample_rate) for _, p in got} == {(broker.node_id, 4)}


async def test_small_submits_are_packed_into_full_micro_batches(broker):
    """Ring polls at moderate rates bring a few events each; they must not cost a record each."""
    await ensure_topics(broker)
    pub = Publisher(broker, batch_events=100)
    await pub.start()
    try:
        one_source = [Packet(ts_ns=1_700_000_000_000_000_000 + i, src="10.1.1.1", dst="10.9.9.9",
                             sport=1024 + i, dport=80, proto=6, tcp_flags=2, length=60, ifindex=3)
                      for i in range(1000)]
        for i in range(0, 1000, 3):  # 334 submits of 1-3 events, queued before a send round
            assert pub.submit(one_source[i:i + 3]) == len(one_source[i:i + 3])
        assert await pub.flush(30)
    finally:
        await pub.stop()
    assert pub.stats.acked == 1000 and pub.stats.records == 10
    got = await consume_all(broker, 1000)
    assert [p.seq for _, p in got] == list(range(1000))  # one partition: in order


async def test_buffers_while_kafka_is_unreachable_and_resumes_without_gaps(broker):
    await ensure_topics(broker)
    reachable = False
    real = default_producer(broker, "gzip", 3000)
    dead = f"127.0.0.1:{free_port()}"

    def factory():
        if reachable:
            return real()
        return AIOKafkaProducer(**{**client_options(broker), "bootstrap_servers": dead},
                                acks="all", enable_idempotence=True)

    pub = Publisher(broker, buffer_events=5_000, batch_events=100, producer_factory=factory)
    await pub.start()
    try:
        assert pub.submit(packets(3000)) == 3000
        await asyncio.sleep(1.5)
        assert pub.stats.acked == 0 and pub.buffered == 3000 and not pub.stats.connected
        assert pub.stats.client_restarts >= 2  # it keeps trying
        # Beyond the bound, events are refused (counted) and get no sequence number.
        assert pub.submit(packets(3000, 3000)) == 2000
        assert pub.stats.refused_full == 1000 and pub.next_seq == 5000
        reachable = True
        assert await pub.flush(30)
        assert pub.submit(packets(500, 6000)) == 500
        assert await pub.flush(30)
    finally:
        await pub.stop()
    got = await consume_all(broker, 5500)
    assert sorted(p.seq for _, p in got) == list(range(5500))


async def test_fewer_topic_partitions_than_configured_is_reported_and_buffered(broker, caplog):
    """A packets topic with fewer partitions than XDPGUARD_PACKETS_PARTITIONS: every batch would
    fail, so the publisher says so in one error and buffers instead of spinning on its client."""
    from services.wire.topics import TopicSpec

    await ensure_topics(broker, [TopicSpec(broker.topic(PACKETS), 2, 1)])
    pub = Publisher(broker, partitions=4, buffer_events=1000, batch_events=100)
    await pub.start()
    try:
        assert pub.submit(packets(100)) == 100
        await asyncio.sleep(2)
        assert pub.stats.acked == 0 and pub.buffered == 100 and not pub.stats.connected
        assert pub.stats.client_restarts <= 2  # retried slowly, not in a tight loop
    finally:
        await pub.stop(drain_timeout=0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("has 2 partitions but XDPGUARD_PACKETS_PARTITIONS=4" in m for m in errors)
