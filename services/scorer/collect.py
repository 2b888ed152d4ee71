"""Stage 2 adapter ("collect"): flow chunks and progress marks -> closed windows -> ONE batched
model call -> verdicts.

Per owned `<app id>-scorer-flows` partition (flows partitioned by DESTINATION address) one pure
`dst_windows.DstPartition`, restored from the `dst-chunks` table the first time the worker touches
it: the marker gives the newest closed window and every source partition's progress, the stored
chunks rebuild the open windows. A window closes when every live source partition is past it
(docs/scorer.md, "Closing"), and settles once every stage 2 partition has closed it and sent
its probe tally (tally marks on the flows topic, "Settling"); all windows settled in one pass
are scored in one model call, in a thread, and their verdicts published (ids deterministic: a
re-scored window repeats them).

Which model scores a window is the worker's ModelSchedule's answer (rollout.py, fed from the
`models` topic by modelfeed.py); a window the schedule cannot vouch for yet (the topic not read
to its end lately: rollout.may_score) stays open. In a shadow phase the candidate scores the
same windows; its verdicts are compared (rollout.tally), never published.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import time

import msgpack

from services.common.errors import DecodeError
from services.detection.evidence import ProbeFates
from services.wire.codec import encode_verdict

from . import delivery
from .metrics import ScorerMetrics
from .modelfeed import ModelFeed
from .rollout import rule_keys, tally
from .scoring import VerdictPolicy, score_batch, score_windows, verdicts_for
from .settings import ScorerSettings
from .tables import (DestChunks, decode_mark, decode_tallies, encode_tallies, is_mark, is_tally,
                     tally_key)
from .chunks import FlowChunk
from .dst_windows import ClosedWindow, DstPartition

log = logging.getLogger("xdpguard.scorer")
TALLY_REPEAT_S = 2.0  # tally marks without news repeat this often (liveness: see _announce)


class CollectStage:
    """Stage 2 of one worker. `n`: flows partitions (= packets partitions, the sources);
    `models`: the models feed (its schedule names each window's model: score_rows, threshold,
    model_id, evidence); `dead(topic, partition, offset, reason, raw)`: dead-letters an
    undecodable record."""

    def __init__(self, s: ScorerSettings, n: int, models: ModelFeed, policy: VerdictPolicy,
                 flows_topic, verdicts_topic, store: DestChunks, metrics: ScorerMetrics,
                 dead: delivery.DeadLetters) -> None:
        self.s, self.n, self.models, self.policy = s, n, models, policy
        self.width_ns = int(s.window_s * 1e9)
        self.flows_topic, self.verdicts_topic, self.store = flows_topic, verdicts_topic, store
        self.topic_name: str = flows_topic.get_topic_name()
        self.metrics, self.dead = metrics, dead
        self.dests: dict[int, DstPartition] = {}
        self.bad: list[tuple[int, bytes, str, bytes]] = []  # (q, key, reason, value)
        self.closed_upto = -1   # the newest window start closed here (any partition, ever)
        self.announced: dict[int, tuple[int, float]] = {}  # q -> (through, monotonic s) told
        self.unsent: dict[int, dict[int, dict]] = {}  # q -> window -> its tally, not sent yet

    @property
    def scored_upto(self) -> int:
        """The newest window start closed by this worker or, for a partition it holds, by the
        partition's earlier owners (-1: none)."""
        return max([self.closed_upto] + [p.closed_upto for p in self.dests.values()])

    # --- partitions -------------------------------------------------------------------------
    def partition(self, q: int) -> DstPartition:
        """The state of flows partition `q`, restored from the table if not held yet. Stored
        values that do not decode are queued for the dead-letter topic and deleted (flush_bad)."""
        part = self.dests.get(q)
        if part is None:
            # probe fates over the span stage 1 keeps its horizon over, and the outage
            # memory's period (the base model's)
            base = self.models.schedule.base
            fates = ProbeFates(self.width_ns, base.horizon_windows, base.outage_memory_s)
            part = self.dests[q] = DstPartition(q, self.width_ns, self.n, self.s.close_wait_s,
                                                fates=fates)
            try:
                marker = self.store.marker(q, self.n)
            except DecodeError as exc:
                key = self.store.marker_key(q)
                self.bad.append((q, key, f"bad marker: {exc}", self.store.raw(key) or b""))
                marker = None
            if marker:  # every window up to it settled (close): later ones are closed again
                part.closed_upto, progress = marker
                part.settled_upto = part.closed_upto
                for p, upto in enumerate(progress):
                    part.mark(p, upto)
            for key, value in self.store.chunks(q):
                try:
                    part.add(key, FlowChunk.decode(value))
                except DecodeError as exc:
                    self.bad.append((q, key, str(exc), value))
        return part

    async def flush_bad(self) -> None:
        """Dead-letter and delete the bad stored values partition() met (delivery.flush_bad)."""
        if self.bad:
            await delivery.flush_bad(self.bad, self.store, self.dead,
                                     self.metrics.lost.labels("dead letter").inc)

    def revoke(self, q: int) -> None:
        """Forget flows partition `q`: the next owner restores it from the changelog."""
        self.dests.pop(q, None)
        self.announced.pop(q, None)
        self.unsent.pop(q, None)

    # --- records ------------------------------------------------------------------------------
    async def on_chunk(self, partition: int, offset: int, key: bytes | None, value: bytes) -> None:
        """One flows record: a progress mark or a chunk (kept unless its window has closed).
        Neither may be ahead of this host's clock by more than SCORER_MAX_FUTURE_S (stage 1
        never sends such: something else wrote it): dead-lettered like an undecodable one."""
        await self.flush_bad()  # first: it may wait, and a failed pass meanwhile forgets `part`
        part = self.partition(partition)
        future = time.time_ns() + int(self.s.max_future_s * 1e9)
        if is_tally(key):
            try:
                q, through, tallies = decode_tallies(value)
                if max([through, *tallies]) > future:
                    raise DecodeError(f"window {max([through, *tallies])} is ahead of this "
                                      "host's clock")
            except DecodeError as exc:
                await self.dead(self.topic_name, partition, offset, f"bad tally mark: {exc}",
                                value)
                return
            part.peer(q, through, tallies)
            return
        if is_mark(key):
            try:
                src, upto = decode_mark(value)
                if upto > future:
                    raise DecodeError(f"progress {upto} is ahead of this host's clock")
            except DecodeError as exc:
                await self.dead(self.topic_name, partition, offset, f"bad progress mark: {exc}",
                                value)
                return
            part.mark(src, upto)
            return
        try:
            chunk = FlowChunk.decode(value)
            if chunk.window_ns > future:
                raise DecodeError(f"flows: window {chunk.window_ns} is ahead of this host's clock")
        except DecodeError as exc:
            await self.dead(self.topic_name, partition, offset, str(exc), value)
            return
        key = self.store.chunk_key(partition, chunk)
        if part.add(key, chunk):
            await self.store.put_chunk(partition, key, value)
        else:
            self.metrics.late_flows.inc(len(chunk))
            log.warning("flows partition %d: %d flows of window %d from packets partition %d "
                        "came after the window closed (source progress marks: %s)", partition,
                        len(chunk), chunk.window_ns, chunk.src_partition, part.progress)

    # --- closing and scoring ----------------------------------------------------------------
    async def close(self) -> None:
        """Close every due window of every held partition, tell every partition (tally marks),
        then score the windows that settled (dst_windows: the partitions' probe tallies are in)
        in one call. A window that cannot be closed (its chunks passed decode yet break the
        aggregation) is dead-lettered chunk by chunk with the reason and dropped, never
        retried. A window's chunks stay in the table until it settles: a worker that dies in
        between leaves them to the next owner, which closes the window again."""
        await self.flush_bad()
        settled, decided, dropped = [], [], []
        sends: list[asyncio.Future] = []  # what must be delivered before any deletion
        queued = True  # False: a send raised an error that may pass; the pass is given up
        for q, part in list(self.dests.items()):
            due = [ws for ws in part.due() if self.models.may_score(ws)]
            tallies = {}
            for ws in due:
                chunks = dict(part.windows.get(ws, {}))
                try:
                    w = part.close(ws)
                except Exception as exc:  # a bug's or a producer's: the window goes, not the worker
                    part.discard(ws)
                    dropped.append((q, part, list(chunks)))
                    raws = [c.encode() for c in chunks.values()]
                    queued = await self._queue(self._dead_window(q, ws, raws, exc, sends),
                                               f"dead letters of window {ws}") and queued
                else:
                    if w.evidence.tally:
                        tallies[ws] = w.evidence.tally
                self.metrics.windows_closed.labels("dest").inc()
            self.closed_upto = max(self.closed_upto, part.closed_upto)
            await self._announce(q, part, tallies)
            done = part.settle()
            if done or due:
                decided.append((q, part, done, part.decided_upto(), list(part.progress)))
            settled += [w for w in done if w.keys]
        # verdicts (and dead letters) first, delivered; only then the chunks deleted and the
        # marker moved: a worker killed between the two had left windows marked decided whose
        # verdicts never arrived (killed after the verdicts, the next owner repeats them: the
        # same ids). Not delivered: the partitions are forgotten, restored from the table at
        # their next record (progress marks repeat every 0.5 s), their windows scored again.
        if settled and queued:
            queued = await self._queue(self._score(settled, sends),
                                       f"verdicts of {len(settled)} windows")
        # not queued: no wait (a stopping producer never acknowledges), the pass is lost anyway
        delivered = queued and await delivery.delivered(
            sends, "verdicts and dead letters", lost=self.metrics.lost.labels("verdicts").inc)
        if not delivered:
            delivery.abandon(sends)  # sent again with the re-scored windows
            for q, part, *_ in decided + dropped:
                if self.dests.get(q) is part:
                    log.error("flows partition %d: forgotten, to be restored from the table and "
                              "its windows scored again", q)
                    self.revoke(q)
            return
        for q, part, keys in dropped:
            if self.dests.get(q) is part:
                for key in keys:
                    await self.store.put_chunk(q, key, None)
        for q, part, done, upto, progress in decided:
            if self.dests.get(q) is not part:
                continue  # revoked meanwhile: the next owner settles these windows again
            for w in done:
                for key in w.chunk_keys:
                    await self.store.put_chunk(q, key, None)
            await self.store.put_marker(q, upto, progress)

    @staticmethod
    async def _queue(sending, what: str) -> bool:
        """Await `sending` (a coroutine that queues sends, appending their futures to the
        pass's list as it goes); False when a send raised an error that may pass (the pass is
        then given up: its partitions forgotten and scored again). An error that is neither
        Kafka's nor the network's (a bug) is raised: a refused send is passed over inside
        (delivery.send)."""
        try:
            await sending
        except Exception as exc:
            if delivery.refused(exc):
                raise
            log.error("%s not sent: %r", what, exc)
            return False
        return True

    async def _announce(self, q: int, part: DstPartition, tallies: dict[int, dict]) -> None:
        """Tell every stage 2 partition (this one directly, the others over the flows topic)
        how far partition `q` has closed and the probe tallies of the windows it just closed.
        Sent when there are tallies, when `through` passes a window some partition sent a
        tally of (it waits for every partition to be past it: DstPartition.wanted), and every
        TALLY_REPEAT_S anyway: the others tell a partition whose owner died (silent for
        SCORER_CLOSE_WAIT_S) from a quiet one. Not on every window: a flood's windows hold no
        candidate probes and nobody waits for them, while 8 partitions sending 7 marks each
        per window doubled the flows topic's marks and slowed the closing timer (time to
        block p50 3-4.5 s instead of 1.0-1.1 s, bench/time_to_block.py)."""
        through, now = part.through(), time.monotonic()
        last, last_at = self.announced.get(q, (-1, 0.0))
        part.peer(q, through, tallies)
        # kept until sent: a send that raised (the pass ends there) is repeated next time,
        # tallies included, never followed by a mark past their windows without them
        unsent = self.unsent.setdefault(q, {})
        unsent.update(tallies)
        if not unsent and not last < part.wanted <= through and now - last_at < TALLY_REPEAT_S:
            return
        if self.n > 1:
            for value in encode_tallies(q, through, unsent):
                for r in range(self.n):
                    if r != q:
                        await self.flows_topic.send(key=tally_key(q), value=value, partition=r)
        unsent.clear()
        self.announced[q] = (max(through, last), now)

    async def repeat_marks(self) -> None:
        """Re-announce every held flows partition's tally mark (see _announce; its own timer,
        as stage 1's progress marks, so a slow closing pass does not make it look dead)."""
        for q, part in list(self.dests.items()):
            await self._announce(q, part, {})

    async def _dead_window(self, q: int, ws: int, raws: list[bytes], exc: Exception,
                           sends: list[asyncio.Future], what: str = "closed") -> None:
        """Dead-letter what is left of window `ws` of flows partition `q` (its chunks, or a
        summary of its flows), with the reason it could not be `what`; the sends are appended
        to `sends` as they are queued."""
        reason = f"window {ws} not {what}: {type(exc).__name__}: {exc}"
        log.error("flows partition %d: %s (%d records dead-lettered)", q, reason, len(raws))
        lost = self.metrics.lost.labels("dead letter").inc
        for raw in raws:
            sent = await delivery.send(lambda: self.dead(self.topic_name, q, -1, reason, raw),
                                       f"flows partition {q}: a dead letter of window {ws}", lost)
            if sent is not None:
                sends.append(sent)

    async def _dead_scored(self, w: ClosedWindow, exc: Exception,
                           sends: list[asyncio.Future]) -> None:
        summary = msgpack.packb({"window": w.window_ns, "flows": [list(k) for k in w.keys]})
        await self._dead_window(w.partition, w.window_ns, [summary], exc, sends, "scored")

    async def _score(self, closed: list[ClosedWindow], sends: list[asyncio.Future]) -> None:
        """Score the windows closed in one pass: one model call per (model, shadow) pair the
        schedule names for them (one, but for the pass that crosses a switch). Appends the
        verdicts' and dead letters' sends to `sends` as they are queued, so that those queued
        before a send that raises are in it too (delivery.abandon)."""
        groups: dict[tuple[int, int], tuple[object, object, list[ClosedWindow]]] = {}
        for w in closed:
            det, shadow = self.models.schedule.for_window(w.window_ns)
            groups.setdefault((id(det), id(shadow)), (det, shadow, []))[2].append(w)
        for det, shadow, windows in groups.values():
            await self._score_with(det, shadow, windows, sends)

    async def _score_with(self, detector, shadow, closed: list[ClosedWindow],
                          sends: list[asyncio.Future]) -> None:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            # sklearn releases the GIL in places; a thread keeps heartbeats and ingestion going.
            all_scores = await loop.run_in_executor(None, score_windows, detector, closed)
        except Exception:  # one window's rows the model refuses: find it, score the others
            all_scores = []
            for w in list(closed):
                try:
                    all_scores.extend(await loop.run_in_executor(None, score_windows,
                                                                 detector, [w]))
                except Exception as exc:
                    closed.remove(w)
                    await self._dead_scored(w, exc, sends)
        self.metrics.scoring_seconds.observe(time.perf_counter() - t0)
        shadow_scores = await self._shadow_scores(shadow, closed)
        thr, model_id = detector.threshold, detector.model_id
        for i, (w, scores) in enumerate(zip(closed, all_scores)):
            self.metrics.windows_scored.inc()
            self.metrics.windows_by_model.labels(model_id).inc()
            self.metrics.flows_scored.inc(len(scores))
            self.metrics.anomalies.inc(int((scores >= thr).sum()))
            memory = copy.deepcopy(w.memory) if shadow_scores is not None else None
            try:
                verdicts = verdicts_for(w, scores, threshold=thr, model_id=model_id,
                                        policy=self.policy)
            except Exception as exc:  # no verdict for this window; the next ones still come
                await self._dead_scored(w, exc, sends)
                continue
            if shadow_scores is not None:
                self._compare(w, memory, detector, scores, verdicts, shadow, shadow_scores[i])
            lost = self.metrics.lost.labels("verdicts").inc
            for v in verdicts:
                sent = await delivery.send(
                    lambda: self.verdicts_topic.send(key=v.rule.key().encode(),
                                                     value=encode_verdict(v)),
                    f"verdict {v.verdict_id}", lost)
                if sent is not None:
                    sends.append(sent)
                    self.metrics.verdicts.labels(v.rule.action.value).inc()
            self.metrics.detect_lag.observe(max(0.0, time.time() - w.end_ns / 1e9))

    async def _shadow_scores(self, shadow, closed: list[ClosedWindow]):
        """The shadow model's scores of `closed` (None: no shadow, or it failed: logged)."""
        if shadow is None or not closed:
            return None
        try:
            return await asyncio.get_running_loop().run_in_executor(None, score_batch, shadow,
                                                                     closed)
        except Exception as exc:
            log.warning("shadow model %s could not score %d windows: %s: %s", shadow.model_id,
                        len(closed), type(exc).__name__, exc)
            return None

    def _compare(self, w: ClosedWindow, memory, detector, scores, verdicts, shadow,
                 shadow_scores) -> None:
        """Tally one window scored by both models (the shadow's verdicts are built on a copy of
        the partition's escalation memory, taken before the active model's verdicts)."""
        try:
            shadow_verdicts = verdicts_for(
                w, shadow_scores, threshold=shadow.threshold, model_id=shadow.model_id,
                policy=self.policy, bounds=getattr(shadow, "evidence", None),
                memory=memory)
        except Exception as exc:
            log.warning("shadow model %s: no verdicts for window %d: %s", shadow.model_id,
                        w.window_ns, exc)
            return
        r = self.models.report
        before = (r.agree, r.flows, r.rules_added, r.rules_dropped)
        tally(r, scores, detector.threshold, shadow_scores, shadow.threshold,
              rule_keys(verdicts), rule_keys(shadow_verdicts))
        self.metrics.shadow_windows.inc()
        agree, flows = r.agree - before[0], r.flows - before[1]
        self.metrics.shadow_flows.labels("agree").inc(agree)
        self.metrics.shadow_flows.labels("disagree").inc(flows - agree)
        self.metrics.shadow_rules.labels("added").inc(r.rules_added - before[2])
        self.metrics.shadow_rules.labels("dropped").inc(r.rules_dropped - before[3])
