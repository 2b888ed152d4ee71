"""xdpguard's Kafka topics (docs/events.md), their partition counts and configs, and how to create,
check and delete them. Use the names below, never the literals.

Every service creates or checks the topics it needs before it uses them (`ensure_topics`): a
topic the broker auto-created on first use has 1 partition and `cleanup.policy=delete`, which
breaks the partitioning (packets) and the restore (rules), so an existing topic whose partition
count or cleanup policy differs from its spec is refused with one line naming both
(`TopicMismatch`), never used as if it were right. `topic_states` reports each topic's state
without raising (`xdpguard topics create`); `delete_prefixed` deletes one deployment's topics
(every topic under XDPGUARD_TOPIC_PREFIX) for recovery.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code

from services.common.errors import ConfigError, KafkaUnavailable
from services.common.settings import CommonSettings

from .kafka import client_options

PACKETS = "packets"
VERDICTS = "verdicts"
RULES = "rules"
DEADLETTER = "deadletter"
MODELS = "models"

TOPIC_ALREADY_EXISTS = 36
MODELS_MAX_MESSAGE_BYTES = 5 * 1024 * 1024  # above codec.MAX_RECORD_BYTES: batch overhead
CHECKED_CONFIGS = ("cleanup.policy",)  # configs whose difference makes a topic unusable


class TopicMismatch(ConfigError):
    """An existing topic's partition count or cleanup policy differs from its spec."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic as xdpguard wants it. `setting`: the variable its partition count comes from
    ("" for topics sized otherwise), named when an existing topic differs."""
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)
    setting: str = ""


@dataclass(frozen=True)
class TopicState:
    """One topic as found: `state` is "created", "exists" or "mismatch" (then `problem` says
    what differs, one line)."""
    spec: TopicSpec
    state: str
    problem: str = ""


def topic_specs(common: CommonSettings) -> list[TopicSpec]:
    rf = common.replication_factor
    return [
        TopicSpec(common.topic(PACKETS), common.packets_partitions, rf,
                  {"retention.ms": str(6 * 3600 * 1000), "compression.type": "producer"},
                  "XDPGUARD_PACKETS_PARTITIONS"),
        TopicSpec(common.topic(VERDICTS), common.verdicts_partitions, rf,
                  {"retention.ms": str(7 * 24 * 3600 * 1000)}, "XDPGUARD_VERDICTS_PARTITIONS"),
        # The desired rule set: keyed by rule key, a tombstone deletes; compaction keeps the latest.
        TopicSpec(common.topic(RULES), common.rules_partitions, rf,
                  {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                   "segment.ms": str(3600 * 1000), "delete.retention.ms": str(24 * 3600 * 1000)},
                  "XDPGUARD_RULES_PARTITIONS"),
        TopicSpec(common.topic(DEADLETTER), common.deadletter_partitions, rf,
                  {"retention.ms": str(14 * 24 * 3600 * 1000)}, "XDPGUARD_DEADLETTER_PARTITIONS"),
        # Model roll-out state (wire/modelrec.py): one partition, so every scorer reads the
        # records in the order they were written; compaction keeps the latest per key; models
        # travel inline (codec.MAX_RECORD_BYTES at most, above the broker's 1 MB default).
        TopicSpec(common.topic(MODELS), 1, rf,
                  {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                   "segment.ms": str(3600 * 1000), "delete.retention.ms": str(24 * 3600 * 1000),
                   "max.message.bytes": str(MODELS_MAX_MESSAGE_BYTES)}),
    ]


def specs_named(common: CommonSettings, *short_names: str) -> list[TopicSpec]:
    """The specs of the given short names (PACKETS, RULES...), in that order."""
    by_name = {s.name: s for s in topic_specs(common)}
    return [by_name[common.topic(n)] for n in short_names]


async def ensure_topics(common: CommonSettings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the missing topics and check the existing ones; returns the names created.
    Raises TopicMismatch (one line listing every difference) when an existing topic's
    partition count or cleanup policy is not its spec's, KafkaUnavailable when the cluster
    cannot be reached, ConfigError when the broker refuses to create one (its reason)."""
    states = await topic_states(common, specs)
    wrong = [s.problem for s in states if s.state == "mismatch"]
    if wrong:
        raise TopicMismatch("; ".join(wrong) + f" (recover: stop the services, `xdpguard topics "
                            f"delete --yes` deletes every {common.topic_prefix}* topic, or fix "
                            "the setting)")
    return [s.spec.name for s in states if s.state == "created"]


async def topic_states(common: CommonSettings, specs: list[TopicSpec] | None = None
                       ) -> list[TopicState]:
    """Create the missing topics of `specs` (default: topic_specs(common)) and describe how
    every one was found (TopicState), without raising on a mismatch."""
    specs = topic_specs(common) if specs is None else specs
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        existing = set(await admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        if wanted:
            resp = await admin.create_topics([
                NewTopic(s.name, s.partitions, s.replication, topic_configs=s.config)
                for s in wanted])
            for topic, code, *message in resp.topic_errors:
                if code and code != TOPIC_ALREADY_EXISTS:  # exists: another service was quicker
                    text = (message[0] if message else None) or for_code(code).__name__
                    raise ConfigError(f"Kafka refused to create topic {topic}: {text}")
        created = {s.name for s in wanted}
        checked = [s for s in specs if s.name not in created]
        problems = await _differences(admin, checked) if checked else {}
        return [TopicState(s, "created") if s.name in created else
                TopicState(s, "mismatch", problems[s.name]) if s.name in problems else
                TopicState(s, "exists") for s in specs]
    finally:
        await admin.close()


async def _differences(admin: AIOKafkaAdminClient, specs: list[TopicSpec],
                       wait_s: float = 15.0) -> dict[str, str]:
    """{topic: what differs} for the existing topics among `specs`. A topic created a moment
    ago can describe with an error (no leader yet): asked again until it answers."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + wait_s
    names = [s.name for s in specs]
    while True:
        for d in await admin.describe_topics([n for n in names if n not in counts]):
            if not d.get("error_code") and d["partitions"]:
                counts[d["topic"]] = len(d["partitions"])
        if len(counts) == len(names) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    configs = await _configs(admin, [s.name for s in specs if any(k in s.config
                                                                   for k in CHECKED_CONFIGS)])
    out: dict[str, str] = {}
    for s in specs:
        diffs = []
        have = counts.get(s.name)
        if have is None:
            diffs.append(f"topic {s.name} did not describe within {wait_s:.0f} s")
        elif have != s.partitions:
            diffs.append(f"topic {s.name} has {have} partitions but {s.setting}={s.partitions}"
                         if s.setting else
                         f"topic {s.name} has {have} partitions, needs {s.partitions}")
        for key in CHECKED_CONFIGS:
            want, got = s.config.get(key), configs.get(s.name, {}).get(key)
            if want is not None and got is not None and got != want:
                diffs.append(f"topic {s.name} has {key}={got}, needs {want} (not created by "
                             "xdpguard: e.g. by the broker on first use)")
        if diffs:
            out[s.name] = "; ".join(diffs)
    return out


async def _configs(admin: AIOKafkaAdminClient, names: list[str],
                   keys: tuple[str, ...] = CHECKED_CONFIGS) -> dict[str, dict[str, str]]:
    """{topic: {config: value}} of `keys` for `names` (topics that do not answer left out)."""
    if not names:
        return {}
    out: dict[str, dict[str, str]] = {}
    for resp in await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, dict.fromkeys(keys)) for n in names]):
        for code, _message, _rtype, name, entries in resp.resources:
            if not code:
                out[name] = {e[0]: e[1] for e in entries}
    return out


async def topic_config(common: CommonSettings, topic: str, key: str) -> str | None:
    """The value of config `key` (e.g. "retention.ms") of the existing `topic` as the broker
    reports it (the topic's own or the broker's default); None when the topic does not exist.
    Raises KafkaUnavailable."""
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        if topic not in await admin.list_topics():
            return None
        return (await _configs(admin, [topic], (key,))).get(topic, {}).get(key)
    finally:
        await admin.close()


async def list_topics(common: CommonSettings) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


def prefixed(common: CommonSettings, names: list[str]) -> list[str]:
    """The names under this deployment's prefix (XDPGUARD_TOPIC_PREFIX), sorted."""
    return sorted(n for n in names if n.startswith(common.topic_prefix))


async def delete_prefixed(common: CommonSettings, names: list[str] | None = None) -> list[str]:
    """Delete `names` (default: every topic under XDPGUARD_TOPIC_PREFIX, the scorer's internal
    ones included); returns the names deleted. A name outside the prefix is refused
    (ConfigError): this never deletes another deployment's topics."""
    admin = AIOKafkaAdminClient(**client_options(common))
    try:
        await start_admin(admin, common)
        existing = prefixed(common, await admin.list_topics())
        if names is None:
            names = existing
        outside = [n for n in names if not n.startswith(common.topic_prefix)]
        if outside:
            raise ConfigError(f"not under the prefix {common.topic_prefix}: {', '.join(outside)}")
        missing = [n for n in names if n not in existing]
        if missing:
            raise ConfigError(f"no such topic: {', '.join(missing)}")
        if names:
            resp = await admin.delete_topics(names)
            failed = [f"{t}: {for_code(code).__name__}" for t, code in resp.topic_error_codes
                      if code]
            if failed:
                raise ConfigError("Kafka refused to delete " + "; ".join(failed))
        return names
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
