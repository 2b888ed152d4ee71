"""The operator's topic and group verbs against the real broker (issue 14, items 2, 3, 4, 6):
`topics create` refuses topics the broker auto-created (wrong partition count, not compacted),
`topics delete --yes` deletes this prefix's topics only, `topics list` and `groups` show this
prefix unless `--all`, `topics tail` prints one JSON object per packet event of a micro-batch,
and `groups` shows a scorer worker by its client id with lag per topic, internal topics apart."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.capture.publisher import Publisher
from services.common.settings import load_common
from services.records.packet import Packet
from services.wire.kafka import client_options
from services.wire.topics import PACKETS, RULES, TopicSpec, ensure_topics, list_topics, topic_specs
from tests.support.kafka_io import produce_raw
from tests.support.packet_records import encode_packets
from tests.support.scorer_traffic import benign, window_ahead, with_seq
from tests.support.scorer_worker import produce_packets, start_worker, wait_for

pytestmark = pytest.mark.timeout(120)


def xdpguard(common, *args):
    env = {**os.environ, "XDPGUARD_TOPIC_PREFIX": common.topic_prefix,
           "XDPGUARD_KAFKA_BOOTSTRAP": common.kafka_bootstrap}
    return subprocess.run([sys.executable, "-m", "services.manager", *args], env=env, text=True,
                          capture_output=True, timeout=60)


def other_prefix(kafka_bootstrap):
    return load_common(topic_prefix=f"o{uuid.uuid4().hex[:10]}.")


async def names_under(common) -> set[str]:
    return {n for n in await list_topics(common) if n.startswith(common.topic_prefix)}


async def commit_group(common, group: str, offsets: dict[str, int]) -> None:
    """Commit `offsets` ({topic: offset on partition 0}) for consumer group `group`."""
    consumer = AIOKafkaConsumer(**client_options(common), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(t, 0): o for t, o in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


async def test_create_refuses_a_packets_topic_with_one_partition(broker):
    name = broker.topic(PACKETS)
    await ensure_topics(broker, [TopicSpec(name, 1, 1)])  # as the broker auto-creates it
    res = xdpguard(broker, "topics", "create")
    assert res.returncode == 1, res
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(name + "\t"))
    assert "MISMATCH" in line and "exists" not in line.split("\t")[2]
    assert (f"topic {name} has 1 partitions but XDPGUARD_PACKETS_PARTITIONS="
            f"{broker.packets_partitions}") in line
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xdpguard topics: error: 1 topic(s) differ"), err
    assert "Traceback" not in res.stderr
    # the other topics were created, the wrong one left as it was
    assert await names_under(broker) == {s.name for s in topic_specs(broker)}


async def test_create_refuses_a_rules_topic_that_is_not_compacted(broker):
    name = broker.topic(RULES)
    await ensure_topics(broker, [TopicSpec(name, broker.rules_partitions, 1,
                                           {"cleanup.policy": "delete"})])
    res = xdpguard(broker, "topics", "create")
    assert res.returncode == 1, res
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(name + "\t"))
    assert f"MISMATCH: topic {name} has cleanup.policy=delete, needs compact" in line
    others = [ln for ln in res.stdout.splitlines() if not ln.startswith(name + "\t")]
    assert len(others) == len(topic_specs(broker)) - 1 and all("MISMATCH" not in ln for ln in others), others
    assert "1 topic(s) differ" in res.stderr
    # once right, create passes and reports every topic as existing
    assert xdpguard(broker, "topics", "delete", "--yes", "rules").returncode == 0
    await wait_for_absent(broker, name)
    assert xdpguard(broker, "topics", "create").returncode == 0
    res = xdpguard(broker, "topics", "create")
    assert res.returncode == 0 and all(ln.endswith("\texists") for ln in res.stdout.splitlines())


async def wait_for_absent(common, name: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while name in await list_topics(common):
            await asyncio.sleep(0.2)


async def test_delete_removes_only_this_prefixs_topics(broker, kafka_bootstrap):
    other = other_prefix(kafka_bootstrap)
    await ensure_topics(broker)
    await ensure_topics(other, [TopicSpec(other.topic(PACKETS), 2, 1)])
    # a name that shares the prefix's text but not its separator is another deployment's
    lookalike = broker.topic_prefix.rstrip(".") + "x.packets"
    await ensure_topics(broker, [TopicSpec(lookalike, 1, 1)])
    mine = {s.name for s in topic_specs(broker)}

    res = xdpguard(broker, "topics", "delete")  # without --yes: lists, deletes nothing
    assert res.returncode == 1 and set(res.stdout.split()) == mine
    assert await names_under(broker) == mine

    res = xdpguard(broker, "topics", "delete", "--yes")
    assert res.returncode == 0, res
    assert sorted(res.stdout.splitlines()) == sorted(f"deleted {n}" for n in mine)
    for n in mine:
        await wait_for_absent(broker, n)
    left = set(await list_topics(broker))
    assert other.topic(PACKETS) in left and lookalike in left

    res = xdpguard(broker, "topics", "delete", "--yes", other.topic(PACKETS))
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res
    assert other.topic(PACKETS) in set(await list_topics(broker))


async def test_list_and_groups_show_this_prefix_unless_all(broker, kafka_bootstrap):
    other = other_prefix(kafka_bootstrap)
    await ensure_topics(broker)
    await ensure_topics(other, [TopicSpec(other.topic(PACKETS), 2, 1)])
    await produce_raw(broker, broker.topic(PACKETS), [(None, b"x")] * 3)
    mine_group, other_group = broker.topic("enforcer-n1"), other.topic("enforcer-n1")
    await commit_group(broker, mine_group, {broker.topic(PACKETS): 0})
    await commit_group(other, other_group, {other.topic(PACKETS): 0})

    listed = [ln.split("\t")[0] for ln in xdpguard(broker, "topics", "list").stdout.splitlines()]
    assert sorted(listed) == sorted(s.name for s in topic_specs(broker))
    everything = {ln.split("\t")[0] for ln in
                  xdpguard(broker, "topics", "list", "--all").stdout.splitlines()}
    assert set(listed) | {other.topic(PACKETS)} <= everything

    def group_ids(*extra):
        out = xdpguard(broker, "groups", *extra).stdout.splitlines()
        return {ln.split()[0] for ln in out if ln and not ln.startswith(" ")}

    assert group_ids() == {mine_group}
    assert {mine_group, other_group} <= group_ids("--all")
    other_view = xdpguard(other, "groups").stdout.splitlines()
    assert {ln.split()[0] for ln in other_view if not ln.startswith(" ")} == {other_group}


def _packets() -> list[Packet]:
    ports = [22, 80, 22, 443, 53]
    return [Packet(ts_ns=1_700_000_000_000_000_000 + i, src=f"10.0.0.{i + 1}",
                   dst=f"192.168.1.{9 + i % 2}", sport=40000 + i, dport=port,
                   proto=17 if port == 53 else 6, tcp_flags=0 if port == 53 else 0x12,
                   length=60 + i, ifindex=3, sample_rate=4, node="edge-7", seq=100 + i)
            for i, port in enumerate(ports)]


async def test_tail_prints_one_json_object_per_packet_event(broker):
    await ensure_topics(broker)
    sent = _packets()
    await produce_raw(broker, broker.topic(PACKETS), [(None, encode_packets(sent))])  # one record

    res = xdpguard(broker, "topics", "tail", "packets", "--from-beginning")
    assert res.returncode == 0 and res.stderr == "", res
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert got == [dataclasses.asdict(p) for p in sent]
    # jq 'select(.dport == 22)'
    assert [(g["src"], g["seq"]) for g in got if g["dport"] == 22] == [("10.0.0.1", 100),
                                                                      ("10.0.0.3", 102)]
    meta = [json.loads(line) for line in
            xdpguard(broker, "topics", "tail", "packets", "--meta").stdout.splitlines()]
    assert len(meta) == 5 and len({(m["partition"], m["offset"]) for m in meta}) == 1


async def test_capture_packet_records_carry_no_key_as_docs_say(broker):
    """docs/events.md: packet records carry no Kafka key (a micro-batch holds many sources),
    and `topics tail packets --meta` shows "key": null."""
    await ensure_topics(broker)
    pub = Publisher(broker, batch_events=100)
    await pub.start()
    try:
        assert pub.submit(_packets()) == 5
        assert await pub.flush(30)
    finally:
        await pub.stop()
    res = xdpguard(broker, "topics", "tail", "packets", "--meta", "--from-beginning")
    meta = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(meta) == 5 and {m["key"] for m in meta} == {None}
    assert sorted(m["value"]["dport"] for m in meta) == [22, 22, 53, 80, 443]
    assert {m["value"]["node"] for m in meta} == {broker.node_id}
    docs = (os.path.dirname(__file__) + "/../../docs/events.md")
    text = " ".join(open(docs).read().split())
    assert "The records themselves carry **no Kafka key**" in text
    assert '`xdpguard topics tail packets --meta` shows `"key": null`' in text


async def test_groups_show_a_scorer_worker_by_client_id_with_lag_per_topic(broker, model, tmp_path):
    w = await start_worker(broker, model, tmp_path, name="g1")
    try:
        t0 = window_ahead()
        await produce_packets(broker, with_seq(benign(t0, 2, clients=5)))
        await wait_for(lambda: w.metric("xdpguard_scorer_flows_scored_total"), 40, "flows scored")
        group = broker.topic("xdpguard-scorer")
        packets = broker.topic(PACKETS)

        async def described():
            res = xdpguard(broker, "groups", group, "--json")
            assert res.returncode == 0, res
            info = json.loads(res.stdout)
            return info if info["internal_lag_by_topic"] and info["members"] else None

        info = await wait_for_async(described, 30, "the scorer group with internal offsets")
        assert [m["client_id"] for m in info["members"]] == \
            [f"xdpguard-scorer-{broker.node_id}-{w.proc.pid}"]
        assert set(info["lag_by_topic"]) == {packets}
        assert info["internal_lag_by_topic"] and \
            all(t.startswith(f"{group}-") for t in info["internal_lag_by_topic"])
        assert f"{group}-scorer-flows" in info["internal_lag_by_topic"]
        assert info["lag"] == info["lag_by_topic"][packets]

        text = xdpguard(broker, "groups").stdout.splitlines()
        assert text[0].startswith(f"{group}  state=")
        assert text[1].startswith(f"  member xdpguard-scorer-{broker.node_id}-{w.proc.pid} (")
        own = [ln for ln in text if ln.startswith(f"  lag {packets}: ")]
        assert len(own) == 1 and "(internal)" not in own[0]
        assert re.search(r"\(p\d+ \d+(, p\d+ \d+)*\)$", own[0]), own[0]  # lag per partition
        internal = [ln for ln in text if ln.startswith(f"  lag {group}-")]
        assert internal and all(ln.endswith("(internal)") for ln in internal)
        assert text.index(own[0]) < text.index(internal[0])  # input first, internal apart
    finally:
        assert w.stop() == 0


async def wait_for_async(probe, timeout: float, what: str):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
