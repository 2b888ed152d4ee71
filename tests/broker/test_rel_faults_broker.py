"""Faults of the broker itself, with a private broker (tests/support/broker.py) the test stops and
kills while the capture's publisher keeps submitting events: afterwards the `packets` topic
holds every event given a sequence number (no loss), and any duplicate is one the design admits
(docs/reliability.md, "Broker outage"): a batch in flight when the connection broke, resent by a
new producer client (the idempotent producer only de-duplicates within one client session)."""
import asyncio
import collections
import time
import uuid

from services.capture.publisher import Publisher
from services.records.packet import Packet
from services.common.settings import load_common
from services.wire.topics import PACKETS, ensure_topics
from tests.support.kafka_io import read_topic


def packets(start: int, n: int) -> list[Packet]:
    return [Packet(ts_ns=time.time_ns(), src=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                   dst="10.9.9.9", sport=1024 + i % 60000, dport=80, proto=6, tcp_flags=2,
                   length=60, ifindex=3) for i in range(start, start + n)]


async def test_rel_broker_stopped_and_killed_while_publishing_loses_nothing(private_broker):
    common = load_common(kafka_bootstrap=private_broker.bootstrap,
                         topic_prefix=f"r{uuid.uuid4().hex[:8]}.", packets_partitions=4)
    await ensure_topics(common)
    pub = Publisher(common, buffer_events=400_000, batch_events=200, request_timeout_ms=3000)
    await pub.start()
    sent = 0
    stop = asyncio.Event()

    async def feed():  # ~10k events/s, like a busy capture, whatever the broker does
        nonlocal sent
        while not stop.is_set():
            sent += pub.submit(packets(sent, 200))
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(feed())
    timeline = {}
    try:
        await asyncio.sleep(3)
        timeline["before_stop"] = pub.stats.acked
        await asyncio.to_thread(private_broker.stop)          # clean shutdown (SIGTERM)
        await asyncio.sleep(4)
        timeline["buffered_while_down"] = pub.buffered
        await asyncio.to_thread(private_broker.start)         # back, same log dirs
        assert await pub.flush(60), f"not drained after restart: {pub.buffered} buffered"
        timeline["after_restart"] = pub.stats.acked
        await asyncio.sleep(2)
        await asyncio.to_thread(private_broker.kill)          # SIGKILL: no clean shutdown
        await asyncio.sleep(4)
        await asyncio.to_thread(private_broker.start)
        await asyncio.sleep(2)
    finally:
        stop.set()
        await feeder
    try:
        assert await pub.flush(60), f"not drained after the kill: {pub.buffered} buffered"
    finally:
        await pub.stop()
    assert timeline["buffered_while_down"] > 0, "the outage was not noticed"
    st = pub.stats
    assert st.refused_full == 0 and st.accepted == sent == pub.next_seq
    got = await read_topic(common, common.topic(PACKETS))
    counts = collections.Counter(p.seq for p in got)
    missing = set(range(sent)) - set(counts)
    dups = {s: c for s, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} of {sent} events lost, e.g. {sorted(missing)[:5]}"
    assert set(counts) == set(range(sent)), "events with sequence numbers never assigned"
    # Admitted: only events of batches that failed (produce_errors) may come twice, never more.
    if dups:
        assert st.produce_errors > 0, "duplicates without a failed batch"
        assert max(dups.values()) <= 1 + st.produce_errors, dups
    print(f"\nbroker outage: {sent} events, {len(dups)} duplicates, {st.produce_errors} produce "
          f"errors, {st.client_restarts} clients, timeline {timeline}")
