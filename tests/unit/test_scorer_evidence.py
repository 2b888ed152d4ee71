"""The scorer's two stages reach the replay's decisions: with one partition the same rows, the
same evidence and the same rules; with several the destination evidence is the same (all flows
towards a destination meet in one partition) and so are the destination limits."""
from __future__ import annotations

import pytest

from services.detection.evidence import SRC_MEASURES
from services.detection.features import FEATURE_NAMES
from tests.support import synthetic_traffic as G
from services.offline.replay import Pipeline, replay
from services.records.packet import Packet
from services.scorer.scoring import VerdictPolicy
from tests.support.scorer_stages import run_stages, scorer_rules

T0 = 1_800_000_000 * 10**9 + 300_000_000


@pytest.fixture(scope="module")
def traffic():
    pk = (G.syn_flood(T0, 4, 300) + G.ftp_guessing(T0, 4) + G.dns_prober(T0, 4)
          + G.fragmented_amplification(T0, 4) + G.p2p_node(T0, 4) + G.dhcp_flood(T0, 4)
          + G.media_call(T0, 4) + G.synack_reflection(T0, 4, resets=True))
    pk.sort(key=lambda p: p.ts_ns)
    return [Packet(p.ts_ns, p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_flags, p.length, seq=i)
            for i, p in enumerate(pk)]


def test_one_partition_gives_the_replays_rows_evidence_and_rules(traffic, detector):
    closed = sorted((w for w in run_stages(traffic, n=1) if w.rows), key=lambda w: w.window_ns)
    replayed = [r for r in Pipeline(detector).run(traffic)]
    assert [w.window_ns for w in closed] == [r.start_ns for r in replayed]
    for w, r in zip(closed, replayed):
        assert dict(zip(w.keys, map(list, w.rows))) == dict(zip(r.keys, map(list, r.rows)))
        assert w.evidence.src == r.evidence.src and w.evidence.dst == r.evidence.dst
    want = {(r.start_ns, sg.rule.key(), sg.rule.rate_pps, sg.rule.expires_ns)
            for r in replayed for sg in r.suggestions}
    assert want and scorer_rules(closed, detector) == want


def test_the_victims_resets_answer_nothing_in_the_scorer_as_in_the_replay(traffic, detector):
    """answers.refuses in stage 1 (windows._answer_hashes): a live victim's resets of the
    reflected SYN-ACKs leave them unanswered over 1 and 3 partitions, and they are limited."""
    from services.detection.evidence import DST_MEASURES
    at = DST_MEASURES.index("synack_srcs")
    for n in (1, 3):
        got = [w.evidence.dst.get("10.0.0.80", [0] * len(DST_MEASURES))[at] for w in run_stages(traffic, n=n)]
        assert max(got) >= 200, (n, got)
    assert any(k.startswith("limit/") and "10.0.0.80" in k
               for _, k, _, _ in scorer_rules([w for w in run_stages(traffic, n=3) if w.rows], detector))


def test_several_partitions_agree_on_every_destination(traffic, detector):
    one = {(w.window_ns, d): v for w in run_stages(traffic, n=1) for d, v in w.evidence.dst.items()}
    three = {(w.window_ns, d): v for w in run_stages(traffic, n=3) for d, v in w.evidence.dst.items()}
    assert one == three
    limits = lambda rules: {r for r in rules if r[1].startswith("limit/")}
    assert limits(scorer_rules([w for w in run_stages(traffic, n=3) if w.rows], detector)) == \
        limits(scorer_rules([w for w in run_stages(traffic, n=1) if w.rows], detector))


def test_an_snmp_station_retrying_a_dead_device_gets_no_rule_in_the_scorer(detector):
    """Stage 2 holds probe_other to the horizon's unanswered share as the replay does
    (evidence.ProbeFates): the same held values with one partition, and no rule with one or
    two, while the retry windows alone read as 20 unanswered probes of one /24."""
    pk = G.snmp_poller(T0, 25, down=1)
    replayed = list(Pipeline(detector).run(pk))
    assert any(r.evidence.held for r in replayed)
    for n in (1, 2):
        closed = [w for w in run_stages(pk, n=n) if w.rows]
        if n == 1:
            assert {w.window_ns: w.evidence.held for w in closed} == \
                {r.start_ns: r.evidence.held for r in replayed}
        assert scorer_rules(closed, detector) == set()


# LAN monitors the replay leaves alone (test_detect_synthetic.BENIGN), with dead targets, and
# the stage 2 partitions they are scored over (8 is XDPGUARD_PACKETS_PARTITIONS' default). Each
# partition sees the answers to its own destinations only: before the partitions exchanged their
# probe tallies, one holding a few dead targets of a monitor's first round read like one holding
# its share of a sweep's, and these were blocked (all of them but the first two SNMP cases).
MONITORS = {
    "SNMP station, 20 devices, 2 down, 8 partitions": (lambda: G.snmp_poller(T0, 25, down=2), 8),
    "SNMP station, 20 devices, 3 down, 8 partitions": (lambda: G.snmp_poller(T0, 25, down=3), 8),
    "SNMP station, 20 devices, 5 down, 4 partitions": (lambda: G.snmp_poller(T0, 25, down=5), 4),
    "SNMP station, 20 devices, 9 down, 4 partitions": (lambda: G.snmp_poller(T0, 25, down=9), 4),
    "SNMP station, 20 devices, 9 down, 8 partitions": (lambda: G.snmp_poller(T0, 60, down=9), 8),
    "ping monitor, 30 hosts, 3 down, 8 partitions": (lambda: G.ping_monitor(T0, 25, down=3), 8),
    "ping monitor, 30 hosts, 6 down, 4 partitions": (lambda: G.ping_monitor(T0, 25, down=6), 4),
    "ping monitor, 30 hosts, 9 down, 2 partitions": (lambda: G.ping_monitor(T0, 25, down=9), 2),
    "ping monitor, 30 hosts, 9 down, 8 partitions": (lambda: G.ping_monitor(T0, 25, down=9), 8),
}


def _scorer_blocks(detector, make, n) -> bool:
    pk = make()
    assert not any(w.suggestions for w in replay(pk, detector).windows)
    return bool(scorer_rules([w for w in run_stages(pk, n=n) if w.rows], detector))


@pytest.mark.parametrize("name", sorted(MONITORS))
def test_lan_monitoring_with_dead_targets_gets_no_rule_with_several_partitions(detector, name):
    """The replay leaves these monitors alone; so does the scorer over several partitions: a
    window settles with probe_other held to the share over every partition's tally."""
    assert not _scorer_blocks(detector, *MONITORS[name])


@pytest.mark.parametrize("make", [lambda: G.snmp_poller(T0, 25, down=3),
                                  lambda: G.ping_monitor(T0, 25, down=6)])
def test_held_probe_other_is_the_same_over_8_partitions_as_in_the_replay(detector, make):
    """Settled with every partition's tally, a source's probe_other as decisions read it is
    the replay's wherever the partition holds probes of it (a partition holding only dead
    targets read higher at close), and never above the replay's elsewhere (a partition with
    none of its probes reads 0)."""
    pk = make()
    replayed = {r.start_ns: r.evidence for r in Pipeline(detector).run(pk)}
    at = SRC_MEASURES.index("probe_other")
    seen = 0
    for w in run_stages(pk, n=8):
        for s in w.evidence.src:
            got = w.evidence.src_for_decision(s)[at]
            want = replayed[w.window_ns].src_for_decision(s)[at]
            assert got <= want
            if s in w.evidence.tally:
                assert got == want
                seen += 1
    assert seen


@pytest.mark.parametrize("make", [lambda: G.snmp_poller(T0, 25, down=3),
                                  lambda: G.ping_monitor(T0, 25, down=6),
                                  lambda: G.host_sweep(T0, 10, 10, port=161)])
def test_the_model_reads_the_replays_probe_other_over_8_partitions(detector, make):
    """A window settled with every partition's tally gets the replay's probe_other in its
    evidence and in its model rows (the share over all partitions), wherever the partition
    holds probes of that source: at close each partition had its own share only (a partition
    holding only a monitor's dead targets read 1.0, one holding only answered ones 0)."""
    pk = make()
    replayed = {r.start_ns: (r, dict(zip(r.keys, r.rows))) for r in Pipeline(detector).run(pk)}
    at = SRC_MEASURES.index("probe_other")
    col = FEATURE_NAMES.index("src_h_probe_other")
    compared = 0
    for w in run_stages(pk, n=8):
        r, rows = replayed[w.window_ns]
        for k, row in zip(w.keys, w.rows):
            if k[0] in w.evidence.tally:
                assert row[col] == rows[k][col], (w.window_ns, k)
                assert w.evidence.src[k[0]][at] == r.evidence.src[k[0]][at]
                compared += 1
    assert compared > 50


# Stations that answered for 60 s, then lost 15 targets (services/detection/outage.py); over 8
# stage 2 partitions their answered and dead targets sit in different partitions, and the
# answers that keep the dead ones remembered came through other partitions' tallies.
OUTAGES = {
    "ping monitor, 30 hosts, 15 go down": lambda: G.ping_monitor(T0, 90, down=0, outage=(60, 15)),
    "SNMP station, 20 devices, 15 go down":
        lambda: G.snmp_poller(T0, 90, down=0, outage=(60, 15)),
    "load balancer, 24 backends, 15 go down":
        lambda: G.health_checks(T0, 90, backends=24, down=0, outage=(60, 15)),
}


@pytest.mark.parametrize("name", sorted(OUTAGES))
def test_the_outage_memory_holds_over_8_partitions_as_in_the_replay(detector, name):
    """No rule over 8 partitions (nor in the replay), and probe_other as decisions read it is
    the replay's wherever a partition holds probes of the station: the memory each partition
    keeps from every partition's tallies is the replay's."""
    pk = OUTAGES[name]()
    replayed = {r.start_ns: r for r in Pipeline(detector).run(pk)}
    assert not any(r.suggestions for r in replayed.values())
    closed = [w for w in run_stages(pk, n=8) if w.rows]
    assert len({w.partition for w in closed if w.window_ns >= T0 + 70 * 10**9}) >= 4
    at = SRC_MEASURES.index("probe_other")
    for w in closed:
        for s in w.evidence.tally:
            want = replayed[w.window_ns].evidence.src_for_decision(s)[at]
            assert w.evidence.src_for_decision(s)[at] == want
    assert scorer_rules(closed, detector) == set()


@pytest.mark.parametrize("proto", [17, 1])
def test_a_sweep_gets_its_source_rule_as_soon_over_8_partitions_as_over_one(detector, proto):
    """The partition holding most of a sweep's group sees at least group / partitions of its
    targets, all unanswered: it keeps the whole value, so the rule comes in the same window."""
    pk = G.host_sweep(T0, 10, 10, proto=proto, port=161 if proto == 17 else 0)
    first = {}
    for n in (1, 8):
        windows = [w for w in run_stages(pk, n=n) if w.rows]
        rules = {ws for ws, key, _, _ in scorer_rules(windows, detector) if key.startswith("src/")}
        first[n] = min(rules, default=None)
    assert first[1] is not None and first[8] == first[1]


def test_stage_2_keeps_probe_fates_over_the_models_horizon_as_the_replay_does():
    """The replay keeps ProbeFates over the detector's horizon_windows, as stage 1 keeps its
    SourceHorizon and SourceWatch; stage 2 must keep the same span, not HORIZON_WINDOWS, and
    the model's outage memory period (its params' outage_memory_s), as stage 1 does."""
    from types import SimpleNamespace

    from services.scorer.collect import CollectStage
    from services.scorer.settings import ScorerSettings
    from tests.support.scorer_app import scorer_without_broker

    base = SimpleNamespace(horizon_windows=4, outage_memory_s=120.0)
    models = SimpleNamespace(schedule=SimpleNamespace(base=base))
    store = SimpleNamespace(marker=lambda q, n: None, chunks=lambda q: [])
    stage = CollectStage(ScorerSettings(), 2, models, VerdictPolicy(), SimpleNamespace(
        get_topic_name=lambda: "flows"), None, store, None, None)
    fates = stage.partition(1).fates
    assert fates.span == 4 and fates.memory.period_ns == 120 * 10**9
    sc = scorer_without_broker()
    sc.ingest.detector.outage_memory_s = 90.0
    assert sc.ingest.restore(1).watch.memory.period_ns == 90 * 10**9


def test_a_tunnels_traffic_is_answered_in_the_scorer_as_in_the_replay(detector):
    """answers.tunnels in stage 1 (windows._sender_hashes ships the tunnel key as sent_by) and
    stage 2 (dst_windows: taken among the flows): over 1 and 3 partitions the VXLAN peer's
    3,000 packets a window are answered (source `packets` 0, as in the replay), a flooder's of
    the same port beside it are not."""
    from services.detection.evidence import SRC_MEASURES
    from tests.support import synthetic_services as V
    pk = sorted(V.vxlan_tunnel(T0, 4) + V.vxlan_tunnel(T0, 4, pps_out=0, peer="203.0.113.94"),
                key=lambda p: p.ts_ns)
    pk = [Packet(p.ts_ns, p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_flags, p.length, seq=i)
          for i, p in enumerate(pk)]
    at = SRC_MEASURES.index("packets")
    replayed = {(r.start_ns, s): v[at] for r in Pipeline(detector).run(pk)
                for s, v in r.evidence.src.items()}
    assert max(v for (_, s), v in replayed.items() if s == "198.51.100.62") == 0
    assert max(v for (_, s), v in replayed.items() if s == "203.0.113.94") >= 2000
    for n in (1, 3):
        got = {(w.window_ns, s): v[at] for w in run_stages(pk, n=n) for s, v in w.evidence.src.items()}
        assert got == replayed, n
