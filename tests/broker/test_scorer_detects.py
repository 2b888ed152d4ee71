"""A real scorer worker (subprocess) against the real broker: a spoofed SYN flood gets a
limit/drop verdict, benign traffic none; undecodable records go to the dead-letter topic with a
reason and the worker keeps scoring."""
from __future__ import annotations

import msgpack
import pytest

from services.wire.codec import decode_deadletter, decode_verdict
from services.wire.partition import source_partition
from services.wire.topics import DEADLETTER, PACKETS, VERDICTS
from tests.support.packet_records import encode_packets
from tests.support.scorer_traffic import VICTIM, benign, syn_flood, window_ahead, with_seq
from tests.support.scorer_worker import TopicReader, produce_packets, start_worker, wait_for

pytestmark = pytest.mark.timeout(90)


async def test_syn_flood_gets_a_limit_verdict_and_benign_traffic_none(broker, model, tmp_path):
    w = await start_worker(broker, model, tmp_path)
    try:
        async with TopicReader(broker, VERDICTS) as verdicts:
            t0 = window_ahead()
            good = benign(t0, 3, clients=20, seed=1)
            await produce_packets(broker, with_seq(good + syn_flood(t0 + 10**9, 1.0, pps=2000)))
            await wait_for(lambda: verdicts.values, 20, "a verdict")
            try:
                await wait_for(lambda: w.metric("xdpguard_scorer_flows_scored_total") >= 2000, 15,
                               "all windows")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; " + w.describe(
                    "xdpguard_scorer_flows_scored_total", "xdpguard_scorer_late_flows_total",
                    "xdpguard_scorer_late_events_total", "xdpguard_scorer_open_windows")) from None
            got = [decode_verdict(v) for v in verdicts.values]
        assert got, "no verdict"
        for v in got:
            assert v.rule.action.value in ("drop", "limit")
            assert VICTIM in (v.rule.dst, v.rule.src), f"benign traffic got a verdict: {v}"
            assert v.score >= v.threshold and v.model_id.startswith("test-if") and v.reason
            assert v.window_end_ns - v.window_start_ns == 10**9
            assert v.rule.expires_ns - v.rule.created_ns == 600 * 10**9
        assert any(v.rule.scope.value == "dst_limit" and v.rule.tcp_flags == 2 for v in got)
        benign_addrs = {p.src for p in good} | {p.dst for p in good}
        assert not any(v.rule.src in benign_addrs or v.rule.dst in benign_addrs for v in got)
        assert w.metric("xdpguard_scorer_anomalies_total") >= 1000
        assert w.metric("xdpguard_scorer_late_flows_total") == 0  # no window closed without its flows
    finally:
        assert w.stop() == 0  # SIGTERM: clean shutdown


async def test_undecodable_records_go_to_deadletter_and_the_worker_keeps_going(broker, model, tmp_path):
    w = await start_worker(broker, model, tmp_path)
    try:
        bad = [b"\xc1garbage", msgpack.packb({"v": 99, "t": "pk", "n": 1}),
               encode_packets(benign(window_ahead(), 0.5, clients=2))[:-7]]
        async with TopicReader(broker, DEADLETTER) as dead, TopicReader(broker, VERDICTS) as verdicts:
            t0 = window_ahead()
            await produce_packets(broker, with_seq(syn_flood(t0, 1.0, pps=1500)), raw=bad)
            await wait_for(lambda: len(dead.values) >= 3, 20, "3 dead letters")
            await wait_for(lambda: verdicts.values, 20, "a verdict after the bad records")
            letters = [decode_deadletter(d) for d in dead.values]
        assert sorted(d.raw for d in letters) == sorted(bad)
        reasons = " | ".join(d.reason for d in letters)
        assert "not msgpack" in reasons and "schema version 99" in reasons
        for d in letters:
            assert d.source_topic == broker.topic(PACKETS) and d.partition == 0
            assert d.service == "scorer" and d.raw_len == len(d.raw)
        assert w.metric("xdpguard_scorer_decode_errors_total") == 3
    finally:
        assert w.stop() == 0


async def test_over_8_partitions_a_sweep_gets_its_rule_and_a_ping_monitor_with_hosts_down_none(
        broker, tmp_path):
    """The shipped model over the default 8 partitions: a ping monitor of 30 hosts with 6 down
    is spread over the stage 2 partitions by destination, and one holding only dead hosts read
    "every probe unanswered" (blocked from 3 down before the partitions exchanged their probe
    tallies: docs/scorer.md "Settling"); a sweep of the same /24 size still gets its rule."""
    from tests.support import synthetic_traffic as G
    from tests.support.services import ROOT

    assert broker.packets_partitions == 8
    w = await start_worker(broker, ROOT / "models" / "xdpguard-if.joblib", tmp_path)
    try:
        async with TopicReader(broker, VERDICTS) as verdicts:
            t0 = window_ahead()
            monitor = G.ping_monitor(t0, 6, station="10.0.0.51", net="10.0.2", down=6)
            sweep = G.host_sweep(t0, 6, pps=10, scanner="203.0.113.88", net="10.0.1")
            await produce_packets(broker, with_seq(monitor + sweep))
            try:
                await wait_for(lambda: any(decode_verdict(v).rule.src == "203.0.113.88/32"
                                           for v in verdicts.values), 30, "the sweep's rule")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; " + w.describe(
                    "xdpguard_scorer_flows_scored_total", "xdpguard_scorer_anomalies_total",
                    "xdpguard_scorer_late_flows_total", "xdpguard_scorer_future_events_total",
                    "xdpguard_scorer_windows_scored_total",
                    "xdpguard_scorer_open_windows")) from None
            flows = {(p.ts_ns // 10**9, p.src, p.dst, p.sport, p.dport, p.proto)
                     for p in monitor + sweep}  # a row per flow per window
            await wait_for(lambda: w.metric("xdpguard_scorer_flows_scored_total") >= len(flows),
                           20, "every flow scored")
            got = [decode_verdict(v) for v in verdicts.values]
        assert not [v for v in got if "10.0.0.51" in (v.rule.src, v.rule.dst) or
                    v.rule.src == "10.0.0.51/32"], got
        assert w.metric("xdpguard_scorer_late_flows_total") == 0
    finally:
        assert w.stop() == 0


async def test_rel_a_bad_record_last_in_a_quiet_partition_stops_no_scoring_after_a_restart(
        broker, model, tmp_path):
    """helper-72: one undecodable record, the newest of a packets partition that then stays
    quiet, is dead-lettered and its offset committed; nothing of it is in the records table, so
    the restarted worker took it for unread for good: the partition stayed a backlog, its
    progress never moved, and stage 2 held every destination's windows (a flood from another
    partition got no verdict). The group's committed offset now counts as handled."""
    n, quiet = broker.packets_partitions, 0
    w = await start_worker(broker, model, tmp_path, "w1")
    try:
        async with TopicReader(broker, DEADLETTER) as dead:
            await produce_packets(broker, [], raw=[b"\xc1garbage"])  # to partition 0
            await wait_for(lambda: dead.values, 20, "the dead letter")
    finally:
        assert w.stop() == 0  # SIGTERM: the group commits what it handled
    w = await start_worker(broker, model, tmp_path, "w2")
    try:
        async with TopicReader(broker, VERDICTS) as verdicts:
            flood = [p for p in syn_flood(window_ahead(), 1.0, pps=2000)
                     if source_partition(p, n) != quiet]
            await produce_packets(broker, with_seq(flood))
            try:
                await wait_for(lambda: verdicts.values, 25, "a verdict after the restart")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; healthz {w.health()}") from None
    finally:
        assert w.stop() == 0
