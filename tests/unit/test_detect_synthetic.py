"""The attack kinds the detection missed on captures it had never seen, and the benign shapes it
blocked there, synthetic (tests/support/synthetic_traffic.py), replayed through the live logic with the
shipped model: each attack gets the right rule within 3 s of its first packet and loses at least
90% of its packets over 30 s; no benign shape loses a packet."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support import synthetic_traffic as G
from tests.support.replay_checks import first_block_s
from services.offline.replay import replay
from services.records.rules import Action, Scope

T0 = 1_800_000_000 * 10**9 + 370_000_000  # windows do not line up with the traffic
S = 10**9


ATTACKS = {
    "spoofed SYN flood, 300 pps": (lambda: G.syn_flood(T0, 30, 300),
                                   dict(scope=Scope.DST_LIMIT, dst="10.0.0.10", proto=6, dport=80, tcp_flags=0x02)),
    "spoofed SYN flood with ECE+CWR, 300 pps": (lambda: G.syn_flood(T0, 30, 300, ecn=True),
                                                dict(scope=Scope.DST_LIMIT, dst="10.0.0.10", proto=6, dport=80,
                                                     tcp_flags=0x02)),
    "spoofed SYN flood, 100 pps": (lambda: G.syn_flood(T0, 30, 100, seed=9),
                                   dict(scope=Scope.DST_LIMIT, dst="10.0.0.10", tcp_flags=0x02)),
    "DHCP DISCOVER flood, 100 pps": (lambda: G.dhcp_flood(T0, 30, 100),
                                     dict(scope=Scope.DST_LIMIT, dst="255.255.255.255", proto=17, dport=67)),
    "FTP password guessing, 10 sessions/s": (lambda: G.ftp_guessing(T0, 30),
                                             dict(scope=Scope.SRC_PREFIX, src="203.0.113.66/32")),
    "DNS amplification in IP fragments": (lambda: G.fragmented_amplification(T0, 30),
                                          dict(scope=Scope.DST_LIMIT, dst="10.0.0.53", proto=17, dport=0)),
    "SYN-ACK reflection": (lambda: G.synack_reflection(T0, 30),
                           dict(scope=Scope.DST_LIMIT, dst="10.0.0.80", proto=6, tcp_flags=0x12)),
    "UDP host sweep, 10 pps": (lambda: G.host_sweep(T0, 30, 10),
                               dict(scope=Scope.SRC_PREFIX, src="203.0.113.88/32")),
    "TCP SYN host sweep, 10 pps": (lambda: G.host_sweep(T0, 30, 10, proto=6, port=22),
                                   dict(scope=Scope.SRC_PREFIX, src="203.0.113.88/32")),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_kind_gets_its_rule_within_3_s_and_loses_90_percent(detector, name):
    make, want = ATTACKS[name]
    pk = make()
    res = replay(pk, detector)
    rules = [sg.rule for w in res.windows for sg in w.suggestions]
    assert rules, f"{name}: no rule"
    first = rules[0]
    assert {k: getattr(first, k) for k in want} == want, (first, [sg.reason for w in res.windows
                                                                  for sg in w.suggestions][:3])
    assert first.action in (Action.DROP, Action.LIMIT)
    assert first_block_s(pk, res.dropped) <= 3.0
    assert res.dropped.mean() >= 0.90, f"{name}: {res.dropped.mean():.3f} dropped"


def test_synack_reflection_at_a_live_victim_that_resets_each_synack_is_limited(detector):
    """A live victim resets every SYN-ACK it did not ask for (a capture with real tools: nginx on
    200 addresses, Linux resetting): the resets answer nothing, so the SYN-ACKs reaching it are
    limited within 3 s and >= 90% of them are dropped (its own resets leave on egress: XDP
    never sees them, so they are not counted)."""
    pk = G.synack_reflection(T0, 30, resets=True)
    res = replay(pk, detector)
    rules = [sg.rule for w in res.windows for sg in w.suggestions]
    assert rules
    want = dict(scope=Scope.DST_LIMIT, dst="10.0.0.80", proto=6, tcp_flags=0x12)
    assert {k: getattr(rules[0], k) for k in want} == want
    inbound = np.array([p.dst == "10.0.0.80" for p in pk])
    assert first_block_s(pk, res.dropped) <= 3.0
    assert res.dropped[inbound].mean() >= 0.90
    assert not res.dropped[~inbound].any()


@pytest.mark.parametrize("proto", [17, 6])
def test_a_sweep_at_5_probes_a_second_is_blocked_within_4_2_s(detector, proto):
    """The known limit of the probe floor (10, so that a monitor with up to 9 dead targets of
    one /24 is left alone): a 5 probe/s sweep gets its rule 3-4.2 s after its first probe
    and loses 86-90% of 30 s, whatever its phase in the window (models/README.md, Limits)."""
    for phase in (0, 370_000_000, 850_000_000):
        pk = G.host_sweep(T0 - 370_000_000 + phase, 30, 5, proto=proto, port=22 if proto == 6 else 161)
        res = replay(pk, detector)
        assert res.first_rule_ns is not None and (res.first_rule_ns - pk[0].ts_ns) / S <= 4.2
        assert res.dropped.mean() >= 0.85


def test_a_service_version_probe_run_is_blocked_within_3_s(detector):
    """nmap -sV: its SYN scan (1000 ports in 2 s) is mostly over before any rule can act; the
    scanner is blocked from then on, probes included."""
    pk = G.service_probe(T0)
    res = replay(pk, detector)
    first = next(sg.rule for w in res.windows for sg in w.suggestions)
    assert (first.scope, first.src) == (Scope.SRC_PREFIX, "203.0.113.77/32")
    t = first_block_s(pk, res.dropped)
    assert t <= 3.0
    after = np.array([p.ts_ns >= pk[0].ts_ns + 3 * S for p in pk])
    assert res.dropped[after].all()


BENIGN = {
    "DNS-over-HTTPS client": lambda: G.doh_client(T0, 60),
    "client probing many DNS resolvers": lambda: G.dns_prober(T0, 60),
    "voice/video call media": lambda: G.media_call(T0, 60),
    "P2P node with many peers": lambda: G.p2p_node(T0, 60),
    "browser opening many TLS connections": lambda: G.browser(T0, 60),
    "WebRTC ICE checks to a peer's candidate ports": lambda: G.ice_checks(T0, 60),
    "load balancer checking 12 backends of a /24, 6 refusing": lambda: G.health_checks(T0, 60),
    "monitor pinging 30 hosts of a /24 each second, 9 down": lambda: G.ping_monitor(T0, 60, down=9),
    "client reconnecting every 100 ms": lambda: G.web_poller(T0, 60),
    "SNMP station polling 20 devices of a /24, 1 down (retried)": lambda: G.snmp_poller(T0, 60, down=1),
    "SNMP station polling 20 devices of a /24, 9 down (retried)": lambda: G.snmp_poller(T0, 60, down=9),
}


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_a_benign_shape_loses_nothing(detector, name):
    pk = BENIGN[name]()
    res = replay(pk, detector)
    reasons = [sg.reason for w in res.windows for sg in w.suggestions]
    assert reasons == [] and not res.dropped.any()


def test_benign_shapes_next_to_every_attack_lose_nothing(detector):
    benign = [p for make in BENIGN.values() for p in make()]
    attacks = [p for make, _ in ATTACKS.values() for p in make()] + G.service_probe(T0)
    marked = sorted([(p, False) for p in benign] + [(p, True) for p in attacks], key=lambda x: x[0].ts_ns)
    res = replay([p for p, _ in marked], detector)
    is_attack = np.array([a for _, a in marked])
    assert not res.dropped[~is_attack].any()
    assert res.dropped[is_attack].mean() >= 0.85


# Benign LAN shapes that probe evidence blocks today (found in review; models/README.md,
# "Limits"). Strict: when one passes, move it to BENIGN. Each with fewer targets down passes.
# Their targets are dead FROM THE START: nothing answered the station, so the outage memory
# (OUTAGES below: targets that answered before and then went down) cannot tell them from a sweep.
KNOWN_BLOCKED = {
    "load balancer checking 12 backends of a /24, 10 refusing":
        (lambda: G.health_checks(T0, 60, down=10), lambda: G.health_checks(T0, 60, down=9)),
    # lbcheck.pcap's shape (the server-side set): 12 of 40 dead. The accepted share (3c58590)
    # let it through and was reverted: dense connect sweeps went through with it (review 16)
    "load balancer checking 40 backends of a /24, 12 refusing":
        (lambda: G.health_checks(T0, 60, backends=40, down=12),
         lambda: G.health_checks(T0, 60, backends=40, down=9)),
    "monitor pinging 30 hosts of a /24 each second, 10 down":
        (lambda: G.ping_monitor(T0, 60, down=10), lambda: G.ping_monitor(T0, 60, down=9)),
    "SNMP station polling 20 devices of a /24, 10 down (retried)":
        (lambda: G.snmp_poller(T0, 60, down=10), lambda: G.snmp_poller(T0, 60, down=9)),
}


@pytest.mark.parametrize("name", sorted(KNOWN_BLOCKED))
def test_lan_monitoring_below_the_probe_floor_loses_nothing(detector, name):
    res = replay(KNOWN_BLOCKED[name][1](), detector)
    assert not res.dropped.any()


@pytest.mark.xfail(strict=True, reason="probe evidence counts a monitor's dead targets like a "
                   "sweep's empty addresses (floor 10)")
@pytest.mark.parametrize("name", sorted(KNOWN_BLOCKED))
def test_lan_monitoring_during_a_partial_outage_loses_nothing(detector, name):
    res = replay(KNOWN_BLOCKED[name][0](), detector)
    assert not res.dropped.any(), f"{res.dropped.mean():.2%} dropped"


# Monitoring stations that ran with every target answering, then lost some of them at once (a
# switch failed) for 70 s: their probes of the dead targets read like a sweep's once the answers
# left the 10-window horizon (blocked ~10 s into the outage before the outage memory,
# services/detection/outage.py). (station, its targets, targets down).
OUTAGES = {
    "ping monitor of 30 hosts": (G.ping_monitor, 30, (10, 15, 27)),
    "SNMP station polling 20 devices": (G.snmp_poller, 20, (10, 15, 17)),
    "load balancer checking 12 backends": (G.health_checks, 12, (10,)),
    "load balancer checking 24 backends": (G.health_checks, 24, (10, 15, 21)),
}
SIZE = {G.ping_monitor: "hosts", G.snmp_poller: "devices", G.health_checks: "backends"}


def outage(name: str, dead: int, t0: int = T0) -> list:
    """OUTAGES[name]'s station, 60 s with every target up, then `dead` of them down for 70 s."""
    make, targets, _ = OUTAGES[name]
    return make(t0, 130, down=0, outage=(60, dead), **{SIZE[make]: targets})


@pytest.mark.parametrize("name,dead", [(n, d) for n, (_, _, ds) in OUTAGES.items() for d in ds])
def test_a_monitoring_station_keeps_its_traffic_when_its_targets_go_down(detector, name, dead):
    res = replay(outage(name, dead), detector)
    reasons = [sg.reason for w in res.windows for sg in w.suggestions]
    assert reasons == [] and not res.dropped.any()


def without_memory(detector):
    """`detector` with the outage memory off (a model whose params say outage_memory_s 0)."""
    return type(detector)(detector.estimator, detector.threshold, detector.feature_names,
                          detector.model_id, {**detector.meta, "params": {
                              **detector.meta["params"], "outage_memory_s": 0}},
                          detector.wide_threshold)


def test_the_outage_memory_is_what_lets_the_station_through(detector):
    """With the memory off the same outages are blocked about 10 s in, as before the memory:
    the tests above could fail."""
    off = without_memory(detector)
    assert off.outage_memory_s == 0 and detector.outage_memory_s == 3600
    for name in ("ping monitor of 30 hosts", "SNMP station polling 20 devices",
                 "load balancer checking 12 backends"):
        pk = outage(name, 10)
        res = replay(pk, off)
        assert res.first_rule_ns is not None and 60 * S < res.first_rule_ns - pk[0].ts_ns < 75 * S


def sweep_with_live_hosts(proto: int, t0: int = T0) -> tuple[list, str]:
    """A 10 probe/s sweep of 10.0.4.0/24 (UDP 161 or TCP 22) in which every 20th address is a
    live host answering the sweeper (an SNMP reply; a SYN-ACK the sweeper completes with its
    ACK)."""
    pk = G.host_sweep(t0, 30, 10, proto=proto, net="10.0.4", port=22 if proto == 6 else 161)
    out = []
    for p in pk:
        out.append(p)
        if int(p.dst.rsplit(".", 1)[1]) % 20 == 0:
            if proto == 17:
                out.append(G._udp(p.ts_ns + 2_000_000, p.dst, p.src, p.dport, p.sport, 120))
            else:
                out += [G._tcp(p.ts_ns + 1_000_000, p.dst, p.src, p.dport, p.sport, G.SYN | G.ACK),
                        G._tcp(p.ts_ns + 2_000_000, p.src, p.dst, p.sport, p.dport, G.ACK)]
    return sorted(out, key=lambda p: p.ts_ns), pk[0].src


@pytest.mark.parametrize("proto", [17, 6])
def test_a_sweep_whose_live_hosts_answered_is_still_blocked(detector, proto):
    """The memory remembers the live hosts only: the empty addresses never answered the sweeper
    and count as before, the same rule at the same time as without the memory."""
    pk, scanner = sweep_with_live_hosts(proto)
    res, off = replay(pk, detector), replay(pk, without_memory(detector))
    first = next(sg.rule for w in res.windows for sg in w.suggestions)
    assert (first.scope, first.src) == (Scope.SRC_PREFIX, f"{scanner}/32")
    assert first_block_s(pk, res.dropped) <= 3.0 and res.dropped.mean() >= 0.85
    assert res.first_rule_ns == off.first_rule_ns and (res.dropped == off.dropped).all()


@pytest.mark.parametrize("proto", [17, 6])
def test_a_scanner_that_talked_to_one_host_first_is_still_blocked(detector, proto):
    """60 s of ordinary exchanges with one host of a /24 on the port it then sweeps (SNMP
    polls; SSH sessions), the host remembered as answering, then a sweep of the rest of that
    /24: blocked within 3 s of the sweep's first probe."""
    scanner, host = "203.0.113.88", "10.0.4.1"
    if proto == 17:
        talk = G.snmp_poller(T0, 60, station=scanner, net="10.0.4", devices=1, down=0,
                             every_s=1)
    else:
        talk = []
        for i in range(30):
            G._session(talk, T0 + i * 2 * S, scanner, host, 40000 + i, 22, 3, 100_000_000)
    sweep = [p for p in G.host_sweep(T0 + 60 * S, 30, 10, proto=proto, net="10.0.4",
                                     port=22 if proto == 6 else 161) if p.dst != host]
    pk = sorted(talk + sweep, key=lambda p: p.ts_ns)
    res = replay(pk, detector)
    assert not any(sg.rule.src == f"{scanner}/32" for w in res.windows
                   if w.start_ns < T0 + 60 * S - S for sg in w.suggestions)
    assert res.first_rule_ns is not None and res.first_rule_ns - sweep[0].ts_ns <= 3 * S
    swept = np.array([p.ts_ns >= sweep[0].ts_ns for p in pk])
    assert res.dropped[swept].mean() >= 0.85


# Found in review (docs/detection.md, probe evidence): shapes no measure catches, on main before
# the outage memory as after it. Strict: when one is caught (or passes), move it.
KNOWN_MISSED = {
    # every flow carries the scanner's own ACK after its SYN: no half-open probe (the live
    # hosts' SYN-ACKs still tell the scanner who is there); the outage memory then also
    # remembers these targets as having accepted it, so a plain SYN sweep of them an hour
    # long passes too
    "TCP sweep, the scanner's own ACK after each SYN, 10 pps":
        lambda: G.host_sweep(T0, 30, 10, proto=6, port=22, repeat=2),
    # probes are flows of <= 2 packets
    "UDP sweep, 3 datagrams per address, 10 addresses/s":
        lambda: G.host_sweep(T0, 30, 10, repeat=3),
}


@pytest.mark.xfail(strict=True, reason="no probe: a flow with the source's ACK, or of 3 packets")
@pytest.mark.parametrize("name", sorted(KNOWN_MISSED))
def test_a_sweep_that_sends_no_probe_shaped_flow_is_blocked(detector, name):
    pk = KNOWN_MISSED[name]()
    res = replay(pk, detector)
    assert res.first_rule_ns is not None and res.first_rule_ns - pk[0].ts_ns <= 3 * S
    assert res.dropped.mean() >= 0.85


@pytest.mark.xfail(strict=True, reason="the UDP memory notes answered PROBES (flows of <= 2 "
                   "packets) of sources with a probe group only: a walk's exchanges are neither")
def test_an_snmp_station_walking_its_devices_keeps_its_traffic_when_they_go_down(detector):
    """Each poll walks 5 OIDs (10 packets a device a window): healthy, the station has no probe
    and nothing is remembered; once 15 of 20 devices are down their retries are 1-packet probes
    of one /24: its rule 1.6 s into the outage, 39.9% of the station's packets dropped (before
    the memory as after it)."""
    pk = G.snmp_poller(T0, 130, down=0, outage=(60, 15), walk=5)
    res = replay(pk, detector)
    assert not res.dropped.any(), f"{res.dropped.mean():.2%} dropped"


def test_an_snmp_station_walking_its_devices_loses_nothing_while_they_answer(detector):
    assert not replay(G.snmp_poller(T0, 130, down=0, walk=5), detector).dropped.any()


@pytest.mark.xfail(strict=True, reason="the outage memory takes the scanner's own ACK as a "
                   "handshake: the targets count as having accepted it for an hour")
def test_a_syn_sweep_after_a_pass_with_the_scanners_own_acks_is_blocked(detector):
    """A pass over 10.0.1.0/24 with the scanner's own ACK after each SYN (KNOWN_MISSED: no
    rule, nothing new learnt by a plain sweep after it), then a plain SYN sweep of the same
    targets 10 s later: blocked within 3 s on 969f53f (and with outage_memory_s 0), not with
    the memory. The one shape found in review that the memory lets through and main did not."""
    scan = G.host_sweep(T0, 30, 10, proto=6, port=22, repeat=2)
    sweep = G.host_sweep(T0 + 40 * S, 30, 10, proto=6, port=22)
    pk = sorted(scan + sweep, key=lambda p: p.ts_ns)
    assert replay(pk, without_memory(detector)).first_rule_ns - sweep[0].ts_ns <= 3 * S
    res = replay(pk, detector)
    assert res.first_rule_ns is not None and res.first_rule_ns - sweep[0].ts_ns <= 3 * S
