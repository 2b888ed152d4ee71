"""Stage 1's settle against a rebuild or a kill while it writes (review of d381d53, helper-70).

A settle writes the marker, then deletes the closed windows' records. Deletions first had let a
rebuild (a resend after another settle's chunks failed) or a worker killed in between find a
closed window's remaining records with no marker past it: the window came back open from part
of its records and was sent again under the same chunk keys, and stage 2 keeps the later copy
of a chunk, so the deleted records' flows were lost. Records a restore finds in closed windows
only are deleted at the next settle, never kept for good."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError

from services.scorer import dst_windows, windows
from services.scorer.chunks import FlowChunk
from services.scorer.tables import is_mark
from services.wire.codec import decode_packet_columns
from tests.support.packet_records import encode_packets
from tests.support.scorer_app import scorer_without_broker
from tests.support.scorer_traffic import benign
from tests.support.scorer_sends import NOW, W, HeldSends, settle_a_little, wired  # noqa: F401

pytestmark = pytest.mark.unit
RECORDS = [(0, NOW, 1), (1, NOW, 2), (2, NOW + W, 3), (3, NOW + 5 * W, 4)]


def held_deletion(wired, monkeypatch, log: list | None = None) -> asyncio.Event:
    """The changelog send deleting record 0 of packets partition 4 waits for the returned event
    (a full producer batch: aiokafka's add_message waits for it to drain); every changelog
    write that gets through is appended to `log` as (key, value)."""
    gate, table = asyncio.Event(), wired.topics.src_table
    plain = table.changelog_topic.send

    async def changelog(key, value, partition):
        if value is None and key == wired.ingest.store.record_key(4, 0) and not gate.is_set():
            await gate.wait()
        if log is not None:
            log.append((key, value))
        return await plain(key=key, value=value, partition=partition)
    monkeypatch.setattr(table.changelog_topic, "send", changelog)
    return gate


async def stored(ingest, p: int, records: list[tuple[int, int, int]]):
    """Packets partition `p` with one benign record per (offset, window start, seed) folded in
    and stored, as the ingest agent would."""
    part = ingest.partition(p)
    for off, ws, seed in records:
        rec = encode_packets(benign(ws, 0.5, clients=3, seed=seed))
        part.add(off, decode_packet_columns(rec))
        await ingest.store.put_record(p, off, rec)
    return part


async def two_settles(ingest, flows: HeldSends):
    """Packets partition 4 with RECORDS stored; window NOW sent, settle A waiting for it, then
    window NOW + W sent and settle B waiting for both. Returns (part, A, B, A's sends, B's)."""
    part = await stored(ingest, 4, RECORDS)
    assert await ingest._send(4, part, [NOW])
    a_sends = list(flows.futures)
    a = asyncio.create_task(ingest.settle(4, part))
    await settle_a_little()
    assert await ingest._send(4, part, [NOW + W])
    b = asyncio.create_task(ingest.settle(4, part))
    await settle_a_little()
    return part, a, b, a_sends, flows.futures[len(a_sends):]


def test_a_rebuild_while_a_settle_deletes_does_not_reopen_the_window(wired, monkeypatch):
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)
    gate = held_deletion(wired, monkeypatch)

    async def scenario():
        part, a, b, a_sends, b_sends = await two_settles(ingest, flows)
        for f in a_sends:
            f.set_result(None)
        await settle_a_little()  # A writes: its deletion of record 0 waits
        for f in b_sends:
            f.set_exception(KafkaTimeoutError())  # B: not delivered, the partition rebuilt
        await asyncio.wait_for(b, 5)
        gate.set()
        await asyncio.wait_for(a, 5)
        rebuilt = ingest.sources[4]
        assert rebuilt is not part
        assert NOW not in rebuilt.windows  # not open again from record 1 alone
        assert NOW + W in rebuilt.windows  # B's window, not delivered: open, sent again
        deleted = {k for _, _, k, v in wired.changelog if v is None}
        gone = {off for off in (0, 1) if ingest.store.record_key(4, off) in deleted}
        assert gone | set(ingest.done[4]) >= {0, 1}  # and neither kept for good
    asyncio.run(scenario())


def test_killed_between_a_marker_and_the_older_settles_deletions_leaves_nothing_for_good(
        wired, monkeypatch):
    """B's marker (past NOW + W) is in the changelog before A's deletions (A's first one
    waits); the worker is killed there. The next owner restores from that changelog: records 0
    and 1 fold into no open window and are queued for deletion, not replayed at every
    restore for good."""
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)
    log: list = []
    gate = held_deletion(wired, monkeypatch, log)

    async def scenario():
        _, a, b, _, _ = await two_settles(ingest, flows)
        flows.deliver()
        await asyncio.wait_for(b, 5)
        killed_at = len(log)  # SIGKILL here
        gate.set()
        await asyncio.wait_for(a, 5)
        deleted = [k for k, v in log if v is None]
        assert sorted(deleted) == sorted(set(deleted)) and len(deleted) == 3  # once each
        assert ingest.store.marker(4)[0] == NOW + W and ingest.done[4] == []
        return log[:killed_at]
    survived = asyncio.run(scenario())
    nxt = scorer_without_broker()
    data = nxt.topics.src_table.data
    for key, value in survived:
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    part = nxt.ingest.restore(4)
    left = [off for off, _ in nxt.ingest.store.records(4)]
    untracked = [off for off in left if off not in part.records
                 and off not in nxt.ingest.done.get(4, [])]
    assert 0 in left and not untracked


def test_a_closer_queueing_into_a_partition_rebuilt_meanwhile_stops_and_gives_up_its_sends(
        wired, monkeypatch):
    """Closer X queues window NOW + W's chunks (stalled on the second) when closer Y's settle
    finds window NOW's chunks failed and rebuilds the partition. X stops there (the rebuilt
    partition sends that window again) and its sends are given up: one that fails later is
    retrieved, not reported as never retrieved."""
    ingest, flows = wired.ingest, HeldSends()
    gate, queued = asyncio.Event(), {"n": 0}

    async def send(key=None, value=None, partition=None, **kw):
        if value and not is_mark(key) and FlowChunk.decode(value).window_ns == NOW + W:
            queued["n"] += 1
            if queued["n"] == 2 and not gate.is_set():
                await gate.wait()
        return await flows.send(key, value, partition)
    monkeypatch.setattr(wired.topics.flows, "send", send)

    async def scenario():
        part = await stored(ingest, 6, [(0, NOW, 1), (1, NOW + W, 2), (2, NOW + 5 * W, 3)])
        assert await ingest._send(6, part, [NOW])
        first = list(flows.futures)
        y = asyncio.create_task(ingest.settle(6, part))
        await settle_a_little()
        x = asyncio.create_task(ingest._send(6, part, [NOW + W]))
        await settle_a_little()
        first[0].set_exception(KafkaTimeoutError())
        for f in first[1:]:
            f.set_result(None)
        await asyncio.wait_for(y, 5)
        assert ingest.sources[6] is not part  # rebuilt
        gate.set()
        assert await asyncio.wait_for(x, 5) is False
        late = flows.futures[len(first):]
        assert late and queued["n"] == 2  # stopped after the send it was in
        for f in late:
            f.set_exception(KafkaTimeoutError())
        await asyncio.sleep(0)
        assert not [f for f in late if f._log_traceback]
    asyncio.run(scenario())


def test_stage2_a_dead_letter_that_raises_a_passing_error_ends_the_pass_not_the_worker(
        monkeypatch):
    """A window stage 2 cannot close is dead-lettered; the dead letter's send raises (the
    broker down). The pass ends as an undelivered one: the partition forgotten, restored
    from the table (its chunks still there) and tried again; close() returns."""
    sc = scorer_without_broker()
    for table in (sc.topics.src_table, sc.topics.dst_table):
        async def changelog(key, value, partition):
            pass
        monkeypatch.setattr(table.changelog_topic, "send", changelog)

    async def dead(value, **_):
        raise KafkaTimeoutError()
    monkeypatch.setattr(sc.topics.dead, "send", dead)

    async def flows(key, value, partition):
        pass
    monkeypatch.setattr(sc.topics.flows, "send", flows)
    collect = sc.collect
    part = collect.partition(0)
    sp = windows.SourcePartition(0, W, 0, lambda: 0.0)
    sp.add(0, decode_packet_columns(encode_packets(benign(NOW, 0.5, clients=2))))
    for c in sp.close(NOW, 1)[0]:
        part.add(collect.store.chunk_key(0, c), FlowChunk.decode(c.encode()))
    for p in range(collect.n):
        part.mark(p, NOW + W)
        part.peer(p, NOW + W, {})

    def close(self, ws):
        raise TypeError("a bug in the aggregation")
    monkeypatch.setattr(dst_windows.DstPartition, "close", close)
    asyncio.run(collect.close())
    assert 0 not in collect.dests
