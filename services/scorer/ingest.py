"""Stage 1 adapter ("ingest"): `packets` records -> open windows -> flow chunks and progress marks.

Per owned `packets` partition (records partitioned by SOURCE address) one pure
`windows.SourcePartition`, restored from the `src-records` table the first time the worker
touches the partition after an assignment: the marker gives the newest closed window and the
newest offset folded in, the stored records rebuild the open windows. Each accepted record is
stored once (one changelog write per record) and deleted when every window it feeds has closed.
A closed window's flows go to `<app id>-scorer-flows` as chunks, partitioned by DESTINATION,
followed by this partition's progress mark to every flows partition (docs/scorer.md, "Closing").
"""
from __future__ import annotations

import asyncio
import logging
import time

import faust
from faust.types import TP

from services.common.errors import DecodeError
from services.detection.evidence import SourceWatch
from services.detection.features import SourceHorizon
from services.wire.codec import decode_packet_columns

from . import delivery, faust_internals
from .metrics import ScorerMetrics
from .settings import ScorerSettings
from .tables import SourceRecords, encode_mark, mark_key
from .windows import SourcePartition

log = logging.getLogger("xdpguard.scorer")
MARK_REPEAT_S = 0.5  # progress marks repeat: stage 2 tells a busy partition from an orphaned one
MAX_NODE_LABELS = 256  # capture nodes named in metric labels; the others share "other"


class IngestStage:
    """Stage 1 of one worker. `n`: packets partitions (= flows partitions); `detector`: the
    model (its `horizon_windows`, `outage_memory_s`); `dead(topic, partition, offset, reason,
    raw)`: dead-letters an undecodable record. Fed by the ingest agent; closed by that agent
    and the timer alike."""

    def __init__(self, app: faust.App, s: ScorerSettings, n: int, detector, packets_topic,
                 flows_topic, store: SourceRecords, metrics: ScorerMetrics,
                 dead: delivery.DeadLetters) -> None:
        self.app, self.s, self.n, self.detector = app, s, n, detector
        self.width_ns = int(s.window_s * 1e9)
        self.packets_topic, self.flows_topic, self.store = packets_topic, flows_topic, store
        self.topic_name: str = packets_topic.get_topic_name()
        self.metrics, self.dead = metrics, dead
        self.sources: dict[int, SourcePartition] = {}
        self.seen: dict[int, int] = {}  # packets partition -> newest offset folded in
        self.announced: dict[int, tuple[int, float]] = {}  # packets partition -> (progress, when)
        self.nodes: set[str] = set()  # capture nodes with a metric label of their own
        self.warned: dict[str, float] = {}  # node -> when its future events were last logged
        self.bad: list[tuple[int, bytes, str, bytes]] = []  # (p, key, reason, value)
        # packets partition -> sends of its chunks not known delivered yet (close)
        self.inflight: dict[int, list[asyncio.Future]] = {}
        # packets partition -> offsets of closed windows' records to delete once delivered, and
        # how many were taken off its front since it was made (settle's snapshots count on it)
        self.done: dict[int, list[int]] = {}
        self.done_taken: dict[int, int] = {}

    # --- partitions -------------------------------------------------------------------------
    def partition(self, p: int) -> SourcePartition:
        """The state of packets partition `p`, restored from the table if not held yet."""
        part = self.sources.get(p)
        if part is None:
            part = self.restore(p)
        return part

    def restore(self, p: int) -> SourcePartition:
        """Rebuild packets partition `p`'s open windows from `src-records` (replaces any held).
        A stored value that does not decode (only decodable records are stored, so something
        else wrote it) is queued for the dead-letter topic and deleted (flush_bad), never
        replayed: no stored record can stop a restore, once or at every restart."""
        span, memory_s = self.detector.horizon_windows, self.detector.outage_memory_s
        part = self.sources[p] = SourcePartition(
            p, self.width_ns, int(self.s.lateness_s * 1e9), idle_ns=int(self.s.idle_s * 1e9),
            horizon=SourceHorizon(self.width_ns, span),
            watch=SourceWatch(self.width_ns, span, memory_s),
            wall=time.time_ns, max_future_ns=int(self.s.max_future_s * 1e9))
        seen, replayed = -1, 0
        try:
            marker = self.store.marker(p)
        except DecodeError as exc:  # rebuilt from the records alone (closed windows may repeat)
            key = self.store.marker_key(p)
            self.bad.append((p, key, f"bad marker: {exc}", self.store.raw(key) or b""))
            marker = None
        if marker:
            part.closed_upto, seen = marker
        for offset, value in self.store.records(p):
            future = sum(part.future.values())
            try:
                replayed += part.add(offset, decode_packet_columns(value))
            except DecodeError as exc:
                self.bad.append((p, self.store.record_key(p, offset), str(exc), value))
                continue
            if offset not in part.records and sum(part.future.values()) == future:
                # its windows all closed (the marker is written before the deletions, so a
                # worker killed between them leaves such records): deleted at the next settle
                self.done.setdefault(p, []).append(offset)
            seen = max(seen, offset)
        # Records the group committed past were handled, stored or not: one dead-lettered or
        # refused (every event late or future-stamped) is in no table, and without this it
        # counted as unread for good, holding the partition's windows and every destination's
        # (a quiet partition whose newest record was bad stalled all scoring after a restart)
        resume = faust_internals.committed(self.app, TP(self.topic_name, p))
        if resume is not None:
            seen = max(seen, resume - 1)
        self.report_clocks(part)
        self.seen[p] = seen
        self.metrics.partitions.set(len(self.sources))
        if replayed:
            log.info("packets partition %d: restored %d events in %d open windows", p, replayed,
                     len(part.windows))
        return part

    async def flush_bad(self) -> None:
        """Dead-letter and delete the bad stored values restore() met (delivery.flush_bad)."""
        if self.bad:
            await delivery.flush_bad(self.bad, self.store, self.dead,
                                     self.metrics.lost.labels("dead letter").inc)

    def revoke(self, p: int) -> None:
        """Forget packets partition `p`: the next owner restores it from the changelog."""
        self.sources.pop(p, None)
        self.announced.pop(p, None)
        delivery.abandon(self.inflight.pop(p, []))
        self.done.pop(p, None)
        self.done_taken.pop(p, None)
        self.metrics.partitions.set(len(self.sources))

    # --- records ------------------------------------------------------------------------------
    async def on_packets(self, partition: int, offset: int, value: bytes) -> None:
        """Fold one `packets` record in (once per offset), store it, close what is due."""
        await self.flush_bad()  # first: it may wait, and a resend meanwhile replaces `part`
        part = self.partition(partition)
        if offset <= self.seen.get(partition, -1):
            return  # already folded in before a restart/rebalance (restored from the table)
        self.seen[partition] = offset
        self.metrics.records.inc()
        try:
            cols = decode_packet_columns(value)
        except DecodeError as exc:
            await self.dead(self.topic_name, partition, offset, str(exc), value)
            return
        late = part.late
        accepted = part.add(offset, cols)
        self.metrics.events.inc(accepted)
        if part.late != late:
            self.metrics.late.inc(part.late - late)
        self.report_clocks(part)
        if accepted:
            await self.store.put_record(partition, offset, value)
        self.update_backlog(partition, part)
        if part.due():
            await self.close([partition])

    def report_clocks(self, part: SourcePartition) -> None:
        """Move `part`'s per-node future-event counts and clock skews into the metrics (and a
        warning per node at most once a minute while its events are refused)."""
        for node, n in part.future.items():
            self.metrics.future.labels(self._label(node)).inc(n)
            if time.monotonic() - self.warned.get(node, -60.0) >= 60.0:
                self.warned[node] = time.monotonic()
                log.warning("capture node %r: %d events stamped more than %.0f s ahead of this "
                            "host's clock refused (clock skew %.1f s); fix its clock", node, n,
                            self.s.max_future_s, part.skew_ns.get(node, 0) / 1e9)
        for node, skew in part.skew_ns.items():
            self.metrics.clock_skew.labels(self._label(node)).set(skew / 1e9)
        part.future.clear()
        part.skew_ns.clear()

    def _label(self, node: str) -> str:
        if node not in self.nodes and len(self.nodes) < MAX_NODE_LABELS:
            self.nodes.add(node)
        return node if node in self.nodes else "other"

    def unread(self, p: int) -> int | None:
        """Records of packets partition `p` fetched or known to exist but not folded in yet;
        None before its first fetch response (unknown)."""
        return self._unread(TP(self.topic_name, p))

    def _unread(self, tp: TP) -> int | None:
        highwater = faust_internals.highwater(self.app, tp)
        if highwater is None:
            return None
        return max(0, highwater - self.seen.get(tp.partition, -1) - 1)

    def update_backlog(self, p: int, part: SourcePartition) -> None:
        """Tell `part` whether records wait and when the consumer last heard about them."""
        # Not polled yet (just assigned): what waits in the partition is unknown, so it counts as
        # a backlog and the clock does not vouch for it.
        tp = TP(self.topic_name, p)
        unread = self._unread(tp)
        part.backlog = unread is None or unread > 0
        # Caught up as of the newest fetch response means nothing more existed then; records
        # appended since may still be unfetched (a busy worker's fetches came 0.3 s+ apart and
        # its partitions closed windows early).
        polled_ns = faust_internals.last_poll_ns(self.app, tp)
        part.polled_at = None if polled_ns is None else \
            time.monotonic() - max(0, time.time_ns() - polled_ns) / 1e9

    # --- closing ------------------------------------------------------------------------------
    async def close_all(self) -> None:
        """The timer's pass: refresh every partition's backlog, close what is due."""
        await self.flush_bad()
        for p, part in self.sources.items():
            self.update_backlog(p, part)
        await self.close(list(self.sources))

    async def close(self, partitions) -> None:
        """Close the due windows of `partitions`: chunks out (every partition's queued before
        any is waited for), stored records and marker updated once they are delivered (settle),
        progress announced."""
        # Called by both the ingest agent and the timer, deliberately without a lock: a lock
        # over closing stalled ingestion behind a slow tick, and the stalled partitions'
        # watermarks then ran ahead on the wall clock (4 of 6 two-worker bench runs lost events
        # as late; docs/scorer.md "Closing"). Instead a window counts as being sent until all
        # its chunks are queued, and neither closer announces progress past it meanwhile.
        closing = []
        for p in partitions:
            part = self.sources.get(p)
            if part is None:
                continue
            due = part.due()
            if due and await self._send(p, part, due):
                closing.append(p)
            elif not due:
                await self.announce(p, part)
        for p in closing:
            part = self.sources.get(p)
            if part is not None:
                await self.settle(p, part)
                await self.announce(p, self.sources.get(p, part))

    async def _send(self, p: int, part: SourcePartition, due: list[int]) -> bool:
        """Close windows `due` of `part` and queue their chunks; False when a send raised (the
        partition is then rebuilt from the table: resend). A chunk the producer refuses for
        good (delivery.refused: too large) and a window that cannot be closed (a bug's)
        are logged, counted (lost) and passed over: sending them again would only loop."""
        inflight = self.inflight.setdefault(p, [])
        done = self.done.setdefault(p, [])
        for ws in due:
            if ws not in part.windows:
                continue  # the other closer took it while this one was sending
            try:
                chunks, offsets = part.close(ws, self.n)
            except Exception as exc:  # a bug's: the window goes, not the partition
                part.sent(ws)
                done += part.closed_records()
                self.metrics.lost.labels("window").inc()
                log.error("packets partition %d: window %d not closed, its flows dropped: %r",
                          p, ws, exc)
                continue
            done += offsets
            lost = self.metrics.lost.labels("flow chunks").inc
            try:
                for c in chunks:
                    sent = await delivery.send(
                        lambda: self.flows_topic.send(key=c.key(), value=c.encode(),
                                                      partition=c.dst_partition),
                        f"packets partition {p}: {len(c)} flows of window {ws}", lost)
                    if sent is not None:
                        inflight.append(sent)
                    if self.sources.get(p) is not part:  # rebuilt meanwhile: sent again there
                        delivery.abandon(inflight)
                        return False
            except Exception as exc:
                log.error("packets partition %d: window %d's chunks not sent: %r", p, ws, exc)
                self.resend(p, part)
                return False
            finally:
                part.sent(ws)
            self.metrics.windows_closed.labels("source").inc()
        return True

    async def settle(self, p: int, part: SourcePartition) -> None:
        """Write what says `part`'s closed windows are done (their records deleted, the marker
        moved) once every chunk queued for them, by either closer, is delivered."""
        # The producer sends the changelog's batches and the flows' in separate requests: a
        # worker killed between them had left records deleted whose flows never arrived. With
        # no window being sent, every closed window's chunks are delivered or in `inflight`:
        # what is written once those are delivered (the marker as it is now, the offsets
        # done now) vouches for delivered windows alone, whatever is queued meanwhile (the
        # next settle writes that). A closer that finds a window being sent leaves the
        # writing to the closer sending it (it settles after queueing).
        inflight = self.inflight.get(p)
        if inflight is None or part.sending:
            return
        marker = (part.closed_upto, self.seen.get(p, -1))
        done_upto = self.done_taken.get(p, 0) + len(self.done.get(p, []))
        ok = await delivery.delivered(inflight, f"packets partition {p}'s flows",
                                      lost=self.metrics.lost.labels("flow chunks").inc)
        if self.sources.get(p) is not part:
            return  # revoked or rebuilt meanwhile: the next holder closes these windows again
        if not ok:
            self.resend(p, part)
            return
        # the other closer's settle may have taken some of them off meanwhile; taken off in
        # place: a closer queueing meanwhile appends to this very list (_send)
        pending = self.done.setdefault(p, [])
        done = pending[:max(0, done_upto - self.done_taken.get(p, 0))]
        del pending[:len(done)]
        self.done_taken[p] = self.done_taken.get(p, 0) + len(done)
        # the marker first: a rebuild (or a worker killed) while the deletions are written
        # then finds the rest of a closed window's records late, not the window open again
        # and sent without the deleted ones (stage 2 keeps the later copy of a chunk)
        try:  # the other closer's, written while this one waited, may be newer
            stored = self.store.marker(p) or (-1, -1)
        except DecodeError:  # a bad one, queued by restore for flush_bad: this one replaces it
            stored = (-1, -1)
        if marker > stored:
            await self.store.put_marker(p, *marker)
        for off in done:
            await self.store.put_record(p, off, None)

    def resend(self, p: int, part: SourcePartition) -> None:
        """Chunks of `part` were not delivered: rebuild packets partition `p` from the table
        (its records and marker still say those windows are open), so they close and are sent
        again. Stage 2 keeps one copy of a chunk sent twice (its key names window, source
        partition and index); horizon and evidence memory restart, as after a rebalance."""
        if self.sources.get(p) is not part:
            return
        log.error("packets partition %d: rebuilding its open windows from the table to send "
                  "them again", p)
        delivery.abandon(self.inflight.get(p, []))
        self.inflight[p], self.done[p], self.done_taken[p] = [], [], 0
        self.restore(p)

    async def announce(self, p: int, part: SourcePartition) -> None:
        """Tell every stage 2 partition how far source partition `p` has got (see windows)."""
        # A partition without events follows this worker's event clock (its busiest partition),
        # but never ahead of the wall clock: records of it may be in flight, stamped as late as
        # now, and a mark past their window would make stage 2 close it without them. Capture
        # clocks running ahead of this host's delay closing (by the skew) only while some
        # partition has had no event at all.
        now_ns, now = time.time_ns(), time.monotonic()
        event_clock = min(now_ns, max((pt.watermark() for pt in self.sources.values()
                                       if pt.max_ts), default=now_ns))
        if part.polled_at is not None:  # nor past the newest fetch response for it
            event_clock = min(event_clock, now_ns - int((now - part.polled_at) * 1e9))
        upto = part.progress(event_clock)
        last_upto, last_at = self.announced.get(p, (-1, 0.0))
        if upto <= last_upto and now - last_at < MARK_REPEAT_S:
            return
        self.announced[p] = (upto, now)
        value = encode_mark(p, upto)
        for q in range(self.n):
            await self.flows_topic.send(key=mark_key(p), value=value, partition=q)

    async def repeat_marks(self) -> None:
        """Re-announce every owned packets partition's progress (its own timer: see Scorer)."""
        for p, part in list(self.sources.items()):
            self.update_backlog(p, part)
            await self.announce(p, part)
