"""Operator views against the real broker: `xdpguard topics tail` and `xdpguard groups`."""
import asyncio
import json
import os
import subprocess
import sys

import msgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.wire.kafka import client_options


def xdpguard(broker, *args, check=True):
    env = {**os.environ, "XDPGUARD_TOPIC_PREFIX": broker.topic_prefix,
           "XDPGUARD_KAFKA_BOOTSTRAP": broker.kafka_bootstrap}
    return subprocess.run([sys.executable, "-m", "services.manager", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=check)


async def produce(broker, topic, records):
    producer = AIOKafkaProducer(**client_options(broker), acks="all")
    await producer.start()
    try:
        for i, rec in enumerate(records):
            await producer.send(topic, msgpack.packb(rec), partition=i % 4)
        await producer.flush()
    finally:
        await producer.stop()


async def test_tail_prints_msgpack_records_as_json_lines(broker, fresh_topic):
    records = [{"seq": i, "addr": bytes([10, 0, 0, i])} for i in range(30)]
    await produce(broker, fresh_topic, records)

    out = xdpguard(broker, "topics", "tail", "test", "--from-beginning").stdout.splitlines()
    got = sorted((json.loads(line) for line in out), key=lambda r: r["seq"])
    assert got == [{"seq": i, "addr": f"10.0.0.{i}"} for i in range(30)]

    out = xdpguard(broker, "topics", "tail", fresh_topic, "-n", "2", "--partition", "1",
                   "--meta").stdout.splitlines()
    last_two = [json.loads(line) for line in out]
    # partition 1 holds records 1, 5, 9, ... 29: the last two are 25 and 29
    assert [r["value"]["seq"] for r in last_two] == [25, 29]
    assert all(r["partition"] == 1 for r in last_two)


async def test_tail_of_a_missing_topic_is_one_clear_error(broker, kafka_bootstrap):
    res = xdpguard(broker, "topics", "tail", "nosuchtopic", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"xdpguard topics: error: topic {broker.topic('nosuchtopic')} does not exist"]


async def test_groups_show_members_partitions_and_lag(broker, fresh_topic):
    await produce(broker, fresh_topic, [{"i": i} for i in range(40)])
    group = f"{fresh_topic}.workers"
    consumers = [AIOKafkaConsumer(fresh_topic, **client_options(broker), group_id=group,
                                  client_id=f"worker-{n}", auto_offset_reset="earliest",
                                  enable_auto_commit=False) for n in range(2)]
    for c in consumers:
        await c.start()
    try:
        async with asyncio.timeout(30):
            while not all(len(c.assignment()) == 2 for c in consumers):
                await asyncio.gather(*(c.getmany(timeout_ms=200) for c in consumers))
        # partition 0 holds 10 of the 40 records; commit 5 of them: lag 5
        tp0 = TopicPartition(fresh_topic, 0)
        owner = next(c for c in consumers if tp0 in c.assignment())
        await owner.commit({tp0: 5})

        out = xdpguard(broker, "groups", group, "--json").stdout
        info = json.loads(out)
        assert info["group"] == group and info["state"] == "Stable"
        members = {m["client_id"]: m["partitions"] for m in info["members"]}
        assert set(members) == {"worker-0", "worker-1"}
        assigned = sorted(p for parts in members.values() for p in parts)
        assert assigned == [f"{fresh_topic}:{p}" for p in range(4)]
        assert info["partitions"] == [{"topic": fresh_topic, "partition": 0, "committed": 5,
                                       "end": 10, "lag": 5}]
    finally:
        for c in consumers:
            await c.stop()
