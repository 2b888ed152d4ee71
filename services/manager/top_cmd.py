"""`xdpguard top`: a live terminal view of the busiest rules, drop and pass rates, and the most
recent verdicts with their reasons. `--once` prints one frame (rates over one interval).

The program loaded again under it (`xdpguard unload` + `load`) is noticed at the next frame:
the new maps are opened and the rates start over. Verdicts that cannot be read (Kafka
unreachable) are said in the table's title, and `--once` then also says so on stderr and exits 1
(`--no-verdicts` shows the maps alone).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.common.errors import ConfigError, KafkaUnavailable, KernelError
from services.common.settings import load_common
from services.records.packet import PROTO_NAMES
from services.wire.kafka import stop_quietly

DROP_FIELDS = ("drop_exact", "drop_prefix", "drop_limit", "drop_frag")


def register(sub) -> None:
    p = sub.add_parser("top", help="live view: busiest rules, drop/pass rates, recent verdicts")
    p.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds")
    p.add_argument("--rules", type=int, default=15, help="rules shown (busiest first)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--no-verdicts", action="store_true", help="do not read the verdicts topic")
    p.add_argument("--scorer-metrics", action="append", default=[], metavar="URL",
                   help="a scorer worker's metrics URL (e.g. http://127.0.0.1:9402/metrics; "
                        "repeatable): show the drift line (flow-windows above threshold, "
                        "evidence rules per hour)")
    p.set_defaults(func=cmd_top)


@dataclass
class Snapshot:
    at: float
    stats: dict[str, int]
    rules: list  # list[RuleStats]
    occupancy: dict[str, tuple[int, int]]


def take(dp) -> Snapshot:
    return Snapshot(time.monotonic(), dp.stats(), dp.rules(), dp.occupancy())


def rates(prev: Snapshot, cur: Snapshot) -> dict[str, float]:
    dt = max(cur.at - prev.at, 1e-6)
    out = {k: (cur.stats[k] - prev.stats.get(k, 0)) / dt for k in cur.stats}
    out["dropped"] = sum(out.get(k, 0.0) for k in DROP_FIELDS)
    return out


def describe_rule(rule) -> str:
    proto = PROTO_NAMES.get(rule.proto, str(rule.proto)) if rule.proto else "any"
    if rule.scope.value == "flow":
        return f"{rule.src}:{rule.sport} → {rule.dst}:{rule.dport} {proto}"
    if rule.scope.value == "src_prefix":
        return f"from {rule.src}"
    port = rule.dport or "any"
    return f"to {rule.dst}:{port} {proto} flags={rule.tcp_flags:#x} ≤{rule.rate_pps} pps"


class Maps:
    """The maps of the program pinned in `pin_dir`, reopened when it is loaded again."""

    def __init__(self, pin_dir: str) -> None:
        from services.dataplane.datapath import Datapath, pinned_maps_id

        self.pin_dir = pin_dir
        self.maps_id = pinned_maps_id(pin_dir)
        self.dp = Datapath.open(pin_dir)
        self.note = ""

    def reopened(self) -> bool:
        """True when the program was loaded again and its new maps are open now."""
        from services.dataplane.datapath import Datapath, pinned_maps_id

        current = pinned_maps_id(self.pin_dir)
        if current == self.maps_id:
            return False
        if current == 0:
            self.note = f"no program pinned in {self.pin_dir} (unloaded): last values shown"
            return False
        try:
            new = Datapath.open(self.pin_dir)
        except KernelError as exc:
            self.note = f"program loaded again, maps not ready: {exc}"
            return False
        self.dp.close()
        self.dp, self.maps_id = new, current
        self.note = "program loaded again: maps reopened, rates start over"
        return True

    def close(self) -> None:
        self.dp.close()


@dataclass
class Feed:
    """The verdicts of the last minutes, read in the background: `recent` (newest last),
    `error` ("" or why none can be read), `ready` once the backlog was read (or it failed)."""
    recent: collections.deque
    error: str = ""
    absent: str = ""
    ready: asyncio.Event | None = None


def view(prev: Snapshot, cur: Snapshot, feed: Feed | None, top_n: int, note: str = "",
         drift=None):
    r = rates(prev, cur)
    head = Text.assemble(
        ("xdpguard top  ", "bold"),
        f"seen {r['seen']:,.0f}/s  passed {r['passed']:,.0f}/s  ",
        (f"dropped {r['dropped']:,.0f}/s", "bold red"),
        f"  (exact {r['drop_exact']:,.0f}, prefix {r['drop_prefix']:,.0f}, "
        f"limit {r['drop_limit']:,.0f})  events {r['events']:,.0f}/s  lost {r['events_lost']:,.0f}/s",
    )
    occ = "  ".join(f"{name} {used:,}/{cap:,}" for name, (used, cap) in cur.occupancy.items())

    before = {rs.rule.key(): rs.hits for rs in prev.rules}
    dt = max(cur.at - prev.at, 1e-6)
    busiest = sorted(cur.rules, key=lambda rs: (rs.hits - before.get(rs.rule.key(), 0), rs.hits),
                     reverse=True)[:top_n]
    rules = Table(title=f"busiest rules ({len(cur.rules)} installed)", expand=True)
    for col in ("RULE", "ACTION", "ORIGIN", "HITS/S", "HITS", "BYTES", "EXPIRES IN"):
        rules.add_column(col, justify="right" if col in ("HITS/S", "HITS", "BYTES") else "left")
    now = time.time_ns()
    for rs in busiest:
        rate = (rs.hits - before.get(rs.rule.key(), 0)) / dt
        exp = rs.rule.expires_ns
        left = "never" if not exp else f"{max(exp - now, 0) / 1e9:,.0f} s"
        rules.add_row(describe_rule(rs.rule), rs.rule.action.value, rs.rule.origin.value,
                      f"{rate:,.0f}", f"{rs.hits:,}", f"{rs.bytes:,}", left)

    parts = [head, Text(f"maps: {occ}", style="dim"), rules]
    if drift is not None:
        parts.insert(2, drift.line())
    if note:
        parts.insert(1, Text(note, style="bold yellow"))
    if feed is not None:
        title = "recent verdicts" + (f" (unavailable: {feed.error})" if feed.error else
                                     f" ({feed.absent})" if feed.absent else "")
        vt = Table(title=title, expand=True)
        for col in ("TIME", "RULE", "ACTION", "SCORE", "NODE", "REASON"):
            vt.add_column(col)
        for v in reversed(list(feed.recent)):
            vt.add_row(time.strftime("%H:%M:%S", time.localtime(v.created_ns / 1e9)),
                       describe_rule(v.rule), v.rule.action.value, f"{v.score:.3f}", v.node, v.reason)
        parts.append(vt)
    return Group(*parts)


async def _verdict_feed(common, feed: Feed, stop: asyncio.Event) -> None:
    """Fill `feed` until `stop`; any failure to read is kept in feed.error, never raised."""
    try:
        await _read_verdicts(common, feed, stop)
    except Exception as exc:  # noqa: BLE001 - shown in the view and on exit, not a crash
        feed.error = str(exc) or type(exc).__name__
    finally:
        feed.ready.set()


async def _read_verdicts(common, feed: Feed, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.common.errors import DecodeError
    from services.wire.codec import decode_verdict
    from services.wire.kafka import client_options
    from services.wire.topics import VERDICTS, topic_partitions

    from .kafka_inspect import start_consumer

    topic = common.topic(VERDICTS)
    parts = await topic_partitions(common, topic)
    if not parts:
        feed.absent = f"no topic {topic} yet"
        return
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False)
    try:
        await start_consumer(consumer, common)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - feed.recent.maxlen))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    try:
                        feed.recent.append(decode_verdict(rec.value))
                    except DecodeError:
                        continue  # top only shows; the services count and dead-letter these
            if not feed.ready.is_set():
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps)):
                    feed.ready.set()
    finally:
        await stop_quietly(consumer)


async def _run(args, maps: Maps) -> str:
    """Show frames until Ctrl-C (one with --once); returns why verdicts could not be read."""
    common = load_common()
    feed = None if args.no_verdicts else Feed(collections.deque(maxlen=10), ready=asyncio.Event())
    stop = asyncio.Event()
    task = None
    if feed is not None:
        task = asyncio.create_task(_verdict_feed(common, feed, stop))
    console = Console()
    drift = None
    if args.scorer_metrics:
        from .drift_view import DriftFeed

        drift = DriftFeed(args.scorer_metrics)
        await drift.poll()
    prev = take(maps.dp)
    try:
        if args.once:
            await asyncio.sleep(args.interval)
            if feed is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.ready.wait(), 5)
            if maps.reopened():
                prev = take(maps.dp)
            if drift is not None:
                await drift.poll()
            console.print(view(prev, take(maps.dp), feed, args.rules, maps.note, drift))
            return feed.error if feed is not None else ""
        # not a terminal (a pipe, a file, a journal): every frame printed after the last, since
        # rich's Live redraws in place and wrote nothing there until it stopped (helper-72)
        redraw = Live(console=console, auto_refresh=False, screen=False) \
            if console.is_terminal else contextlib.nullcontext()
        with redraw as live:  # None when not a terminal
            while True:
                await asyncio.sleep(args.interval)
                if maps.reopened():
                    prev = take(maps.dp)
                cur = take(maps.dp)
                if drift is not None:
                    await drift.poll()
                frame = view(prev, cur, feed, args.rules, maps.note, drift)
                if live is None:
                    console.print(frame)
                else:
                    live.update(frame, refresh=True)
                prev = cur
    finally:
        stop.set()
        if task is not None:
            try:
                await asyncio.wait_for(task, 5)
            except Exception:  # noqa: BLE001 - a stuck feed must not hide the view's own error
                task.cancel()


def cmd_top(args) -> int:
    if args.interval <= 0:
        raise ConfigError("--interval must be above 0")
    if args.rules < 1:
        raise ConfigError("--rules must be at least 1")
    maps = Maps(load_common().pin_dir)
    feed_error = ""
    try:
        feed_error = asyncio.run(_run(args, maps))
    except KeyboardInterrupt:
        pass
    finally:
        maps.close()
    if feed_error:
        raise KafkaUnavailable(f"verdicts: {feed_error} (--no-verdicts shows the maps alone)")
    return 0
