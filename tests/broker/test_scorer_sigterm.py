"""A real worker under traffic stops cleanly on SIGTERM (exit 0, no crash in its log) even with
a fast close-windows timer racing the stop; a second SIGTERM while stopping exits at once."""
from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.support.scorer_traffic import benign, syn_flood, window_ahead, with_seq
from tests.support.scorer_worker import produce_packets, start_worker, wait_for

pytestmark = pytest.mark.timeout(120)


async def test_sigterm_under_traffic_is_a_clean_stop_every_time(broker, model, tmp_path):
    for i in range(2):
        w = await start_worker(broker, model, tmp_path, name=f"t{i}", SCORER_TICK_S="0.005")
        t0 = window_ahead()
        await produce_packets(broker, with_seq(benign(t0, 2, clients=10, seed=i)
                                               + syn_flood(t0, 1.5, pps=2000)))
        await wait_for(lambda: w.metric("xdpguard_scorer_records_total"), 20, "records")
        rc = w.stop()
        log = (tmp_path / f"t{i}.log").read_text()
        assert rc == 0, log[-3000:]
        assert "crash" not in log.lower(), log[-3000:]


async def test_a_second_sigterm_forces(broker, model, tmp_path):
    w = await start_worker(broker, model, tmp_path, name="f")
    w.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    t = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    rc = await asyncio.get_running_loop().run_in_executor(None, w.proc.wait, 10)
    assert rc in (0, 1) and time.monotonic() - t < 3
