"""xdpguard's Kafka topics (docs/events.md), their partition counts and configs, and how to create
them. Use the names below, never the literals."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from services.common.errors import KafkaUnavailable
from .kafka import client_options
from services.common.settings import CommonSettings

PACKETS = "packets"
VERDICTS = "verdicts"
RULES = "rules"
DEADLETTER = "deadletter"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(common: CommonSettings) -> list[TopicSpec]:
    rf = common.replication_factor
    return [
        TopicSpec(common.topic(PACKETS), common.packets_partitions, rf,
                  {"retention.ms": str(6 * 3600 * 1000), "compression.type": "producer"}),
        TopicSpec(common.topic(VERDICTS), common.verdicts_partitions, rf,
                  {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        # The desired rule set: keyed by rule key, a tombstone deletes; compaction keeps the latest.
        TopicSpec(common.topic(RULES), common.rules_partitions, rf,
                  {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                   "segment.ms": str(3600 * 1000), "delete.retention.ms": str(24 * 3600 * 1000)}),
        TopicSpec(common.topic(DEADLETTER), common.deadletter_partitions, rf,
                  {"retention.ms": str(14 * 24 * 3600 * 1000)}),
    ]


async def ensure_topics(common: CommonSettings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left alone."""
    specs = topic_specs(common) if specs is None else specs
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        existing = set(await admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        if wanted:
            try:
                await admin.create_topics([
                    NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                    for s in wanted
                ])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another service: fine
        return [s.name for s in wanted]
    finally:
        await admin.close()


async def list_topics(common: CommonSettings) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def topic_partitions(common: CommonSettings, topic: str) -> list[int]:
    """Partition ids of `topic`, sorted ([] when it does not exist). Raises KafkaUnavailable."""
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        for t in await admin.describe_topics([topic]):
            if t["topic"] == topic and not t["error_code"]:
                return sorted(p["partition"] for p in t["partitions"])
        return []
    finally:
        await admin.close()


async def wait_ready(common: CommonSettings, timeout: float = 60.0) -> float:
    """Wait until the cluster answers a metadata request; returns the seconds it took."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            await list_topics(common)
            return time.monotonic() - start
        except (KafkaUnavailable, KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.5)
    raise KafkaUnavailable(
        f"Kafka at {common.kafka_bootstrap} not ready after {timeout:.0f} s ({last})")


async def start_admin(admin: AIOKafkaAdminClient, common: CommonSettings) -> None:
    """Start `admin`; an unreachable cluster is KafkaUnavailable naming the bootstrap."""
    try:
        await admin.start()
    except (KafkaConnectionError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {common.kafka_bootstrap}: {exc}") from None
