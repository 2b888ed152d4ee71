"""A scorer worker SIGKILLed while a flood is being scored, with the enforcer downstream: the
survivor takes the partitions over and the flood's rules still reach the maps, and however many
times a verdict is published (a restored window may be scored again: same verdict id), the
enforcer applies each rule once. Built on the streaming engineer's worker helpers
(tests/support/scorer_worker.py); their tests/broker/test_scorer_scaleout.py checks the scorer
side alone (every flow scored exactly once after a kill)."""
from __future__ import annotations

import asyncio
import collections
import signal
import time

import pytest

from services.dataplane import loader
from services.wire.codec import decode_verdict
from services.wire.topics import VERDICTS, ensure_topics
from tests.support.enforcer_proc import installed, start_enforcer
from tests.support.scorer_traffic import VICTIM, benign, make_model, syn_flood, with_seq
from tests.support.scorer_worker import TopicReader, Worker, produce_packets, wait_for
from tests.support.services import http_get, metric

pytestmark = pytest.mark.timeout(150)


async def test_rel_scorer_worker_killed_mid_flood_rules_applied_once(broker, pin_dir, tmp_path):
    model = make_model(tmp_path)
    await ensure_topics(broker)
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=256, prefix=256, allow=64, limit=64,
                                                         ring_pages=16))
    workers, enf = [], None
    try:
        enf, port = await asyncio.to_thread(start_enforcer, broker, pin_dir, tmp_path,
                                            ENFORCER_PROTECT_ADDRESSES="198.51.100.200")
        workers = [Worker(broker, model, tmp_path, f"k{i}") for i in (1, 2)]

        def shared():
            parts = [set((w.health() or {}).get("packets_partitions") or ()) for w in workers]
            return any(w.proc.poll() is not None for w in workers) or (
                all(parts) and parts[0] | parts[1] == set(range(broker.packets_partitions)))

        await wait_for(shared, 60, "both workers to own partitions")
        assert all(w.proc.poll() is None for w in workers)
        async with TopicReader(broker, VERDICTS) as verdicts:
            now = time.time_ns()
            t0 = now - now % 10**9
            await produce_packets(broker, with_seq(benign(t0, 4, clients=20, seed=5)
                                                   + syn_flood(t0 + 10**9, 3.0, pps=1500)), batch=100)
            await wait_for(lambda: verdicts.values, 40, "a first verdict")
            victim, survivor = workers
            victim.stop(signal.SIGKILL)
            await wait_for(lambda: set((survivor.health() or {}).get("packets_partitions") or ())
                           == set(range(broker.packets_partitions)), 40, "the survivor to take over")
            await asyncio.sleep(6)  # restored windows close and are scored (again)
            got = [decode_verdict(v) for v in verdicts.values]
        keys = {v.rule.key() for v in got}
        ids = collections.Counter(v.verdict_id for v in got)
        assert any(VICTIM in (v.rule.dst, v.rule.src) for v in got)
        await wait_for(lambda: metric(http_get(port, "/metrics")[1],
                                      "xdpguard_enforcer_verdicts_total") >= len(got), 20,
                       "the enforcer to handle every verdict")
        page = http_get(port, "/metrics")[1]
        applied = metric(page, "xdpguard_enforcer_rules_applied_total")
        refused = metric(page, "xdpguard_enforcer_rules_refused_total")
        assert applied + refused <= len(keys), f"a rule applied twice: {applied} applied, {keys}"
        assert applied >= 1, page
        assert keys <= set(installed(pin_dir)) or refused > 0, "a rule asked for is missing"
        print(f"\nscorer kill: {len(got)} verdicts ({sum(c - 1 for c in ids.values())} repeated "
              f"ids), {len(keys)} rules asked, {applied:.0f} applied, {refused:.0f} refused")
    finally:
        for w in workers:
            w.stop()
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)
