"""`xdpguard top`: a live terminal view of the busiest rules, drop and pass rates, and the most
recent verdicts with their reasons. `--once` prints one frame (rates over one interval)."""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from services.records.packet import PROTO_NAMES
from services.wire.kafka import stop_quietly
from services.common.settings import load_common

DROP_FIELDS = ("drop_exact", "drop_prefix", "drop_limit", "drop_frag")


def register(sub) -> None:
    p = sub.add_parser("top", help="live view: busiest rules, drop/pass rates, recent verdicts")
    p.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds")
    p.add_argument("--rules", type=int, default=15, help="rules shown (busiest first)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--no-verdicts", action="store_true", help="do not read the verdicts topic")
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


def view(prev: Snapshot, cur: Snapshot, verdicts, top_n: int):
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
    if verdicts is not None:
        vt = Table(title="recent verdicts", expand=True)
        for col in ("TIME", "RULE", "ACTION", "SCORE", "NODE", "REASON"):
            vt.add_column(col)
        for v in reversed(verdicts):
            vt.add_row(time.strftime("%H:%M:%S", time.localtime(v.created_ns / 1e9)),
                       describe_rule(v.rule), v.rule.action.value, f"{v.score:.3f}", v.node, v.reason)
        parts.append(vt)
    return Group(*parts)


async def _verdict_feed(common, recent: collections.deque, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.wire.codec import decode_verdict
    from services.common.errors import DecodeError
    from services.wire.kafka import client_options
    from services.wire.topics import VERDICTS

    from services.wire.topics import topic_partitions

    topic = common.topic(VERDICTS)
    parts = await topic_partitions(common, topic)
    consumer = AIOKafkaConsumer(**client_options(common), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - recent.maxlen))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    try:
                        recent.append(decode_verdict(rec.value))
                    except DecodeError:
                        continue  # top only shows; the services count and dead-letter these
    finally:
        await stop_quietly(consumer)


async def _run(args, dp) -> None:
    common = load_common()
    recent: collections.deque = collections.deque(maxlen=10)
    stop = asyncio.Event()
    feed = None
    if not args.no_verdicts:
        feed = asyncio.create_task(_verdict_feed(common, recent, stop))
    console = Console()
    prev = take(dp)
    try:
        if args.once:
            await asyncio.sleep(args.interval)
            console.print(view(prev, take(dp), None if feed is None else list(recent), args.rules))
            return
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                await asyncio.sleep(args.interval)
                cur = take(dp)
                live.update(view(prev, cur, None if feed is None else list(recent), args.rules),
                            refresh=True)
                prev = cur
    finally:
        stop.set()
        if feed is not None:
            try:
                await asyncio.wait_for(feed, 5)
            except Exception:  # noqa: BLE001 - a dead feed must not hide the view's own error
                feed.cancel()


def cmd_top(args) -> int:
    from services.dataplane.datapath import Datapath

    if args.interval <= 0:
        raise SystemExit("xdpguard top: error: --interval must be above 0")
    with Datapath.open(load_common().pin_dir) as dp:
        try:
            asyncio.run(_run(args, dp))
        except KeyboardInterrupt:
            pass
    return 0
