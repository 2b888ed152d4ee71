"""Delivery of what the scorer sends: waiting for the broker's acknowledgement before writing
what supersedes a send, and telling a send that may pass later from one refused for good.

Plain asyncio over the futures `await topic.send(...)` returns (aiokafka's own: its errors arrive
unwrapped; an error raised by the send itself comes as faust's ProducerSendError from aiokafka's);
no faust internal is reached here. Used by both stages (ingest.IngestStage.settle,
collect.CollectStage.close, their flush_bad) before a changelog deletion or a marker
(docs/scorer.md, "Data flow": what says a window is done is written after delivery).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.exceptions import NotReady

log = logging.getLogger("xdpguard.scorer")

# dead_letter(topic, partition, offset, reason, raw) -> its send (None: nothing to wait for)
DeadLetters = Callable[[str, int, int, str, bytes], Awaitable["asyncio.Future | None"]]
DELIVERY_TIMEOUT_S = 60.0  # a send not acknowledged by then counts as not delivered


# What the producer or the broker will never take, however often it is sent: too large for the
# request (raised by the send) or the topic (through the future). Sending it again only loops.
REFUSED_ERRORS = (MessageSizeTooLargeError,)
# What may pass later: the network, the broker's errors (KafkaTimeoutError, non-retriable in
# aiokafka's terms, is a broker down), and a producer stopping with the worker (NotReady).
TRANSIENT_ERRORS = (KafkaError, OSError, asyncio.TimeoutError, asyncio.CancelledError, NotReady)


def refused(exc: BaseException) -> bool:
    """Whether a send that failed with `exc` would fail again for the same reason: the
    record refused for good (REFUSED_ERRORS), or an error that is neither Kafka's nor the
    network's (an encoding bug). Timeouts, connection errors and the broker's retriable
    errors are not (TRANSIENT_ERRORS), nor a producer stopped for a shutdown: the record may
    go through later, or the next owner sends it. Follows `__cause__` (faust raises
    ProducerSendError from aiokafka's error)."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    if any(isinstance(e, REFUSED_ERRORS) for e in chain):
        return True
    return not any(isinstance(e, TRANSIENT_ERRORS) for e in chain)


async def delivered(sends: list, what: str, timeout: float = DELIVERY_TIMEOUT_S,
                    lost: Callable[[int], None] | None = None) -> bool:
    """Wait until the sends in `sends` (the futures `await topic.send(...)` returns; more may
    be appended meanwhile: those are left in it) are acknowledged by the broker, and take
    them out of the list. For a write that supersedes them (a changelog deletion, a marker),
    so it is never durable before them: the producer puts batches in requests as they fill,
    and a process killed between two requests keeps the first.

    Returns True when every one was acknowledged, or failed in a way sending again cannot
    mend (`refused`: logged, their number passed to `lost`), so the caller writes past
    them instead of looping. False, logged with `what` they carried, when the producer gave
    up on some for a reason that may pass (after its own retries) or some were not
    acknowledged within `timeout` seconds (faust's own producer timeout is 20 minutes, and a
    future aiokafka cancelled can leave faust's pending for good): those are taken out of
    the list too, and the caller must not write what supersedes them (it sends them again
    instead)."""
    waiting = list(sends)
    if not waiting:
        return True
    _, pending = await asyncio.wait(waiting, timeout=timeout)
    failed = [f for f in waiting
              if f not in pending and (f.cancelled() or f.exception() is not None)]
    gone = set(waiting)
    sends[:] = [f for f in sends if f not in gone]
    abandon(list(pending))  # not waited for any longer
    if not failed and not pending:
        return True
    given_up = [f for f in failed if not f.cancelled() and refused(f.exception())]
    if given_up and len(given_up) == len(failed) and not pending:
        log.error("%d sends of %s refused for good, not sent again: %r", len(given_up), what,
                  given_up[0].exception())
        if lost is not None:
            lost(len(given_up))
        return True
    first = failed[0] if failed else None
    log.error("%d sends of %s not delivered (%d failed: %s; %d not acknowledged in %.0f s)",
              len(failed) + len(pending), what, len(failed),
              "-" if first is None else "cancelled" if first.cancelled()
              else repr(first.exception()), len(pending), timeout)
    return False


def abandon(sends: list) -> None:
    """Give up on the futures in `sends` (emptied): their pass is lost and its records will be
    sent again (stage 1 rebuilds the partition, stage 2 re-scores it), so nobody awaits them.
    They may still be acknowledged (a repeat carries the same keys and verdict ids); one that
    fails has its error retrieved when it does, so asyncio does not log "Future exception was
    never retrieved" for what the caller already logged as not sent."""
    for f in sends:
        f.add_done_callback(_retrieve)
    sends.clear()


def _retrieve(f: asyncio.Future) -> None:
    if not f.cancelled():
        f.exception()


async def send(start: Callable[[], Awaitable[asyncio.Future]], what: str,
               lost: Callable[[int], None]) -> asyncio.Future | None:
    """Run `start()` (a `topic.send(...)` call, its record encoded inside: an encoding error
    counts as the send's) and return the send's future; None when the record is refused for
    good (`refused`: logged with `what`, counted by `lost(1)`), so the caller goes on without
    it instead of sending it again. Any other error is raised."""
    try:
        return await start()
    except Exception as exc:
        if not refused(exc):
            raise
        lost(1)
        log.error("%s refused, not sent: %r", what, exc)
        return None


async def flush_bad(bad: list[tuple[int, bytes, str, bytes]], store, dead: DeadLetters,
                    lost: Callable[[int], None]) -> None:
    """Dead-letter the bad stored values a restore met, `bad` ((partition, key, reason, raw
    value), taken from the front), and delete each from `store` (a tables.WindowTable) once
    its dead letter is delivered and only if the key still holds it (a marker or chunk
    written over it since stays). Not delivered: kept in the table, met again at a restore.
    The same for both stages."""
    while bad:
        partition, key, reason, value = bad.pop(0)
        name = key.decode(errors="backslashreplace")  # another writer's key may be any bytes
        sent = await dead(store.topic, partition, -1, f"{name}: {reason}", value)
        if await delivered([sent] if sent else [], "a dead letter", lost=lost):
            await store.forget(partition, key, value)
