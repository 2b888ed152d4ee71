"""A bad value in the scorer's window tables must not stop a restore, once or at every restart
(issue 13, case 6: the reported flow chunk was stored, crashed the worker when its window closed,
and crashed the restarted worker again when it was reloaded from the changelog). Both stages'
restores dead-letter what does not decode (topic: the changelog, offset -1) and delete it; a
window that still cannot be closed is dead-lettered chunk by chunk and the others close."""
from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from services.detection.features import SRC_FEATURES
from services.scorer import dst_windows, faust_internals, windows
from services.scorer.chunks import ENTRIES_VERSION, FlowChunk
from services.wire.codec import decode_deadletter, decode_packet_columns
from tests.support.packet_records import encode_packets
from tests.support.scorer_app import scorer_without_broker
from tests.support.scorer_traffic import benign

W = 10**9
NOW = time.time_ns() // W * W - 5 * W


@pytest.fixture
def scorer(monkeypatch):
    """A Scorer over its real (memory) tables; changelog writes and dead letters recorded."""
    sc = scorer_without_broker()
    sc.dead = []
    for table in (sc.topics.src_table, sc.topics.dst_table):
        async def send(key, value, partition):
            pass
        monkeypatch.setattr(table.changelog_topic, "send", send)

    async def dead(value, **_):
        sc.dead.append(decode_deadletter(value))
    monkeypatch.setattr(sc.topics.dead, "send", dead)
    sc.sent_flows = []

    async def flows(key, value, partition):
        sc.sent_flows.append((key, partition))
    monkeypatch.setattr(sc.topics.flows, "send", flows)
    return sc


def reported_chunk() -> bytes:
    """The report: flow entries of the right length, a string where the packet count belongs."""
    f = ["10.0.0.1", "10.0.0.2", 1, 2, 6, NOW, NOW, "x", 60, 2, 0, "node-a",
         *[0.0] * len(SRC_FEATURES), 0]
    return msgpack.packb({"v": ENTRIES_VERSION, "t": "flows", "ws": NOW, "sp": 0, "dp": 2, "i": 0,
                          "f": [f], "s": [], "a": []}, use_bin_type=True)


def test_rel_a_bad_stored_record_or_marker_is_dead_lettered_and_deleted_not_replayed(scorer):
    src = scorer.ingest.store
    good = encode_packets(benign(NOW, 0.5, clients=2))

    async def scenario():
        await src.put_record(1, 5, good)
        await src.put_record(1, 6, b"\xc1 not msgpack")
        await faust_internals.write_through(src.table, 1, b"1/hw", msgpack.packb(["x", None]))
        part = scorer.ingest.restore(1)
        assert part.records == {5: NOW} and len(scorer.ingest.bad) == 2
        await scorer.ingest.flush_bad()
        assert [r for r, _ in src.records(1)] == [5] and src.marker(1) is None
        scorer.ingest.restore(1)  # the next restore meets neither again
        assert scorer.ingest.bad == []
    asyncio.run(scenario())
    reasons = sorted(d.reason for d in scorer.dead)
    assert len(reasons) == 2 and reasons[0].startswith("1/hw: bad marker")
    assert reasons[1].startswith("1/r/00000000000000000006: pk: not msgpack")
    assert all(d.source_topic == src.topic and d.offset == -1 for d in scorer.dead)


def test_rel_the_reported_chunk_in_the_table_is_dead_lettered_and_deleted(scorer):
    dst = scorer.collect.store
    key = b"2/c/%d/0/2/0" % NOW

    async def scenario():
        await dst.put_chunk(2, key, reported_chunk())
        part = scorer.collect.partition(2)
        assert part.windows == {}
        await scorer.collect.close()  # flushes the bad value
        assert dst.chunks(2) == []
    asyncio.run(scenario())
    [d] = scorer.dead
    assert "packets 'x' is not an integer" in d.reason and d.raw == reported_chunk()


def test_rel_a_window_that_cannot_close_is_dead_lettered_and_the_others_close(scorer, monkeypatch):
    collect = scorer.collect
    part = collect.partition(0)
    chunks = []
    for ws in (NOW - 2 * W, NOW - W):
        sp = windows.SourcePartition(0, W, 0, lambda: 0.0)
        sp.add(0, decode_packet_columns(encode_packets(benign(ws, 0.5, clients=2))))
        chunks += sp.close(ws, 1)[0]
    for c in chunks:
        part.add(collect.store.chunk_key(0, c), FlowChunk.decode(c.encode()))
    for p in range(collect.n):
        part.mark(p, NOW)
        part.peer(p, NOW, {})  # every stage 2 partition has closed up to NOW: windows settle
    real_close = dst_windows.DstPartition.close

    def close(self, ws):
        if ws == NOW - 2 * W:
            raise TypeError("a bug in the aggregation")
        return real_close(self, ws)
    monkeypatch.setattr(dst_windows.DstPartition, "close", close)
    scored = []

    async def score(closed, sends):
        scored.extend(w.window_ns for w in closed)  # the verdicts' sends: none
    monkeypatch.setattr(collect, "_score", score)
    asyncio.run(collect.close())
    assert scored == [NOW - W] and part.windows == {}
    assert {d.reason for d in scorer.dead} == {f"window {NOW - 2 * W} not closed: TypeError: "
                                               f"a bug in the aggregation"}


@pytest.mark.parametrize("last", ["undecodable", "future-stamped"])
def test_rel_a_record_handled_but_not_stored_is_not_unread_after_a_restart(scorer, monkeypatch,
                                                                           last):
    """helper-72's stall: a quiet packets partition whose newest record was dead-lettered (or
    refused whole: every event stamped a minute ahead) has nothing in the records table for it,
    so after a restart that offset counted as unread for good; the partition was a backlog and
    no window of it (nor, in stage 2, of any destination) ever closed again. The group's
    committed offset says it was handled."""
    ingest = scorer.ingest
    good = encode_packets(benign(NOW, 0.5, clients=2))
    bad = b"\xc1 not msgpack" if last == "undecodable" else \
        encode_packets(benign(time.time_ns() + 60 * W, 0.2, clients=1))

    highwater = {3: 2}  # the broker's next offset: both records consumed and committed
    monkeypatch.setattr(faust_internals, "highwater", lambda app, tp: highwater[tp.partition])
    monkeypatch.setattr(faust_internals, "last_poll_ns", lambda app, tp: time.time_ns())
    committed = {}
    monkeypatch.setattr(faust_internals, "committed", lambda app, tp: committed.get(tp.partition))

    async def before():
        await ingest.on_packets(3, 0, good)
        await ingest.on_packets(3, 1, bad)
    asyncio.run(before())
    assert [off for off, _ in ingest.store.records(3)] == [0]  # the bad one is not stored
    ingest.update_backlog(3, ingest.partition(3))  # the tick's refresh: caught up while live
    assert not ingest.partition(3).backlog
    ingest.sources.clear()  # a restarted worker: the same tables, nothing in memory
    part = ingest.restore(3)
    ingest.update_backlog(3, part)
    assert part.backlog and ingest.unread(3) == 1  # before the fix, for good
    committed[3] = 2
    part = ingest.restore(3)
    ingest.update_backlog(3, part)
    assert not part.backlog and ingest.unread(3) == 0 and ingest.seen[3] == 1
