"""Run real scorer workers (`python -m services.scorer worker`) and talk to them through Kafka."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.wire.partition import source_partition
from services.wire.kafka import client_options
from services.wire.topics import PACKETS, ensure_topics
from services.common.settings import CommonSettings
from tests.support.packet_records import encode_packets
from tests.support.services import ROOT, free_port, metric, stop_process

class Worker:
    def __init__(self, common: CommonSettings, model: Path, datadir: Path, name: str,
                 **env: str) -> None:
        self.metrics_port = free_port()
        self.log = open(datadir / f"{name}.log", "wb")
        self.env = {**os.environ, "XDPGUARD_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
                    "XDPGUARD_TOPIC_PREFIX": common.topic_prefix,
                    "XDPGUARD_PACKETS_PARTITIONS": str(common.packets_partitions),
                    "SCORER_MODEL": str(model), "SCORER_DATADIR": str(datadir / name),
                    "SCORER_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1",
                    **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "services.scorer", "worker"],
                                     cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (0 while the worker is not serving yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                return metric(r.read().decode(), name)
        except OSError:
            return 0.0

    def describe(self, *names: str) -> str:
        """The metrics as 'name=value, ...', for the message of a failed wait."""
        return ", ".join(f"{n}={self.metric(n)}" for n in names)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """`sig`, then SIGKILL after `timeout` s; returns the exit status."""
        rc = stop_process(self.proc, sig, timeout)
        self.log.close()
        return rc


async def start_worker(common: CommonSettings, model: Path, tmp_path: Path, name: str = "w1",
                       **env: str) -> Worker:
    """Create the topics, start a worker and wait (40 s at most) until it owns partitions;
    AssertionError with the end of its log if it exits first."""
    await ensure_topics(common)
    w = Worker(common, model, tmp_path, name, **env)
    await wait_for(lambda: w.proc.poll() is not None or (w.health() or {}).get("packets_partitions"),
                   40, f"{name} to own partitions")
    assert w.proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
    return w


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def produce_packets(common: CommonSettings, packets, batch: int = 200, raw: list[bytes] = ()):
    """Micro-batches per partition, as capture sends them; `raw` records go to partition 0."""
    n = common.packets_partitions
    by_part = defaultdict(list)
    for p in packets:
        by_part[source_partition(p, n)].append(p)
    producer = AIOKafkaProducer(**client_options(common), acks="all", linger_ms=5)
    await producer.start()
    try:
        topic = common.topic(PACKETS)
        for data in raw:
            await producer.send(topic, data, partition=0)
        for part, pkts in by_part.items():
            for i in range(0, len(pkts), batch):
                await producer.send(topic, encode_packets(pkts[i:i + batch]), partition=part)
        await producer.flush()
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning in the background (no group)."""

    def __init__(self, common: CommonSettings, name: str) -> None:
        self.common, self.topic, self.values = common, common.topic(name), []
        self._task: asyncio.Task | None = None

    async def __aenter__(self):
        self.consumer = AIOKafkaConsumer(self.topic, **client_options(self.common),
                                         auto_offset_reset="earliest", enable_auto_commit=False,
                                         metadata_max_age_ms=1000)
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self):
        async for msg in self.consumer:
            self.values.append(msg.value)

    async def __aexit__(self, *exc):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        finally:
            await self.consumer.stop()


async def run_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`xdpguard ARGS` in a subprocess with `env` (a Worker's: same broker, prefix, settings),
    run in a thread so the test's event loop keeps producing meanwhile."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.manager", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout)
