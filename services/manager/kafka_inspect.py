"""Read-only views of the cluster for operators: topic layout, records as JSON, consumer groups.

Adapter code (aiokafka); the CLI verbs in topics_cmd.py and groups_cmd.py only format its results.
Views default to this deployment (names under XDPGUARD_TOPIC_PREFIX); `everything=True` shows
the whole cluster. Records are decoded with the codec the services use (services.wire.codec):
one JSON object per packet event, verdict, rule record or dead letter.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import msgpack
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.protocol.admin import DescribeGroupsRequest_v1
from aiokafka.protocol.api import Request

from services.common.errors import ConfigError, DecodeError, KafkaUnavailable
from services.common.settings import CommonSettings
from services.wire import codec
from services.wire.kafka import client_options, stop_quietly
from services.wire.topics import DEADLETTER, MODELS, PACKETS, RULES, VERDICTS, prefixed, start_admin, \
    topic_partitions


@dataclass
class PartitionInfo:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    start: int = 0
    end: int = 0


@dataclass
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]

    @property
    def records(self) -> int:
        return sum(p.end - p.start for p in self.partitions)


@dataclass
class MemberInfo:
    member_id: str
    client_id: str
    host: str
    partitions: list[TopicPartition]


@dataclass
class GroupInfo:
    group_id: str
    state: str
    protocol: str
    members: list[MemberInfo]
    lag: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)  # tp -> (committed, end)

    @property
    def total_lag(self) -> int:
        """Lag summed over the group's own input topics (its internal topics left out)."""
        return sum(lag for topic, lag in self.lag_by_topic().items() if not self.internal(topic))

    def internal(self, topic: str) -> bool:
        """A topic the group's framework keeps for itself (faust: `<group>-...`: the
        repartition topic, table changelogs): its lag moves while the input is idle."""
        return topic.startswith(f"{self.group_id}-")

    def lag_by_topic(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tp, (committed, end) in self.lag.items():
            out[tp.topic] = out.get(tp.topic, 0) + max(end - committed, 0)
        return out


class _DescribeGroupsV1(Request[DescribeGroupsRequest_v1]):
    """DescribeGroups pinned to v1: aiokafka 0.14 pairs its v3 request with the v2 response
    schema, so against Kafka 3.x the negotiated v3 answer fails to decode."""

    API_KEY = 15

    def __init__(self, groups: list[str]):
        self._groups = groups

    def build(self, request_struct_class):
        return DescribeGroupsRequest_v1(self._groups)


def resolve_topic(common: CommonSettings, name: str) -> str:
    """Accept short names (`packets`) as well as full ones (`xdpguard.packets`)."""
    return name if name.startswith(common.topic_prefix) else common.topic(name)


async def start_consumer(consumer: AIOKafkaConsumer, common: CommonSettings) -> None:
    """Start `consumer`; an unreachable cluster is KafkaUnavailable naming the bootstrap."""
    try:
        await consumer.start()
    except (KafkaConnectionError, OSError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {common.kafka_bootstrap}: {exc}") from None


async def describe_topics(common: CommonSettings, names: list[str] | None = None,
                          everything: bool = False) -> list[TopicInfo]:
    """Layout and offsets of `names` (ConfigError if one is missing); by default of every topic
    under the prefix, with `everything` of every topic in the cluster."""
    admin = AIOKafkaAdminClient(**client_options(common))
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False)
    try:
        await start_admin(admin, common)
        await start_consumer(consumer, common)
        if names is None and not everything:
            names = prefixed(common, await admin.list_topics())
            if not names:
                return []
            wanted = False
        else:
            wanted = names is not None
        raw = await admin.describe_topics(names)
        infos = []
        for t in sorted(raw, key=lambda t: t["topic"]):
            if t["error_code"] and wanted:
                raise ConfigError(f"topic {t['topic']} does not exist")
            if t["error_code"]:
                continue
            parts = [PartitionInfo(p["partition"], p["leader"], list(p["replicas"]), list(p["isr"]))
                     for p in sorted(t["partitions"], key=lambda p: p["partition"])]
            tps = [TopicPartition(t["topic"], p.partition) for p in parts]
            if tps:
                starts = await consumer.beginning_offsets(tps)
                ends = await consumer.end_offsets(tps)
                for p, tp in zip(parts, tps):
                    p.start, p.end = starts[tp], ends[tp]
            infos.append(TopicInfo(t["topic"], parts))
        return infos
    finally:
        await stop_quietly(consumer)
        await admin.close()


async def tail(common: CommonSettings, topic: str, *, last: int | None = None,
               from_beginning: bool = False, follow: bool = False,
               partition: int | None = None) -> AsyncIterator[Any]:
    """Yield records of `topic`: the last `last` per partition (default), or all from the
    beginning; with follow, keep yielding new ones until cancelled."""
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    try:
        await start_consumer(consumer, common)
        parts = await topic_partitions(common, topic)
        if not parts:
            raise ConfigError(f"topic {topic} does not exist")
        if partition is not None and partition not in parts:
            raise ConfigError(f"topic {topic} has no partition {partition} (0-{max(parts)})")
        tps = [TopicPartition(topic, p) for p in sorted(parts) if partition in (None, p)]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if from_beginning:
                consumer.seek(tp, starts[tp])
            else:
                consumer.seek(tp, max(starts[tp], ends[tp] - (10 if last is None else last)))
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while follow or pending:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in sorted(batch.items(), key=lambda kv: kv[0].partition):
                for rec in records:
                    yield rec
                    if rec.offset + 1 >= ends[tp]:
                        pending.discard(tp)
            if not follow:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
    finally:
        await stop_quietly(consumer)


async def consumer_groups(common: CommonSettings, only: str | None = None,
                          everything: bool = False) -> list[GroupInfo]:
    """Members, assignments and committed offsets of group `only`, else of every group under
    the prefix (the scorer's `<prefix><app id>`, each enforcer's `<prefix>enforcer-<node>`), or
    with `everything` of every group in the cluster."""
    admin = AIOKafkaAdminClient(**client_options(common))
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False)
    try:
        await start_admin(admin, common)
        await start_consumer(consumer, common)
        ids = sorted(g[0] for g in await admin.list_consumer_groups())
        if only is not None:
            if only not in ids:
                raise ConfigError(f"consumer group {only} does not exist")
            ids = [only]
        elif not everything:
            ids = prefixed(common, ids)
        groups = []
        responses = []
        for gid in ids:
            node = await admin.find_coordinator(gid)
            responses.append(await admin._send_request(_DescribeGroupsV1([gid]), node))
        for resp in responses:
            for g in resp.groups:
                error_code, group_id, state, _ptype, protocol, members = g[:6]
                infos = []
                for m in members:
                    member_id, client_id, host, _meta, assignment = m[:5]
                    tps = (ConsumerProtocolMemberAssignment.decode(assignment).partitions()
                           if assignment else [])
                    infos.append(MemberInfo(member_id, client_id, host, sorted(tps)))
                groups.append(GroupInfo(group_id, state, protocol, infos))
        for g in groups:
            offsets = await admin.list_consumer_group_offsets(g.group_id)
            tps = [tp for tp, om in offsets.items() if om.offset >= 0]
            ends = await consumer.end_offsets(tps) if tps else {}
            g.lag = {tp: (offsets[tp].offset, ends[tp]) for tp in sorted(tps)}
        return sorted(groups, key=lambda g: g.group_id)
    finally:
        await stop_quietly(consumer)
        await admin.close()


def record_to_json(topic_kind: str, value: bytes | None, key: bytes | None = None) -> list[Any]:
    """Decode one record's value into JSON-ready objects with the services' codec: one object
    per packet event (a micro-batch gives several; keys are Packet's fields, so
    `jq 'select(.dport == 22)'` works), one per verdict, rule record or dead letter. A topic of
    another kind is shown schema-less; an undecodable record as its reason and base64."""
    if value is None and topic_kind != RULES:
        return [None]  # a tombstone
    try:
        if topic_kind == PACKETS:
            return [_jsonable(dataclasses.asdict(p)) for p in codec.decode_packets(value)]
        if topic_kind == VERDICTS:
            return [_jsonable(dataclasses.asdict(codec.decode_verdict(value)))]
        if topic_kind == RULES:
            rec = codec.decode_rule_record(key, value)
            return [_jsonable({**dataclasses.asdict(rec), "key": rec.key.decode(errors="replace"),
                               "deleted": rec.deleted})]
        if topic_kind == DEADLETTER:
            dead = codec.decode_deadletter(value)
            return [_jsonable({**dataclasses.asdict(dead),
                               "raw": base64.b64encode(dead.raw).decode()})]
        if topic_kind == MODELS:
            return [_model_json(key, value)]
        return [_jsonable(msgpack.unpackb(value, raw=False, strict_map_key=False))]
    except (DecodeError, ValueError, TypeError, msgpack.UnpackException) as exc:
        return [{"_undecodable": str(exc),
                 "_base64": base64.b64encode(value or b"").decode()}]


def _model_json(key: bytes | None, value: bytes) -> dict:
    """A models-topic record without its model bytes (their length instead)."""
    from services.wire.modelrec import ShadowReport, decode_model_record, is_report_key

    if is_report_key(key):
        return _jsonable(ShadowReport.decode(value).__dict__)
    rec = decode_model_record(key, value)
    out = {**dataclasses.asdict(rec), "model_id": rec.model_id,
           "model_bytes": None if rec.model is None else len(rec.model)}
    del out["model"]
    return _jsonable(out)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        if len(obj) in (4, 16):
            return str(ipaddress.ip_address(obj))
        try:
            return obj.decode()
        except UnicodeDecodeError:
            return base64.b64encode(obj).decode()
    return obj
