"""The attack kinds the detection missed on captures it had never seen, and the benign shapes it
blocked there, synthetic (tests/support/synthetic_traffic.py), replayed through the live logic with the
shipped model: each attack gets the right rule within 3 s of its first packet and loses at least
90% of its packets over 30 s; no benign shape loses a packet."""
from __future__ import annotations

import numpy as np
import pytest

from services.detection.model import load_model
from tests.support import synthetic_traffic as G
from services.offline.replay import replay
from services.records.rules import Action, Scope

T0 = 1_800_000_000 * 10**9 + 370_000_000  # windows do not line up with the traffic
S = 10**9


@pytest.fixture(scope="module")
def detector():
    return load_model()


def first_block_s(pk, dropped) -> float | None:
    d = np.flatnonzero(dropped)
    return (pk[d[0]].ts_ns - pk[0].ts_ns) / S if len(d) else None


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
KNOWN_BLOCKED = {
    "load balancer checking 12 backends of a /24, 10 refusing":
        (lambda: G.health_checks(T0, 60, down=10), lambda: G.health_checks(T0, 60, down=9)),
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
