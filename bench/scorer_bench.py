#!/usr/bin/env python3
"""Scorer throughput: packet events/s of 1 worker and of 2 workers (same run, same data).

The packet events are produced ONCE to a fresh `packets` topic (capture's format: micro-batches
of --batch events per partition, partitioned by source); then a 1-worker group and a 2-worker
group (each its own app id, so each reads everything from the start) score them. A run's time
is from the first event folded in to the last flow scored (windows closed, batched model
calls, verdicts published), read from the workers' Prometheus counters. Nothing else runs
meanwhile; the broker shares the machine's cores with the workers.

Traffic (event time compressed to --rate events/s): benign TCP/UDP flows of ~8 packets from
--sources clients to 50 servers, plus a spoofed SYN flood (--flood share of the events, one
packet per flow — the expensive case: every event is a new flow).

examples:
  .venv/bin/python bench/scorer_bench.py                       # 400k events, model in models/
  .venv/bin/python bench/scorer_bench.py --events 1000000 --flood 0.5
  .venv/bin/python bench/scorer_bench.py --join                # group join/failover timings
  BENCH_PROFILE=raw .venv/bin/python bench/scorer_bench.py     # + py-spy of each worker, first
                                                              # event to last flow, in the log dir
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.detection.model import DEFAULT_MODEL  # noqa: E402
from services.records.packet import PROTO_TCP, PROTO_UDP, Packet  # noqa: E402
from services.common.settings import load_common  # noqa: E402
from services.wire.topics import PACKETS, VERDICTS, ensure_topics  # noqa: E402
from services.detection.features import window_start  # noqa: E402
from tests.support.scorer_traffic import window_ahead  # noqa: E402
from tests.support.scorer_worker import Worker, wait_for  # noqa: E402


def args_timeout() -> float:
    return float(os.environ.get("BENCH_TIMEOUT_S", "120"))


def traffic(n: int, rate: float, flood: float, sources: int, seed: int = 7) -> list[Packet]:
    rng = random.Random(seed)
    # Stamped from 0; run_group re-stamps it just before producing (stamp_ahead).
    t0 = 0
    clients = [f"10.{rng.randrange(1, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
               for _ in range(sources)]
    servers = [f"192.168.{i // 250}.{i % 250 + 1}" for i in range(50)]
    out: list[Packet] = []
    step = 1e9 / rate
    i = 0
    while len(out) < n:
        t = t0 + int(i * step)
        if rng.random() < flood:
            out.append(Packet(t, f"172.{16 + rng.randrange(16)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                              "192.168.0.1", rng.randrange(1024, 65535), 80, PROTO_TCP, 0x02, 60, 2, 1,
                              "bench", i))
            i += 1
            continue
        src, dst = rng.choice(clients), rng.choice(servers)
        sport = rng.randrange(32768, 61000)
        if rng.random() < 0.8:
            flags = [0x02, 0x10] + [0x18] * rng.randrange(2, 10) + [0x11]
            for k, fl in enumerate(flags):
                out.append(Packet(t + k * 1000, src, dst, sport, rng.choice((80, 443)), PROTO_TCP,
                                  fl, rng.choice((66, 400, 1514)), 2, 1, "bench", i + k))
            i += len(flags)
        else:
            out.append(Packet(t, src, dst, sport, 53, PROTO_UDP, 0, 90, 2, 1, "bench", i))
            i += 1
    out = out[:n]
    out.sort(key=lambda p: p.ts_ns)
    return out


def stamp_ahead(packets: list[Packet], width_ns: int = 10**9) -> tuple[list[Packet], int]:
    """`packets` (stamped from 0) moved to start at a window boundary far enough ahead that
    re-stamping and encoding them (about 100k events/s here) end before it, and that start (ns).
    A capture stamps a packet moments before publishing it, and the scorer relies on that: a
    partition with nothing to read follows the wall clock, so traffic stamped in the past by
    the time it is produced is late (an hour back was, and so was the next window when
    re-stamping took longer than the time to it); events more than SCORER_MAX_FUTURE_S ahead
    are refused (2030 was)."""
    t0 = window_ahead(2 + math.ceil(len(packets) / 50_000), width_ns)
    return [replace(p, ts_ns=p.ts_ns + t0) for p in packets], t0


def encode_records(packets: list[Packet], batch: int, partitions: int) -> list[tuple[int, bytes]]:
    """Capture's format: per-partition micro-batches, in time order."""
    from services.wire.partition import source_partition
    from tests.support.packet_records import encode_packets

    pending: dict[int, list[Packet]] = {}
    out = []
    for p in packets:
        part = source_partition(p, partitions)
        buf = pending.setdefault(part, [])
        buf.append(p)
        if len(buf) >= batch:
            out.append((part, encode_packets(buf)))
            pending[part] = []
    out.extend((part, encode_packets(buf)) for part, buf in pending.items() if buf)
    return out


async def produce_records(common, records: list[tuple[int, bytes]]) -> float:
    """Produce `records` as fast as the broker takes them (every send queued, then awaited);
    returns the seconds it took."""
    from aiokafka import AIOKafkaProducer
    from services.wire.kafka import client_options

    producer = AIOKafkaProducer(**client_options(common), acks="all", linger_ms=20,
                                max_batch_size=1 << 20, max_request_size=4 << 20)
    await producer.start()
    try:
        topic = common.topic(PACKETS)
        t = time.monotonic()
        sent = [await producer.send(topic, data, partition=part) for part, data in records]
        await asyncio.gather(*sent)
        return time.monotonic() - t
    finally:
        await producer.stop()


async def run_group(model: Path, tmp: Path, workers: int, packets: list[Packet], batch: int, n_events: int, n_flows: int,
                    tag: str) -> dict:
    """Start `workers` workers on fresh topics, wait until they share the partitions, then
    produce the records (the group is stable: a rebalance under a backlog is not measured)."""
    common = load_common(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(common)
    app_id = f"bench-{tag}"
    ws = [Worker(common, model, tmp, f"{common.topic_prefix}{app_id}-{i}", SCORER_APP_ID=app_id,
                 SCORER_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warn"))
          for i in range(workers)]
    try:
        def events():
            return sum(w.metric("xdpguard_scorer_events_total") for w in ws)

        def late():
            return sum(w.metric("xdpguard_scorer_late_events_total") for w in ws)

        def flows():
            return sum(w.metric("xdpguard_scorer_flows_scored_total") for w in ws)

        def late_flows():
            return sum(w.metric("xdpguard_scorer_late_flows_total") for w in ws)

        def shared():
            if any(w.proc.poll() is not None for w in ws):
                raise SystemExit(f"a worker died: see {tmp}")
            parts = [set((w.health() or {}).get("packets_partitions") or ()) for w in ws]
            return all(parts) and len(set().union(*parts)) == sum(map(len, parts)) == \
                common.packets_partitions

        t_start = time.monotonic()
        await wait_for(shared, 90, "workers to share the partitions")
        await asyncio.sleep(2.0)  # let a late rebalance settle
        await wait_for(shared, 30, "a stable group")
        join_s = time.monotonic() - t_start
        stamped, t0 = stamp_ahead(packets)
        records = encode_records(stamped, batch, common.packets_partitions)
        # produced just before the traffic's first window starts, as a capture would have
        await asyncio.sleep(max(0.0, (t0 - time.time_ns()) / 1e9 - 0.3))
        t_send = time.monotonic()
        produce_s = await produce_records(common, records)
        await wait_for(lambda: events() > 0, 30, "the first event", interval=0.05)
        t_first = time.monotonic()
        cpu_first = [cpu_seconds(w.proc.pid) for w in ws]
        spies = [profile(w.proc.pid, tmp / f"profile-{tag}-{i}", os.environ["BENCH_PROFILE"])
                 for i, w in enumerate(ws)] if os.environ.get("BENCH_PROFILE") else []
        broker_first = cpu_seconds(broker_pid())
        # no run can end before the wall clock passes the end of its last window (+ lateness)
        floor_s = (window_start(stamped[-1].ts_ns, 10**9) + 1.1e9 - time.time_ns()) / 1e9
        try:
            await wait_for(lambda: events() + late() >= n_events, args_timeout(), "all events",
                           interval=0.1)
        except AssertionError:
            for w in ws:  # mode's workers log every task's stack on SIGUSR1
                w.proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(3)
            raise SystemExit(f"stuck: {[w.metric('xdpguard_scorer_events_total') for w in ws]} events, "
                             f"{[w.health() for w in ws]}, logs in {tmp}") from None
        t_ingested = time.monotonic()
        try:  # every flow scored, or counted late (what it would add is missing)
            await wait_for(lambda: flows() + late_flows() >= n_flows, 600, f"{n_flows} flows scored",
                           interval=0.1)
        except AssertionError:
            raise SystemExit(f"stuck: {flows():.0f} of {n_flows} flows scored, {late_flows():.0f} late, "
                             f"{[w.health() for w in ws]}, logs in {tmp}") from None
        t_done, last = time.monotonic(), flows()
        cpu_s = [cpu_seconds(w.proc.pid) - c for w, c in zip(ws, cpu_first)]
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(30)
        broker_s = cpu_seconds(broker_pid()) - broker_first
        shares = [w.metric("xdpguard_scorer_events_total") for w in ws]
        peak_rss = [peak_rss_kib(w.proc.pid) for w in ws]
        return {"workers": workers, "join_s": round(join_s, 1), "produce_s": round(produce_s, 2),
                "first_event_s": round(t_first - t_send, 2),
                "floor_s": round(floor_s, 2),
                "ingest_eps": n_events / (t_ingested - t_first),
                "eps": n_events / (t_done - t_first), "flows": last, "shares": shares,
                "wall_s": round(t_done - t_first, 2), "cpu_s": [round(c, 2) for c in cpu_s],
                "broker_cpu_s": round(broker_s, 2),
                "late_events": late(),
                "late_flows": late_flows(), "peak_rss_kib": peak_rss,
                "verdicts": sum(w.metric("xdpguard_scorer_verdicts_total") for w in ws)}
    finally:
        for w in ws:
            w.stop()


def profile(pid: int, out: Path, fmt: str) -> subprocess.Popen:
    """py-spy (beside this interpreter) sampling `pid` at 100 Hz into `out`.<fmt> (`fmt`: raw
    or speedscope, which keeps the samples' order; every thread, idle ones too: the shares are
    of wall time) until it gets SIGINT."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "-r", "100", "-f", fmt,
                             "--threads", "--idle", "-o", f"{out}.{fmt}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a live process has used (0.0 if unknown): with the wall time
    of a run, whether the workers were busy or waiting, and what the broker took meanwhile."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError, IndexError, ValueError):
        return 0.0


def broker_pid() -> int | None:
    """The pid of the broker scripts/kafka started (its pid file), None if there is none."""
    home = Path(os.environ.get("XDPGUARD_KAFKA_HOME", Path(__file__).resolve().parents[1] / ".cache/kafka"))
    try:
        return int((home / "broker.pid").read_text())
    except (OSError, ValueError):
        return None


def peak_rss_kib(pid: int) -> int:
    """A live process's peak resident set size (VmHWM, KiB; 0 if unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def join_timings(common, model: Path, tmp: Path, label: str, env: dict) -> dict:
    """Worker start -> owns partitions; 2nd worker start -> both own some; SIGKILL one ->
    survivor owns all."""
    app_id = f"join-{uuid.uuid4().hex[:6]}"
    env = {"SCORER_APP_ID": app_id, "SCORER_LOG_LEVEL": "warn", **env}
    t = time.monotonic()
    a = Worker(common, model, tmp, f"{app_id}-a", **env)
    parts = lambda w: set((w.health() or {}).get("packets_partitions") or ())  # noqa: E731
    out = {"settings": label}
    try:
        await wait_for(lambda: len(parts(a)) == common.packets_partitions, 120, "first worker")
        out["first_ready_s"] = time.monotonic() - t
        t = time.monotonic()
        b = Worker(common, model, tmp, f"{app_id}-b", **env)
        try:
            await wait_for(lambda: parts(a) and parts(b) and not parts(a) & parts(b)
                           and len(parts(a) | parts(b)) == common.packets_partitions, 180, "join")
            out["second_join_s"] = time.monotonic() - t
            t = time.monotonic()
            b.stop(signal.SIGKILL)
            await wait_for(lambda: len(parts(a)) == common.packets_partitions, 180, "failover")
            out["failover_after_kill_s"] = time.monotonic() - t
        finally:
            b.stop()
    finally:
        a.stop()
    return out


async def latency(model: Path, tmp: Path, runs: int) -> list[float]:
    """Real time: a spoofed SYN flood (2,000 pps in 10 ms micro-batches, timestamps = now) against
    a new victim each run; seconds from its first packet to the first verdict naming the victim."""
    from aiokafka import AIOKafkaProducer
    from services.wire.codec import decode_verdict
    from services.wire.partition import source_partition
    from tests.support.packet_records import encode_packets
    from services.wire.kafka import client_options
    from tests.support.scorer_worker import TopicReader

    common = load_common(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(common)
    w = Worker(common, model, tmp, f"{common.topic_prefix}lat", SCORER_LOG_LEVEL="warn")
    producer = AIOKafkaProducer(**client_options(common), linger_ms=2)
    await producer.start()
    out = []
    rng = random.Random(3)
    try:
        await wait_for(lambda: (w.health() or {}).get("packets_partitions"), 90, "the worker")
        async with TopicReader(common, VERDICTS) as verdicts:
            for run in range(runs):
                victim = f"10.77.{run}.1"
                await asyncio.sleep(rng.uniform(1.0, 2.0))  # attacks start anywhere in a window
                start, seq, seen = time.time(), 0, None
                while time.time() - start < 6 and seen is None:
                    now = time.time_ns()
                    batch = [Packet(now, f"172.{16 + rng.randrange(16)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                                    victim, rng.randrange(1024, 65535), 80, PROTO_TCP, 0x02, 60, 2, 1,
                                    "lat", seq + i) for i in range(20)]
                    seq += 20
                    parts: dict[int, list] = {}
                    for p in batch:
                        parts.setdefault(source_partition(p, common.packets_partitions), []).append(p)
                    for part, ps in parts.items():
                        await producer.send(common.topic(PACKETS), encode_packets(ps), partition=part)
                    await asyncio.sleep(0.01)
                    for raw in verdicts.values:
                        if decode_verdict(raw).rule.dst == victim:
                            seen = time.time() - start
                            break
                out.append(seen if seen is not None else float("nan"))
                print(f"run {run}: first verdict after {out[-1]:.2f} s", flush=True)
                await asyncio.sleep(1.5)  # let the flood's last window close before the next run
    finally:
        await producer.stop()
        w.stop()
    return out


def traffic_arguments(ap: argparse.ArgumentParser) -> None:
    """The traffic's and records' options (`traffic`, `encode_records`); also bench/fold_bench.py's."""
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--rate", type=float, default=1_000_000,
                    help="event-time rate of the traffic (its last window closes, at the earliest, "
                         "when the wall clock passes it: floor_s in the results)")
    ap.add_argument("--flood", type=float, default=0.1, help="share of spoofed SYN events")
    ap.add_argument("--sources", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500, help="events per packets record")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    traffic_arguments(ap)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--join", action="store_true", help="measure group join/failover times instead")
    ap.add_argument("--latency", type=int, default=0, metavar="RUNS",
                    help="measure first attack packet -> first verdict over RUNS floods instead")
    ap.add_argument("--only-two", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scorer-bench-"))
    model = Path(args.model)
    if args.latency:
        import statistics
        lat = sorted(x for x in await latency(model, tmp, args.latency) if x == x)
        if lat:
            p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
            print(f"first packet -> first verdict over {len(lat)} runs: p50 {statistics.median(lat):.2f} s, "
                  f"p95 {p95:.2f} s, max {lat[-1]:.2f} s")
        return
    if args.join:
        common = load_common(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        await ensure_topics(common)
        for label, env in (("10 s session / 10 s rebalance / 1 s heartbeat (default)", {}),
                           ("faust defaults: 60 s / 60 s / 3 s",
                            {"SCORER_SESSION_TIMEOUT_S": "60", "SCORER_REBALANCE_TIMEOUT_S": "60",
                             "SCORER_HEARTBEAT_S": "3"})):
            print(await join_timings(common, model, tmp, label, env), flush=True)
        return
    packets = traffic(args.events, args.rate, args.flood, args.sources)
    n_flows = len({(window_start(p.ts_ns, 10**9), p.flow_key()) for p in packets})
    print(f"{len(packets)} events in records of {args.batch}, {n_flows} flows (window, 5-tuple); "
          f"logs in {tmp}", flush=True)
    if args.only_two:
        print(await run_group(model, tmp, 2, packets, args.batch, len(packets), n_flows, "two"))
        return
    one = await run_group(model, tmp, 1, packets, args.batch, len(packets), n_flows, "one")
    print(one, flush=True)
    two = await run_group(model, tmp, 2, packets, args.batch, len(packets), n_flows, "two")
    print(two, flush=True)
    print(f"\n| workers | events/s (ingest) | events/s (to last flow scored) | flows scored |\n"
          f"|---|---|---|---|\n"
          f"| 1 | {one['ingest_eps']:,.0f} | {one['eps']:,.0f} | {one['flows']:,.0f} |\n"
          f"| 2 | {two['ingest_eps']:,.0f} | {two['eps']:,.0f} | {two['flows']:,.0f} |\n"
          f"\nspeed-up of 2 workers over 1: {two['eps'] / one['eps']:.2f}x "
          f"(ingest {two['ingest_eps'] / one['ingest_eps']:.2f}x); workers' peak RSS (KiB): "
          f"{one['peak_rss_kib']} / {two['peak_rss_kib']}")


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("scorer_bench", lambda: asyncio.run(main()))
