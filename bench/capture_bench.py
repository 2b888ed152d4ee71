#!/usr/bin/env python3
"""Capture throughput: events/s from the XDP ring buffer to Kafka on one core, beside the raw
ring-buffer drain rate (no Kafka) and `kcat -P` producing the same payloads to the same broker.

The ring buffer is fed by the real XDP program through BPF_PROG_TEST_RUN from a separate driver
process on the other core, at a paced rate (--rate) over --sources source addresses, so the
capture side (this process, pinned to one core: reader thread + event loop + aiokafka) is what
is measured. Each phase runs --seconds. kcat gets the very records the capture path produces
(micro-batches of --batch events, same compression and acks), pinned to the same core.

examples:
  .venv/bin/python bench/capture_bench.py                  # defaults: 10 s per phase
  .venv/bin/python bench/capture_bench.py --seconds 5 --rate 600000 --batch 512
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.capture.service import Capture  # noqa: E402
from services.capture.settings import load_capture  # noqa: E402
from services.dataplane import loader  # noqa: E402
from services.capture.fastring import FastRing  # noqa: E402
from services.dataplane.ringbuf import RingReader  # noqa: E402
from services.common.settings import load_common  # noqa: E402
from services.wire.topics import PACKETS, ensure_topics  # noqa: E402

DRIVER = r"""
import os, sys, time
sys.path.insert(0, {root!r})
os.sched_setaffinity(0, {{{cpu}}})
from scapy.all import Ether, IP, TCP
from services.dataplane import bpfsys, loader
fd = loader.prog_fd({pin!r})
frames = [bytes(Ether()/IP(src=f"10.{{i // 250}}.{{i % 250}}.1", dst="10.200.0.1")/TCP(sport=1024+i, dport=80, flags="S"))
          for i in range({sources})]
rate = {rate}
chunk = max(1000, rate // 50)  # each test run costs ~10 ms fixed here: few, large repeats
start, sent, i = time.monotonic(), 0, 0
while True:
    try:
        bpfsys.prog_test_run(fd, frames[i % len(frames)], chunk)
    except bpfsys.BpfErrno as exc:
        if exc.errno != 4:  # EINTR: paused and resumed by the bench (SIGSTOP/SIGCONT)
            raise
    sent += chunk; i += 1
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
"""
DELIM = b"#XDPGUARD#RECORD#END#"  # kcat -D: no NUL; checked absent from the payloads


def start_driver(pin_dir: str, args) -> subprocess.Popen:
    code = DRIVER.format(root=str(Path(__file__).resolve().parents[1]), cpu=args.driver_cpu,
                         pin=pin_dir, sources=args.sources, rate=args.rate)
    return subprocess.Popen([sys.executable, "-c", code])


def drain_only(pin_dir: str, seconds: float) -> float:
    """Events/s one thread takes out of the ring with the capture's bulk FastRing, no Kafka,
    while the driver keeps offering --rate."""
    reader = FastRing(pin_dir)
    try:
        while len(reader.poll(0)):
            pass
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            n += len(reader.poll(100))
        return n / (time.monotonic() - t0)
    finally:
        reader.close()


def drain_prefilled(pin_dir: str, driver: subprocess.Popen, events: int = 50_000) -> float:
    """Events/s of services.dataplane.ringbuf.RingReader (one Packet per event): the driver is
    paused, the ring pre-filled with `events`, then drained once. (libbpf's poll returns only
    when the ring is empty, so it cannot be timed while a faster producer runs.)"""
    from scapy.all import IP, TCP, Ether

    from services.dataplane import bpfsys
    os.kill(driver.pid, signal.SIGSTOP)
    reader = RingReader(pin_dir)
    fd = loader.prog_fd(pin_dir)
    try:
        while reader.poll(0):
            pass
        frame = bytes(Ether() / IP(src="10.1.1.1", dst="10.2.2.2") / TCP(dport=80, flags="S"))
        bpfsys.prog_test_run(fd, frame, events)
        t0 = time.monotonic()
        n = len(reader.poll(0))
        return n / (time.monotonic() - t0)
    finally:
        os.close(fd)
        reader.close()
        os.kill(driver.pid, signal.SIGCONT)


async def capture_to_kafka(common, pin_dir: str, args) -> dict:
    settings = load_capture(interfaces=(), adaptive=False, metrics_port=0,
                            batch_events=args.batch, compression=args.compression)
    cap = Capture(common, settings)
    await cap.start()
    run = asyncio.create_task(cap.run())
    try:
        await asyncio.sleep(1.0)  # warm-up: connection, metadata
        st = cap.publisher.stats
        a0, r0, t0 = st.acked, cap.read, time.monotonic()
        await asyncio.sleep(args.seconds)
        dt = time.monotonic() - t0
        return {"rate": (st.acked - a0) / dt, "read_rate": (cap.read - r0) / dt,
                "records": st.records, "acked": st.acked, "errors": st.produce_errors,
                "overflow": cap.overflow, "refused": st.refused_full}
    finally:
        run.cancel()
        try:
            await run
        except asyncio.CancelledError:
            pass
        await cap.stop(drain_timeout=10)
        cap.loaded = []


def kcat_payloads(pin_dir: str, events: int, batch: int, partitions: int, path: Path) -> int:
    """The capture's own records (same encoder, partition split, batch size) for `events` ring
    events, written for kcat -D."""
    from services.capture import columns
    from services.dataplane.datapath import mono_offset_ns
    reader = FastRing(pin_dir)
    got = 0
    try:
        with open(path, "wb") as f:
            deadline = time.monotonic() + 60
            while got < events and time.monotonic() < deadline:
                rec = reader.poll(100)
                if not len(rec):
                    continue
                rows = columns.from_records(rec, mono_offset_ns(), got, 1)
                for _, chunk in columns.split_by_partition(rows, partitions):
                    for i in range(0, len(chunk), batch):
                        record = columns.encode(chunk[i:i + batch], "bench")
                        assert DELIM not in record
                        f.write(record + DELIM)
                got += len(rec)
    finally:
        reader.close()
    return got


def kcat_rate(common, topic: str, path: Path, events: int, args) -> float:
    cmd = ["taskset", "-c", str(args.cpu), "kcat", "-P", "-b", common.kafka_bootstrap, "-t", topic,
           "-D", DELIM.decode(), "-X", "acks=all", "-X", "enable.idempotence=true",
           "-X", "linger.ms=5", "-z", args.compression or "none", "-l", str(path)]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env={**os.environ, "LC_ALL": "C"})
    return events / (time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=int, default=500_000, help="events/s the driver offers")
    ap.add_argument("--sources", type=int, default=256, help="distinct source addresses")
    ap.add_argument("--batch", type=int, default=256, help="events per Kafka record")
    ap.add_argument("--compression", default="lz4", choices=("lz4", "zstd", "gzip", ""))
    ap.add_argument("--kcat-events", type=int, default=2_000_000)
    ap.add_argument("--cpu", type=int, default=0, help="the core capture (and kcat) run on")
    ap.add_argument("--driver-cpu", type=int, default=1)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: no pins left
    if not shutil.which("kcat"):
        sys.exit("kcat not found")
    os.sched_setaffinity(0, {args.cpu})
    common = load_common(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    pin_dir = f"/sys/fs/bpf/xdpguard-bench-{uuid.uuid4().hex[:8]}"
    common = load_common(topic_prefix=common.topic_prefix, pin_dir=pin_dir)
    asyncio.run(ensure_topics(common))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(ring_pages=1024))
    driver = start_driver(pin_dir, args)
    tmp = Path(tempfile.mkdtemp(prefix="xdpguard-bench-"))
    try:
        time.sleep(2)  # driver up
        slow = drain_prefilled(pin_dir, driver)
        drain = drain_only(pin_dir, args.seconds)
        import uvloop
        cap = uvloop.run(capture_to_kafka(common, pin_dir, args))
        n = kcat_payloads(pin_dir, args.kcat_events, args.batch, common.packets_partitions,
                          tmp / "payloads")
        driver.terminate()
        driver.wait()
        kcat = kcat_rate(common, common.topic(PACKETS), tmp / "payloads", n, args)
    finally:
        if driver.poll() is None:
            driver.terminate()
            driver.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        loader.unload_all(pin_dir)
    print(f"offered {args.rate:,} events/s from {args.sources} sources; batch {args.batch} "
          f"events/record, compression {args.compression or 'none'}, acks=all, idempotent; "
          f"{args.seconds:.0f} s per phase; capture and kcat on CPU {args.cpu}")
    print("| path | events/s | vs kcat |")
    print("|---|---:|---:|")
    print(f"| ring drain only, bulk (capture's FastRing, no Kafka) | {drain:,.0f} | {drain / kcat:.2f} |")
    print(f"| ring drain only, one Packet per event (RingReader, pre-filled ring) | {slow:,.0f} | "
          f"{slow / kcat:.2f} |")
    print(f"| capture: ring -> queue -> micro-batches -> Kafka | {cap['rate']:,.0f} | "
          f"{cap['rate'] / kcat:.2f} |")
    print(f"| kcat -P, same records ({n:,} events) | {kcat:,.0f} | 1.00 |")
    print(f"capture read {cap['read_rate']:,.0f} events/s from the ring; produce errors "
          f"{cap['errors']}, queue overflow {cap['overflow']:,}, refused {cap['refused']:,}")
    return 0


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("capture_bench", main)
