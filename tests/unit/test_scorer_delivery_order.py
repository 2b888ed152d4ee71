"""What says a window is done is written only after what it supersedes is delivered.

Faust's producer puts batches in requests as they fill, one topic's apart from another's, and a
worker killed between two requests keeps the first. Stage 1 deleted a closed window's records and
moved its marker right after QUEUEING the window's flow chunks, and stage 2 deleted a settled
window's chunks and moved its marker before even queueing its verdicts: a SIGKILL between the two
left flows that no owner would send or score again (1,404 of 1,414 verdicts in one CI run of
tests/broker/test_scorer_scaleout.py). Here the sends are futures the test resolves by hand: no
changelog write that supersedes them may come before."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiokafka.errors import (KafkaTimeoutError, MessageSizeTooLargeError,
                             NotLeaderForPartitionError)
from faust.exceptions import ProducerSendError

from services.scorer import collect as collect_mod
from services.scorer import windows
from services.scorer.chunks import FlowChunk
from services.scorer.scoring import VerdictPolicy
from services.scorer.tables import is_mark
from services.wire.codec import decode_packet_columns, decode_verdict
from tests.support.packet_records import encode_packets
from tests.support.scorer_sends import NOW, W, HeldSends, settle_a_little, wired  # noqa: F401
from tests.support.scorer_traffic import benign

pytestmark = pytest.mark.unit


async def stored_windows(ingest, p: int, starts: list[int]):
    """Source partition `p` with one benign record per window start in `starts` (offsets 0,
    1, ...), folded in and stored as the ingest agent would."""
    part = ingest.partition(p)
    for off, ws in enumerate(starts):
        rec = encode_packets(benign(ws, 0.5, clients=2, seed=off))
        part.add(off, decode_packet_columns(rec))
        await ingest.store.put_record(p, off, rec)
    return part


def one_window(collect, monkeypatch, seed: int) -> list:
    """Stage 2 set to publish a pass verdict per flow (scores 0: something to send), and the
    flow chunks of one benign window at NOW from source partition 0."""
    collect.policy = VerdictPolicy(emit_pass=True)
    monkeypatch.setattr(collect_mod, "score_windows",
                        lambda det, closed: [np.zeros(len(w.keys)) for w in closed])
    sp = windows.SourcePartition(0, W, 0, lambda: 0.0)
    sp.add(0, decode_packet_columns(encode_packets(benign(NOW, 0.5, clients=3, seed=seed))))
    return sp.close(NOW, 1)[0]


async def stored_chunks(collect, part, chunks: list) -> None:
    """`chunks` added to flows partition 0 (`part`) and stored, as on_chunk would."""
    for c in chunks:
        key = collect.store.chunk_key(0, c)
        part.add(key, FlowChunk.decode(c.encode()))
        await collect.store.put_chunk(0, key, c.encode())


def test_stage1_deletes_records_and_moves_its_marker_only_after_the_chunks_are_delivered(
        wired, monkeypatch):
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)
    early = encode_packets(benign(NOW, 0.5, clients=3, seed=1))
    later = encode_packets(benign(NOW + 4 * W, 0.5, clients=3, seed=2))

    async def scenario():
        part = ingest.partition(1)
        for off, rec in ((0, early), (1, later)):
            part.add(off, decode_packet_columns(rec))
            await ingest.store.put_record(1, off, rec)
        assert NOW in part.due()
        before = len(wired.changelog)
        closing = asyncio.create_task(ingest.close([1]))
        await settle_a_little()
        chunks = [s for s in flows.sent if FlowChunk.decode(s[1]).window_ns == NOW]
        assert chunks and not closing.done()  # queued, waiting for their delivery
        assert wired.changelog[before:] == []  # nothing that says the window is done
        flows.deliver()
        await asyncio.wait_for(closing, 5)
        after = wired.changelog[before:]
        keys = [k for _, p, k, v in after if v is None]
        assert ingest.store.record_key(1, 0) in keys  # its record deleted now
        assert any(k == ingest.store.marker_key(1) for _, _, k, _ in after)
        assert ingest.store.marker(1)[0] >= NOW
        assert ingest.inflight[1] == []
    asyncio.run(scenario())


def test_stage1_a_send_the_producer_gave_up_on_leaves_the_window_open_and_sends_it_again(
        wired, monkeypatch, caplog):
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)

    async def scenario():
        part = await stored_windows(ingest, 2, [NOW, NOW + 4 * W])
        before = len(wired.changelog)
        closing = asyncio.create_task(ingest.close([2]))
        await settle_a_little()
        first = len(flows.sent)
        flows.futures[0].set_exception(KafkaTimeoutError())
        flows.deliver()
        await asyncio.wait_for(closing, 5)
        # nothing says the window is done: its record kept, no marker
        assert wired.changelog[before:] == [] and ingest.store.marker(2) is None
        assert ingest.sources[2] is not part  # rebuilt from the table
        assert NOW in ingest.sources[2].windows
        again = asyncio.create_task(ingest.close([2]))
        await settle_a_little()
        resent = [FlowChunk.decode(v).window_ns for k, v, _ in flows.sent[first:]
                  if not is_mark(k)]
        assert NOW in resent
        flows.deliver()
        await asyncio.wait_for(again, 5)
        assert ingest.store.marker(2)[0] >= NOW and ingest.inflight[2] == []
        assert ingest.store.record_key(2, 0) in [k for _, _, k, v in wired.changelog if v is None]
    asyncio.run(scenario())
    assert "not delivered" in caplog.text and "packets partition 2" in caplog.text


def test_stage1_two_closers_write_the_marker_only_when_neither_has_chunks_to_queue_or_deliver(
        wired, monkeypatch):
    """The ingest agent and the timer close one partition at once: while one is still queueing
    window A's chunks, the other closes window B and its chunks are delivered. The marker
    (which covers A too) and the records' deletions wait for A's chunks."""
    ingest, flows = wired.ingest, HeldSends()
    gate = asyncio.Event()

    async def send(key=None, value=None, partition=None, **kw):
        if value and not is_mark(key) and FlowChunk.decode(value).window_ns == NOW \
                and not gate.is_set():
            await gate.wait()  # window A's queueing stalls (a full producer buffer)
        return await flows.send(key, value, partition)
    monkeypatch.setattr(wired.topics.flows, "send", send)

    async def scenario():
        part = await stored_windows(ingest, 3, [NOW, NOW + W, NOW + 5 * W])
        before = len(wired.changelog)
        due = part.due()
        assert due[:2] == [NOW, NOW + W]
        agent = asyncio.create_task(ingest._send(3, part, [NOW]))  # stalls inside window A
        await settle_a_little()
        assert part.sending == {NOW} and not agent.done()
        timer = asyncio.create_task(ingest.close([3]))  # closes B, delivered at once
        for _ in range(20):
            await settle_a_little()
            flows.deliver()
        await asyncio.wait_for(timer, 5)
        assert NOW + W not in part.windows
        assert wired.changelog[before:] == []  # A is still being queued: nothing written
        gate.set()
        await asyncio.wait_for(agent, 5)
        settling = asyncio.create_task(ingest.settle(3, part))
        for _ in range(20):
            await settle_a_little()
            flows.deliver()
        await asyncio.wait_for(settling, 5)
        assert ingest.store.marker(3)[0] >= NOW + W
        deleted = [k for _, _, k, v in wired.changelog[before:] if v is None]
        assert {ingest.store.record_key(3, 0), ingest.store.record_key(3, 1)} <= set(deleted)
    asyncio.run(scenario())


def test_stage1_a_settle_writes_what_it_waited_for_while_later_windows_are_in_flight(
        wired, monkeypatch):
    """Acknowledgements slower than windows close: window A's chunks are delivered while
    window B's, queued by the other closer during the wait, are not yet. A's records are
    deleted and the marker moves past A at once, not only when nothing at all is in flight
    (which under a slow broker never came, and the table grew without bound); B's follow
    once its chunks are delivered."""
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)

    async def scenario():
        part = await stored_windows(ingest, 4, [NOW, NOW + W, NOW + 5 * W])
        before = len(wired.changelog)
        assert await ingest._send(4, part, [NOW])
        a_sends = list(flows.futures)
        settling = asyncio.create_task(ingest.settle(4, part))  # waits for A's chunks
        await settle_a_little()
        assert await ingest._send(4, part, [NOW + W])  # B queued during that wait
        for f in a_sends:
            f.set_result(None)
        await asyncio.wait_for(settling, 5)
        deleted = [k for _, _, k, v in wired.changelog[before:] if v is None]
        assert ingest.store.record_key(4, 0) in deleted  # A's record
        assert ingest.store.record_key(4, 1) not in deleted  # B's chunks still in flight
        assert NOW <= ingest.store.marker(4)[0] < NOW + W
        flows.deliver()
        await asyncio.wait_for(ingest.settle(4, part), 5)
        deleted = [k for _, _, k, v in wired.changelog[before:] if v is None]
        assert ingest.store.record_key(4, 1) in deleted and ingest.inflight[4] == []
        assert ingest.store.marker(4)[0] >= NOW + W and ingest.done[4] == []
    asyncio.run(scenario())


def test_stage2_deletes_chunks_and_moves_its_marker_only_after_the_verdicts_are_delivered(
        wired, monkeypatch):
    collect, verdicts = wired.collect, HeldSends()
    monkeypatch.setattr(wired.topics.verdicts, "send", verdicts.send)
    marks = HeldSends()  # the tally marks to the other partitions: delivered at once
    monkeypatch.setattr(wired.topics.flows, "send", marks.send)
    chunks = one_window(collect, monkeypatch, seed=3)
    part = collect.partition(0)

    async def scenario():
        await stored_chunks(collect, part, chunks)
        for p in range(collect.n):
            part.mark(p, NOW)
            part.peer(p, NOW, {})  # every partition is past NOW: the window settles
        before = len(wired.changelog)
        closing = asyncio.create_task(collect.close())
        for _ in range(200):
            await asyncio.sleep(0.01)
            marks.deliver()
            if verdicts.sent:
                break
        await settle_a_little()
        assert verdicts.sent and not closing.done()
        assert [decode_verdict(v).rule.action.value for _, v, _ in verdicts.sent][0] == "pass"
        assert wired.changelog[before:] == []  # chunks kept, marker not moved
        assert collect.store.chunks(0)
        verdicts.deliver()
        await asyncio.wait_for(closing, 5)
        assert collect.store.chunks(0) == []
        assert any(k == collect.store.marker_key(0) for _, _, k, _ in wired.changelog[before:])
    asyncio.run(scenario())


def test_stage2_verdicts_not_delivered_keep_the_chunks_and_the_window_is_scored_again(
        wired, monkeypatch, caplog):
    collect, verdicts, marks = wired.collect, HeldSends(), HeldSends()
    monkeypatch.setattr(wired.topics.verdicts, "send", verdicts.send)
    monkeypatch.setattr(wired.topics.flows, "send", marks.send)
    chunks = one_window(collect, monkeypatch, seed=4)

    async def fill():
        part = collect.partition(0)
        for p in range(collect.n):
            part.mark(p, NOW)
            part.peer(p, NOW, {})
        return part

    async def close_with(outcome):
        closing = asyncio.create_task(collect.close())
        for _ in range(300):
            await asyncio.sleep(0.01)
            marks.deliver()
            if len(verdicts.futures) > sent_before:
                break
        await settle_a_little()
        for f in verdicts.futures[sent_before:]:
            outcome(f)
        await asyncio.wait_for(closing, 5)

    async def scenario():
        nonlocal sent_before
        part = await fill()
        await stored_chunks(collect, part, chunks)
        before = len(wired.changelog)
        await close_with(lambda f: f.set_exception(NotLeaderForPartitionError()))
        assert wired.changelog[before:] == [] and collect.store.chunks(0)
        assert 0 not in collect.dests  # forgotten: restored from the table at its next record
        first = [decode_verdict(v).verdict_id for _, v, _ in verdicts.sent]
        sent_before = len(verdicts.futures)
        await fill()  # restored (its chunks from the table), marks past the window again
        await close_with(lambda f: f.set_result(None))
        again = [decode_verdict(v).verdict_id for _, v, _ in verdicts.sent[len(first):]]
        assert first and sorted(again) == sorted(first)  # scored again: the same verdicts
        assert collect.store.chunks(0) == []
        assert any(k == collect.store.marker_key(0) for _, _, k, _ in wired.changelog[before:])
    sent_before = 0
    asyncio.run(scenario())
    assert "not delivered" in caplog.text and "forgotten" in caplog.text


def test_delivered_gives_up_on_a_send_never_acknowledged_and_reports_it(caplog):
    from services.scorer.delivery import delivered

    async def scenario():
        loop = asyncio.get_running_loop()
        ok, stuck = loop.create_future(), loop.create_future()
        ok.set_result(None)
        sends = [ok, stuck]
        assert await delivered(sends, "test sends", timeout=0.05) is False
        assert sends == []  # taken out: the caller sends them again
        stuck.set_exception(KafkaTimeoutError())  # failing after all: nobody waits for it
        await asyncio.sleep(0)
        assert not stuck._log_traceback  # retrieved: asyncio reports nothing about it
        done = loop.create_future()
        done.set_result(None)
        assert await delivered([done], "test sends", timeout=0.05) is True
        assert await delivered([], "test sends") is True
    asyncio.run(scenario())
    assert "1 not acknowledged" in caplog.text


def test_refused_tells_a_record_the_broker_will_never_take_from_one_that_may_pass_later():
    from services.scorer.delivery import refused
    assert refused(MessageSizeTooLargeError()) and refused(TypeError("not encodable"))
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = MessageSizeTooLargeError()
    assert refused(wrapped)
    for exc in (KafkaTimeoutError(), NotLeaderForPartitionError(), ConnectionResetError(),
                asyncio.TimeoutError()):
        assert not refused(exc), exc
    transient = ProducerSendError("Error while sending")
    transient.__cause__ = KafkaTimeoutError()
    assert not refused(transient)


def test_stage1_a_chunk_refused_for_good_is_counted_and_written_past_not_sent_forever(
        wired, monkeypatch, caplog):
    """A chunk too large for the topic fails the same way however often it is sent: the
    window is written past (counted, logged), the next windows still close."""
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)
    lost = wired.metrics.lost.labels("flow chunks")

    async def scenario():
        part = await stored_windows(ingest, 4, [NOW, NOW + 4 * W])
        closing = asyncio.create_task(ingest.close([4]))
        await settle_a_little()
        flows.futures[0].set_exception(MessageSizeTooLargeError())
        flows.deliver()
        await asyncio.wait_for(closing, 5)
        assert ingest.sources[4] is part  # not rebuilt: nothing to send again
        assert ingest.store.marker(4)[0] >= NOW
        assert ingest.store.record_key(4, 0) in [k for _, _, k, v in wired.changelog
                                                 if v is None]
    asyncio.run(scenario())
    assert lost._value.get() == 1
    assert "refused for good" in caplog.text


def test_stage1_a_send_that_raises_refused_skips_the_chunk_and_keeps_the_partition(
        wired, monkeypatch, caplog):
    ingest, flows = wired.ingest, HeldSends()

    async def send(key=None, value=None, partition=None, **kw):
        if value and not is_mark(key):
            err = ProducerSendError("Error while sending")
            err.__cause__ = MessageSizeTooLargeError()
            raise err
        return await flows.send(key, value, partition)
    monkeypatch.setattr(wired.topics.flows, "send", send)

    async def scenario():
        part = ingest.partition(5)
        rec = encode_packets(benign(NOW, 0.5, clients=2, seed=9))
        part.add(0, decode_packet_columns(rec))
        await ingest.store.put_record(5, 0, rec)
        part.add(1, decode_packet_columns(encode_packets(benign(NOW + 4 * W, 0.5, clients=2,
                                                                seed=10))))
        await asyncio.wait_for(ingest.close([5]), 5)
        assert ingest.sources[5] is part and NOW not in part.windows and not part.sending
        assert ingest.store.marker(5)[0] >= NOW
    asyncio.run(scenario())
    assert wired.metrics.lost.labels("flow chunks")._value.get() >= 1
    assert "refused, not sent" in caplog.text


def test_refused_is_not_a_producer_stopping_for_a_shutdown():
    from faust.exceptions import NotReady
    from services.scorer.delivery import refused
    assert not refused(NotReady("Producer service not yet started"))


def test_a_good_marker_written_after_a_bad_one_was_met_is_not_deleted_with_it(
        wired, monkeypatch):
    """restore() meets a bad stored marker and queues it for flush_bad; settle then writes a
    good one under the same key. Dead-lettering the bad one must not delete the good one."""
    from services.scorer.faust_internals import write_through
    ingest, flows, dead = wired.ingest, HeldSends(), HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)
    monkeypatch.setattr(wired.topics.dead, "send", dead.send)

    async def scenario():
        await write_through(ingest.store.table, 6, ingest.store.marker_key(6), b"\xc1bad")
        part = await stored_windows(ingest, 6, [NOW, NOW + 4 * W])  # restores: marker bad
        assert ingest.bad and ingest.bad[0][1] == ingest.store.marker_key(6)
        closing = asyncio.create_task(ingest.close([6]))
        for _ in range(20):
            await settle_a_little()
            flows.deliver()
        await asyncio.wait_for(closing, 5)
        assert ingest.sources[6] is part and ingest.store.marker(6)[0] >= NOW
        flushing = asyncio.create_task(ingest.flush_bad())
        await settle_a_little()
        dead.deliver()
        await asyncio.wait_for(flushing, 5)
        assert len(dead.sent) == 1 and not ingest.bad
        assert ingest.store.marker(6)[0] >= NOW
    asyncio.run(scenario())


def test_stage1_a_window_that_cannot_be_closed_has_its_records_deleted_not_kept_forever(
        wired, monkeypatch, caplog):
    ingest, flows = wired.ingest, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", flows.send)
    real = windows.SourcePartition._source_features

    def broken(self, ws, *a):
        if ws == NOW:
            raise ValueError("a bug")
        return real(self, ws, *a)
    monkeypatch.setattr(windows.SourcePartition, "_source_features", broken)

    async def scenario():
        part = await stored_windows(ingest, 7, [NOW, NOW + 4 * W])
        closing = asyncio.create_task(ingest.close([7]))
        for _ in range(20):
            await settle_a_little()
            flows.deliver()
        await asyncio.wait_for(closing, 5)
        assert ingest.sources[7] is part and not part.sending
        assert [off for off, _ in ingest.store.records(7)] == [1]  # NOW's record deleted
        assert ingest.store.marker(7)[0] >= NOW
    asyncio.run(scenario())
    assert wired.metrics.lost.labels("window")._value.get() == 1
    assert "window %d not closed" % NOW in caplog.text


def close_with_verdict_sends_raising(wired, monkeypatch, cause: Exception, seed: int) -> None:
    """One settled window at stage 2 (flows partition 0) closed while every verdict send
    raises faust's ProducerSendError from `cause`; the other sends are delivered."""
    async def raising(key=None, value=None, **_):
        err = ProducerSendError("Error while sending")
        err.__cause__ = cause
        raise err
    close_one_window(wired, monkeypatch, raising, seed)


def close_one_window(wired, monkeypatch, verdict_send, seed: int, after=None) -> None:
    """One settled window at stage 2 (flows partition 0) closed with `verdict_send` as the
    verdicts topic's send; the other sends are delivered. `after`: a coroutine function
    awaited on the same loop once the pass has returned."""
    collect, marks = wired.collect, HeldSends()
    monkeypatch.setattr(wired.topics.flows, "send", marks.send)
    monkeypatch.setattr(wired.topics.verdicts, "send", verdict_send)
    chunks = one_window(collect, monkeypatch, seed=seed)

    async def scenario():
        part = collect.partition(0)
        await stored_chunks(collect, part, chunks)
        for p in range(collect.n):
            part.mark(p, NOW)
            part.peer(p, NOW, {})
        closing = asyncio.create_task(collect.close())
        for _ in range(300):
            await asyncio.sleep(0.01)
            marks.deliver()
            if closing.done():
                break
        await asyncio.wait_for(closing, 5)  # returns: nothing raised out of the pass
        if after is not None:
            await after()
    asyncio.run(scenario())


def test_stage2_a_verdict_refused_for_good_is_counted_and_the_window_settles(
        wired, monkeypatch, caplog):
    close_with_verdict_sends_raising(wired, monkeypatch, MessageSizeTooLargeError(), seed=5)
    collect = wired.collect
    assert collect.store.chunks(0) == [] and collect.store.marker(0, collect.n)[0] >= NOW
    assert wired.metrics.lost.labels("verdicts")._value.get() >= 1
    assert "refused, not sent" in caplog.text


def test_stage2_a_verdict_send_that_raises_a_passing_error_forgets_the_partition_not_the_worker(
        wired, monkeypatch, caplog):
    """The broker down: the send itself raises (faust's ProducerSendError from aiokafka's
    timeout). The pass ends as if the verdicts were not delivered: chunks kept, the partition
    forgotten and restored from the table, its window scored again; the worker goes on."""
    close_with_verdict_sends_raising(wired, monkeypatch, KafkaTimeoutError(), seed=6)
    collect = wired.collect
    assert 0 not in collect.dests and collect.store.chunks(0)
    assert collect.store.marker(0, collect.n) is None
    assert "not sent" in caplog.text and "forgotten" in caplog.text


def test_a_good_chunk_stored_over_a_bad_one_is_not_deleted_with_it(wired, monkeypatch):
    """A stored chunk that no longer decodes (say, an older format) is queued for flush_bad at
    the restore; stage 1 sends the window again and the good chunk is stored under the same
    key. Dead-lettering the bad value must leave the good one in the table."""
    collect, dead = wired.collect, HeldSends()
    monkeypatch.setattr(wired.topics.dead, "send", dead.send)
    chunks = one_window(collect, monkeypatch, seed=7)
    key = collect.store.chunk_key(0, chunks[0])

    async def scenario():
        await collect.store.put_chunk(0, key, b"\xc1not a chunk")
        part = collect.partition(0)  # the restore meets it
        assert [k for _, k, _, _ in collect.bad] == [key]
        part.add(key, FlowChunk.decode(chunks[0].encode()))
        await collect.store.put_chunk(0, key, chunks[0].encode())  # sent again, stored
        flushing = asyncio.create_task(collect.flush_bad())
        await settle_a_little()
        dead.deliver()
        await asyncio.wait_for(flushing, 5)
        assert len(dead.sent) == 1 and not collect.bad
        assert collect.store.chunks(0) == [(key, chunks[0].encode())]
    asyncio.run(scenario())


def test_stage2_a_bug_while_scoring_still_stops_the_worker_not_a_pass_repeated_forever(
        wired, monkeypatch):
    """Only a send's error that may pass ends the pass quietly; a bug (here the model
    schedule raising) is raised, as before, instead of forgetting and re-scoring every tick."""
    collect = wired.collect

    def broken(ws):
        raise ValueError("a bug")
    monkeypatch.setattr(collect.models.schedule, "for_window", broken)
    with pytest.raises(ValueError, match="a bug"):
        close_with_verdict_sends_raising(wired, monkeypatch, KafkaTimeoutError(), seed=8)
    assert 0 in collect.dests and collect.store.chunks(0)


def test_stage2_verdicts_queued_before_a_send_raised_are_not_left_unretrieved(
        wired, monkeypatch):
    """The pass's first verdict is queued, the second's send raises (the broker down): the
    pass ends and the window is scored again. The first one's future, which fails later, is
    given up on with the pass (delivery.abandon): its error is retrieved when it comes, so
    asyncio reports no "Future exception was never retrieved" for a send already logged as
    not sent (asyncio's `_log_traceback` is what that report reads)."""
    held, retrieved = HeldSends(), []

    async def second_raises(key=None, value=None, **_):
        if held.futures:
            raise KafkaTimeoutError()
        return await held.send(key, value)

    async def fail_later():
        assert len(held.futures) == 1 and 0 not in wired.collect.dests
        held.futures[0].set_exception(KafkaTimeoutError())
        await settle_a_little()
        retrieved.append(not held.futures[0]._log_traceback)
    close_one_window(wired, monkeypatch, second_raises, seed=9, after=fail_later)
    assert retrieved == [True]
