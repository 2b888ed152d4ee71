"""Model roll-out without restarts, with real scorer workers and the real broker: two workers
switch models mid-stream at one window boundary (every flow-window scored exactly once, by the
model its window start names); a candidate's shadow phase is reported; a corrupt or
unverifiable model record is refused and dead-lettered and the workers keep their model."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import replace

import pytest

from services.detection.features import window_start
from services.detection.model import read_meta
from services.manager.models_cmd import read_state
from services.wire.codec import decode_deadletter, decode_verdict
from services.wire.modelrec import ACTIVE, CANDIDATE, ModelRecord, encode_model_record
from services.wire.topics import DEADLETTER, MODELS, VERDICTS, ensure_topics
from tests.support.kafka_io import produce_raw
from tests.support.scorer_traffic import benign, make_model, syn_flood, window_ahead, with_seq
from tests.support.scorer_worker import (TopicReader, Worker, produce_packets, run_cli,
                                         start_worker, wait_for)

pytestmark = pytest.mark.timeout(150)
W = 10**9
# every flow gets a pass verdict (threshold 1e9: nothing is anomalous), so each scored
# flow-window shows in the verdicts topic with the model that scored it
ENV = {"SCORER_EMIT_PASS": "1", "SCORER_PASS_TTL_S": "30", "SCORER_MODEL_LEAD_S": "2"}


async def paced(common, windows: int, clients: int = 12, seed: int = 0,
                until: dict | None = None, flood_pps: int = 0) -> list:
    """Benign traffic (and a spoofed SYN flood of `flood_pps`) for `windows` one-second windows
    from the next one (or, given `until`, up to the window before until["ns"] once the test sets
    it, 60 at most), each produced about a second before its window starts (as a capture would,
    moments after the packets); returns the packets."""
    start = window_ahead(1)
    out: list = []
    for k in range(60 if until is not None else windows):
        ws = start + k * W
        if until is not None and until.get("ns") is not None and ws >= until["ns"]:
            break
        await asyncio.sleep(max(0.0, (ws - W - time.time_ns()) / 1e9))
        packets = benign(ws, 0.9, clients=clients, seed=seed + k)
        if flood_pps:
            packets += syn_flood(ws, 0.9, pps=flood_pps, seed=seed + k)
        packets = with_seq(packets)
        packets = [replace(p, seq=p.seq + len(out)) for p in packets]
        await produce_packets(common, packets, batch=50)
        out += packets
    return out


def flow_windows(packets) -> set:
    return {(window_start(p.ts_ns, W), p.flow_key()) for p in packets}


def by_flow_window(values) -> Counter:
    """(window start, 5-tuple) -> [model ids of its verdicts]."""
    out: dict = {}
    for raw in values:
        v = decode_verdict(raw)
        r = v.rule
        out.setdefault((v.window_start_ns, (r.src, r.dst, r.sport, r.dport, r.proto)),
                       []).append(v.model_id)
    return out


async def test_two_workers_switch_models_at_one_boundary_scoring_every_window_once(broker, tmp_path):
    old = make_model(tmp_path / "old", threshold=1e9)
    new = make_model(tmp_path / "new", seed=1, threshold=1e9)
    old_id, new_id = read_meta(old)["model_id"], read_meta(new)["model_id"]
    assert old_id != new_id
    await ensure_topics(broker)
    workers = [Worker(broker, old, tmp_path, f"w{i}", **ENV) for i in (1, 2)]
    try:
        await wait_for(lambda: all((w.health() or {}).get("packets_partitions") for w in workers)
                       or any(w.proc.poll() is not None for w in workers), 50, "both workers")
        assert all(w.proc.poll() is None for w in workers)
        async with TopicReader(broker, VERDICTS) as verdicts:
            until: dict = {}
            traffic = asyncio.create_task(paced(broker, 0, until=until))
            pub = await run_cli(workers[0].env, "models", "publish", str(new), "--lead", "2",
                                "--shadow-windows", "2")
            assert pub.returncode == 0, pub.stderr
            promote = await run_cli(workers[0].env, "models", "promote", "--lead", "3")
            assert promote.returncode == 0, promote.stderr
            records, _ = await read_state(broker)
            until["ns"] = records[ACTIVE].from_ns + 4 * W  # on for 4 windows after the switch
            packets = await traffic
            want = flow_windows(packets)
            await wait_for(lambda: len(verdicts.values) >= len(want), 30, f"{len(want)} verdicts")
            await asyncio.sleep(1.5)  # a double-scored window would show up by now
            got = by_flow_window(verdicts.values)
        boundary = records[ACTIVE].from_ns
        assert records[ACTIVE].model_id == new_id and CANDIDATE not in records
        assert set(got) == want
        assert all(len(ids) == 1 for ids in got.values()), "a flow-window was scored twice"
        wrong = {k: ids for k, ids in got.items()
                 if ids[0] != (new_id if k[0] >= boundary else old_id)}
        assert not wrong, f"switch at {boundary}: {sorted(wrong.items())[:5]}"
        starts = {k[0] for k in got}
        assert min(starts) < boundary <= max(starts), "the traffic did not span the switch"
        used = [sum(w.metric(f'xdpguard_scorer_model_windows_total{{model_id="{m}"}}')
                    for w in workers) for m in (old_id, new_id)]
        assert all(used), used
        for w in workers:  # each worker took the switch
            await wait_for(lambda: w.metric(f'xdpguard_scorer_model{{model_id="{new_id}",role="active"}}')
                           == 1, 5, f"{new_id} active on {w.env['SCORER_DATADIR']}")
    finally:
        assert [w.stop() for w in workers] == [0, 0]


async def test_a_shadow_phase_is_reported_and_publishes_nothing(broker, tmp_path):
    active = make_model(tmp_path / "a", threshold=1e9)     # flags nothing
    cand = make_model(tmp_path / "c", threshold=-1e9)      # flags every flow
    w = await start_worker(broker, active, tmp_path, **ENV)
    try:
        async with TopicReader(broker, VERDICTS) as verdicts:
            until: dict = {}
            # the flood gives the candidate's anomalies evidence: rules it would add
            traffic = asyncio.create_task(paced(broker, 0, until=until, flood_pps=200))
            pub = await run_cli(w.env, "models", "publish", str(cand), "--lead", "2",
                                "--shadow-windows", "3")
            assert pub.returncode == 0, pub.stderr
            records, _ = await read_state(broker)
            cand_rec = records[CANDIDATE]
            until["ns"] = cand_rec.until_ns + 2 * W
            packets = await traffic
            await wait_for(lambda: len(verdicts.values) >= len(flow_windows(packets)), 30,
                           "every flow-window scored")
            shadowed = {k for k in flow_windows(packets)
                        if cand_rec.from_ns <= k[0] < cand_rec.until_ns}
            assert shadowed, "no traffic in the shadow windows"
            await wait_for(lambda: w.metric("xdpguard_scorer_shadow_flows_total") >= len(shadowed),
                           10, "the shadow tally")

            async def report():
                st = await run_cli(w.env, "models", "status", "--json")
                assert st.returncode == 0, st.stderr
                return json.loads(st.stdout)
            status = await report()
            for _ in range(10):
                if (status["shadow"] or {}).get("flows", 0) >= len(shadowed):
                    break
                await asyncio.sleep(1)
                status = await report()
            got = [decode_verdict(v) for v in verdicts.values]
        shadow = status["shadow"]
        assert status["candidate"]["model_id"] == cand_rec.model_id
        assert shadow["flows"] == len(shadowed) == shadow["flagged_shadow"]
        assert shadow["agree"] == 0 and shadow["flagged_active"] == 0
        assert shadow["rules_added"] > 0 and shadow["added"] and shadow["rules_dropped"] == 0
        assert w.metric('xdpguard_scorer_shadow_flows_total{agreement="disagree"}') == len(shadowed)
        assert w.metric('xdpguard_scorer_shadow_rules_total{change="added"}') == shadow["rules_added"]
        # only the active model's verdicts were published: passes, every one
        assert {v.rule.action.value for v in got} == {"pass"}
        assert {v.model_id for v in got} == {read_meta(active)["model_id"]}
        text = await run_cli(w.env, "models", "status")
        assert "agreement" in text.stdout and "would add" in text.stdout, text.stdout
    finally:
        assert w.stop() == 0


async def test_corrupt_and_unverifiable_model_records_are_refused_and_dead_lettered(broker, tmp_path):
    active = make_model(tmp_path / "a", threshold=1e9)
    other = make_model(tmp_path / "b", seed=2, threshold=1e9)
    w = await start_worker(broker, active, tmp_path, **ENV)
    try:
        data, meta = other.read_bytes(), read_meta(other)
        start = window_ahead(5)
        flipped = encode_model_record(ModelRecord(ACTIVE, data, meta, meta["sha256"], start, W))
        at = flipped.index(data[100:140])
        flipped = flipped[:at] + bytes([flipped[at] ^ 0xFF]) + flipped[at + 1:]
        junk = b"hashes right, unpickles wrong"
        junk_meta = {**meta, "sha256": hashlib.sha256(junk).hexdigest()}
        unpicklable = encode_model_record(ModelRecord(ACTIVE, junk, junk_meta, junk_meta["sha256"],
                                                      start, W))
        bad = [(b"active", flipped), (b"active", b"\xc1 not msgpack"), (b"active", unpicklable),
               (b"bogus", b"x")]
        async with TopicReader(broker, DEADLETTER) as dead, TopicReader(broker, VERDICTS) as verdicts:
            await produce_raw(broker, broker.topic(MODELS), bad)
            await wait_for(lambda: len(dead.values) >= len(bad), 20, f"{len(bad)} dead letters")
            packets = await paced(broker, 7)  # on across the windows the bad records named
            await wait_for(lambda: len(verdicts.values) >= len(flow_windows(packets)), 30,
                           "every flow-window scored")
            letters = [decode_deadletter(d) for d in dead.values]
            got = [decode_verdict(v) for v in verdicts.values]
        assert sorted(d.raw for d in letters) == sorted(v for _, v in bad)
        reasons = " | ".join(d.reason for d in letters)
        assert "hash to" in reasons and "not msgpack" in reasons and "cannot unpickle" in reasons
        assert "unknown key 'bogus'" in reasons
        assert all(d.source_topic == broker.topic(MODELS) and d.service == "scorer"
                   for d in letters)
        assert w.metric('xdpguard_scorer_model_records_total{outcome="refused"}') == len(bad)
        assert w.metric('xdpguard_scorer_decode_errors_total') == len(bad)
        assert {v.model_id for v in got} == {read_meta(active)["model_id"]}  # the old one stayed
        st = await run_cli(w.env, "models", "status", "--json")
        status = json.loads(st.stdout)  # the records as written; the workers' refusals beside them
        assert [r["refused"] for r in status["refusals"]] == [len(bad)], status["refusals"]
    finally:
        assert w.stop() == 0
