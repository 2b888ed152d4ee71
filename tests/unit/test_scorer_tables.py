"""The window tables' key formats (services/scorer/tables.py, the only place they are written):
a restore replays a partition's records in offset order and only that partition's, every write
goes to the changelog partition of its key, and progress marks round-trip or fail as DecodeError."""
from __future__ import annotations

import asyncio

import msgpack
import pytest

from services.common.errors import DecodeError
from services.scorer.tables import (DestChunks, SourceRecords, decode_mark, encode_mark, is_mark,
                                    mark_key)
from services.scorer.chunks import FlowChunk
from tests.support.scorer_app import scorer_without_broker


@pytest.fixture
def wired(monkeypatch):
    """The app's topics with their real tables (memory store), and the changelog sends of both
    tables, recorded (name, partition, key, value) instead of produced."""
    sc = scorer_without_broker()
    sent = []
    for table in (sc.topics.src_table, sc.topics.dst_table):
        async def send(key, value, partition, _name=table.name):
            sent.append((_name, partition, key, value))
        monkeypatch.setattr(table.changelog_topic, "send", send)
    return sc.topics, sent


def test_records_replay_in_offset_order_and_only_their_partition(wired):
    topics, sent = wired
    store = SourceRecords(topics.src_table)

    async def fill():
        for p, off in ((1, 100), (1, 9), (11, 5), (1, 10)):
            await store.put_record(p, off, b"rec%d" % off)
        await store.put_marker(1, 4_000_000_000, 100)
        await store.put_record(1, 9, None)  # every window of offset 9 closed
    asyncio.run(fill())
    assert store.records(1) == [(10, b"rec10"), (100, b"rec100")]
    assert store.records(11) == [(5, b"rec5")] and store.records(2) == []
    assert store.marker(1) == (4_000_000_000, 100) and store.marker(11) is None
    assert [(name, p) for name, p, _, _ in sent] == [("src-records", p) for p in
                                                             (1, 1, 11, 1, 1, 1)]
    assert sent[-1][2:] == (b"1/r/00000000000000000009", None)  # a tombstone


def test_chunks_are_keyed_by_window_source_and_index_and_replaced_when_resent(wired):
    topics, sent = wired
    store = DestChunks(topics.dst_table)
    chunk = FlowChunk(2_000_000_000, 3, 5, 0, [])
    key = store.chunk_key(5, chunk)
    assert key == b"5/c/2000000000/3/5/0"

    async def fill():
        await store.put_chunk(5, key, b"first")
        await store.put_chunk(5, key, b"again")
        await store.put_marker(5, 1_000_000_000, [7, 8])
    asyncio.run(fill())
    assert store.chunks(5) == [(key, b"again")] and store.chunks(6) == []
    assert store.marker(5, 2) == (1_000_000_000, [7, 8])
    assert {(name, p) for name, p, _, _ in sent} == {("dst-chunks", 5)}


def test_progress_marks_round_trip_and_a_bad_one_is_a_decode_error():
    assert mark_key(12) == b"mark/12" and is_mark(mark_key(12))
    assert not is_mark(None) and not is_mark(FlowChunk(0, 1, 2, 0, []).key())
    assert decode_mark(encode_mark(3, 5_000_000_000)) == (3, 5_000_000_000)
    for bad in (b"\xc1", msgpack.packb([1, 2, 3]), msgpack.packb(7), msgpack.packb(["a", 1])):
        with pytest.raises(DecodeError):
            decode_mark(bad)
