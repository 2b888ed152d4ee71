"""`xdpguard top --once` renders against a loaded program: live counters, the busiest rule with its
hit rate, and the latest verdicts read from Kafka with their reasons."""
import asyncio
import os
import subprocess
import sys
import threading

from aiokafka import AIOKafkaProducer

from services.wire import codec

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.wire.kafka import client_options
from services.records.rules import Action, Origin, Rule, Scope
from services.wire.topics import VERDICTS, ensure_topics
from services.records.verdict import Verdict
from tests.support.services import attach_victim


async def publish_verdict(broker, verdict):
    await ensure_topics(broker)
    producer = AIOKafkaProducer(**client_options(broker), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(broker.topic(VERDICTS), codec.encode_verdict(verdict))
    finally:
        await producer.stop()


def test_top_renders_rules_rates_and_verdicts(netns_pair, pin_dir, broker):
    attach_victim(netns_pair, pin_dir)
    try:
        rule = Rule(Scope.SRC_PREFIX, Action.DROP, src=f"{netns_pair.ip_a}/32", origin=Origin.MANUAL)
        with Datapath.open(pin_dir) as dp:
            dp.add_rule(rule)
        verdict = Verdict(rule=Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.0/24"),
                          score=0.42, threshold=0.1, model_id="test-model", window_start_ns=1,
                          window_end_ns=2, reason="syn flood from 198.51.100.0/24")
        asyncio.run(publish_verdict(broker, verdict))

        # keep pings flowing while top measures its interval, so the rule has a hit rate
        pinger = threading.Thread(target=netns_pair.ping, kwargs={"count": 20, "interval": 0.1})
        pinger.start()
        env = {**os.environ, "XDPGUARD_PIN_DIR": pin_dir, "COLUMNS": "200",
               "XDPGUARD_TOPIC_PREFIX": broker.topic_prefix,
               "XDPGUARD_KAFKA_BOOTSTRAP": broker.kafka_bootstrap}
        res = subprocess.run([sys.executable, "-m", "services.manager", "top", "--once",
                              "--interval", "1.5"], env=env, capture_output=True, text=True,
                             timeout=60)
        pinger.join()
    finally:
        loader.unload_all(pin_dir)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "xdpguard top" in out and "dropped" in out
    line = next(l for l in out.splitlines() if f"from {netns_pair.ip_a}/32" in l)
    cells = line.split()
    assert "drop" in cells and "manual" in cells
    # hits per second over the interval: pings every 0.1 s -> clearly above zero
    assert any(c.replace(",", "").isdigit() and int(c.replace(",", "")) > 0 for c in cells)
    assert "syn flood from 198.51.100.0/24" in out and "0.420" in out


def test_top_into_a_pipe_prints_every_frame(pin_dir):
    """helper-72: `xdpguard top > file` (no terminal) wrote nothing: rich's Live redraws in
    place and printed nothing there until it stopped. Each frame is printed after the last."""
    import signal
    import time

    loader.load([], pin_dir=pin_dir)
    try:
        env = {**os.environ, "XDPGUARD_PIN_DIR": pin_dir, "COLUMNS": "200"}
        proc = subprocess.Popen([sys.executable, "-m", "services.manager", "top", "--no-verdicts",
                                 "--interval", "0.3"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        # SIGTERM, not SIGINT: a test run started in the background inherits SIGINT ignored
        # (POSIX shells do that to asynchronous commands), and so would top. rich flushes each
        # frame as it prints it, so what was shown survives the kill.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        loader.unload_all(pin_dir)
    assert out.count("xdpguard top") >= 3, (out[-2000:], err[-2000:])
