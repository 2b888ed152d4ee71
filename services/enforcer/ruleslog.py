"""The compacted `rules` topic: the enforcer's durable copy of the rule set it installed.

The Kafka adapter under the reconciler (reconciler.py). `RulesLog.write(rule, ...)` publishes an
applied rule under its key; `remove(rule)` publishes a tombstone (compaction then forgets the
key); `read()` is read_rules() for this node. `read_rules()` reads the topic from its start to the
end offsets captured when it begins, applying records in order, so the result is the latest state
of every key: what a restarted enforcer, a reloaded program or a rebooted host installs again.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.wire import codec
from services.common.errors import DecodeError
from services.wire.kafka import client_options
from services.records.rules import Rule
from services.common.settings import CommonSettings
from services.wire.topics import RULES

log = logging.getLogger("xdpguard.enforcer.rules")


class RulesLog:
    """Producer (and reader) of the compacted `rules` topic for this node; start() before use."""

    def __init__(self, common: CommonSettings) -> None:
        self.common = common
        self.topic = common.topic(RULES)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**client_options(self.common), acks="all",
                                    enable_idempotence=True, linger_ms=5,
                                    client_id=f"xdpguard-enforcer-{self.common.node_id}")
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def write(self, rule: Rule, verdict_id: str = "") -> None:
        key, value = codec.encode_rule_record(rule, "applied", self.common.node_id,
                                              verdict_id=verdict_id)
        await self._send(key, value)

    async def remove(self, rule: Rule) -> None:
        key, value = codec.rule_tombstone(rule)
        await self._send(key, value)

    async def read(self) -> tuple[dict[str, codec.RuleRecord], list[tuple]]:
        """This node's latest records by rule key, and the undecodable records met on the way
        as (partition, offset, reason, key, value)."""
        bad_records: list[tuple] = []
        records, _ = await read_rules(self.common, node=self.common.node_id,
                                      bad_records=bad_records)
        return records, bad_records

    async def _send(self, key: bytes, value: bytes | None) -> None:
        await self.send(self.topic, key, value)

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        assert self._producer is not None, "RulesLog not started"
        # Wait for the ack: a rule the topic does not hold would not survive a restart.
        await (await self._producer.send(topic, value, key=key))


async def read_rules(common: CommonSettings, node: str | None = None, timeout: float = 30.0,
                     bad_records: list | None = None) -> tuple[dict[str, codec.RuleRecord], int]:
    """Latest record of every key in the rules topic (tombstoned keys left out), optionally only
    those written by `node`; plus the number of undecodable records skipped (each appended to
    `bad_records` as (partition, offset, reason, key, value) if a list is given)."""
    topic = common.topic(RULES)
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    latest: dict[str, codec.RuleRecord] = {}
    bad = 0
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # topic may be brand new
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {}, 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        async with asyncio.timeout(timeout):
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        try:
                            rec = codec.decode_rule_record(r.key, r.value)
                        except DecodeError as exc:
                            bad += 1
                            log.warning("rules topic offset %s: %s", r.offset, exc)
                            if bad_records is not None:
                                bad_records.append((tp.partition, r.offset, str(exc), r.key,
                                                    r.value))
                            continue
                        rec = dataclasses.replace(rec, partition=tp.partition, offset=r.offset,
                                                  raw=r.value)
                        key = rec.key.decode()
                        if rec.deleted:
                            latest.pop(key, None)
                        elif rec.state == "applied":
                            latest[key] = rec
                        else:
                            latest.pop(key, None)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    if node is not None:
        latest = {k: r for k, r in latest.items() if r.node in (node, "")}
    return latest, bad
