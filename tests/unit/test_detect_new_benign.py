"""Benign shapes found blocked by the shipped model on NEW benign captures made with real tools
in network namespaces (wt-benign, 2026-11-30: 16 captures, /tmp/benign-new/gen.sh), each
reproduced synthetically (tests/support/synthetic_traffic.py) and replayed with the shipped
model (all of them blocked on 1a7e785), and the attacks that must still be caught by the rules
that let them through: evidence.py's reflector_srcs never counts a group destination, and a
reply from a reflector port to a port pair its destination sent from (SOLICITED) counts as
answered within bounds (SOLICITED_PACKETS, SOLICITED_SOURCES, SOLICIT_WINDOWS)."""
from __future__ import annotations

import random

import pytest

from services.offline.replay import replay
from services.detection import evidence as E
from services.records.packet import Packet
from tests.support import synthetic_traffic as G
from tests.support.replay_checks import reasons_and_drops

pytestmark = pytest.mark.unit

T0 = 1_800_000_000 * 10**9 + 370_000_000
S = 10**9


@pytest.mark.parametrize("devices", [10, 16, 40, 120])
def test_mdns_browsing_on_a_lan_loses_nothing(detector, devices):
    """discovery.pcap (wt-benign): a client browsing (_googlecast/_airplay PTR queries every 2 s)
    and 20 devices answering, to the group 224.0.0.251:5353 and (QU) to the querier's 5353: on
    1a7e785 the group was limited (15 sources of "unsolicited reflector-port answers", bound
    12), then the querier (13 sources of unicast QU answers): 14 of 1,273 packets dropped in
    the evaluation. This synthetic LAN: 16 responders, 161 of 510 dropped on 1a7e785."""
    assert reasons_and_drops(G.mdns_discovery(T0, 60, devices=devices), detector) == ([], 0)


@pytest.mark.parametrize("devices, mx", [(12, 3), (20, 3), (30, 1), (40, 1), (60, 5), (200, 2)])
def test_ssdp_searching_a_lan_of_upnp_devices_loses_nothing(detector, devices, mx):
    """ssdp40.pcap / ssdpmx3.pcap (wt-benign, one SSDP socket, M-SEARCH twice every 3 s, each
    device answering by unicast from 1900 within MX seconds): on 1a7e785 the searcher's port
    was limited ("34 sources nobody answered (bound 24)" with 40 devices, MX 1; "15 sources of
    unsolicited reflector-port answers (bound 12)" with 20 devices, MX 3: answers more than one
    window after the M-SEARCH), 701 of 1,840 and 202 of 949 packets dropped."""
    assert reasons_and_drops(G.ssdp_search(T0, 60, devices=devices, mx=mx), detector) == ([], 0)


def _amplification(victim, sport, reflectors, per_reflector, seconds=30, seed=5):
    """Answers from `reflectors` public hosts' `sport` to the victim's `sport`, each reflector
    sending `per_reflector` 1,200-byte datagrams a second."""
    rnd, pk = random.Random(seed), []
    refl = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(reflectors)]
    for t in range(int(seconds * per_reflector)):
        for r in refl:
            pk.append(Packet(T0 + int((t + rnd.random()) * S / per_reflector), r, victim, sport,
                             sport, 17, 0, 1200))
    return pk


@pytest.mark.parametrize("reflectors, per_reflector", [(400, 2), (40, 60)])
def test_an_amplification_at_a_host_that_asks_from_the_same_port_is_still_blocked(
        detector, reflectors, per_reflector):
    """The victim browses with mDNS (its queries go from 5353 to the group, so every answer to
    its 5353 looks solicited) while answers from 5353 of many reflectors, or many answers from
    a few, arrive: more sources than a LAN has (SOLICITED_SOURCES) or more packets a reflector
    than a device sends (SOLICITED_PACKETS) are not taken as solicited, and the host's port is
    limited within 3 s, the bulk dropped."""
    victim = "10.0.0.20"
    amp = _amplification(victim, 5353, reflectors, per_reflector)
    pk = sorted(G.mdns_discovery(T0, 30, querier=victim, devices=5) + amp, key=lambda p: p.ts_ns)
    res = replay(pk, detector)
    attack = [p.src.startswith("198.51.") for p in pk]
    assert res.first_rule_ns is not None and res.first_rule_ns - T0 <= 3 * S
    dropped = sum(d for d, a in zip(res.dropped.tolist(), attack) if a) / sum(attack)
    assert dropped >= 0.85, f"{dropped:.2%}"


def test_a_solicited_reply_counts_as_answered_within_its_bounds():
    """The marks themselves: a reply from 1900 to the port an M-SEARCH went from (to the group)
    is ANSWERED | SOLICITED up to 5 windows later, not UNANSWERED or REFLECTED; with more
    packets than SOLICITED_PACKETS, or from more sources than SOLICITED_SOURCES, it is."""
    from services.detection.features import WindowState

    def window(pkts, start, previous=None):
        w = WindowState(start)
        for p in pkts:
            w.add(p)
        return E.assess_window(w, start + S, previous)

    ask = Packet(T0, "10.0.0.21", "239.255.255.250", 50000, 1900, 17, 0, 170)
    ev, answers = window([ask], T0)
    for k in range(1, 5):  # nothing sent since: the request still solicits 5 windows later
        ev, answers = window([], T0 + k * S, answers)
    reply = Packet(T0 + 5 * S + 100, "10.0.6.1", "10.0.0.21", 1900, 50000, 17, 0, 320)
    ev, _ = window([reply], T0 + 5 * S, answers)
    m = ev.marks[reply.flow_key()]
    assert m & E.ANSWERED and m & E.SOLICITED and not m & (E.UNANSWERED | E.REFLECTED)
    ev, answers = window([ask], T0)
    late = Packet(T0 + 7 * S, "10.0.6.1", "10.0.0.21", 1900, 50000, 17, 0, 320)
    for k in range(1, 7):
        ev, answers = window([], T0 + k * S, answers)
    ev, _ = window([late], T0 + 7 * S, answers)  # 7 windows later: unsolicited
    assert ev.marks[late.flow_key()] & E.REFLECTED
    ev, answers = window([ask], T0)
    burst = [Packet(T0 + S + i, "10.0.6.1", "10.0.0.21", 1900, 50000, 17, 0, 320)
             for i in range(E.SOLICITED_PACKETS + 1)]
    ev, _ = window(burst, T0 + S, answers)
    assert ev.marks[burst[0].flow_key()] & E.REFLECTED
    crowd = [Packet(T0 + S + i, f"10.0.{6 + i // 250}.{i % 250 + 1}", "10.0.0.21", 1900, 50000,
                    17, 0, 320) for i in range(E.SOLICITED_SOURCES + 1)]
    ev, answers2 = window([ask], T0)
    ev, _ = window(crowd, T0 + S, answers2)
    assert all(ev.marks[p.flow_key()] & E.REFLECTED for p in crowd)
    ev, _ = window(crowd[:E.SOLICITED_SOURCES], T0 + S, answers2)
    assert not any(ev.marks[p.flow_key()] & E.REFLECTED for p in crowd[:E.SOLICITED_SOURCES])


def test_netbios_name_broadcasts_of_a_lan_lose_nothing(detector):
    """24 Windows hosts of a /24 registering and querying names by broadcast (NetBIOS name
    service, 137 -> x.x.x.255:137, every 2 s each): on 1a7e785 the broadcast address got a
    limit for reflector sources (a synthetic case of wt-benign: 212 of 704 dropped)."""
    rnd, pk = random.Random(3), []
    for k in range(30):
        for h in range(1, 25):
            pk.append(Packet(T0 + k * 2 * S + rnd.randrange(0, 2 * S), f"192.168.7.{h}",
                             "192.168.7.255", 137, 137, 17, 0, 92))
    pk.sort(key=lambda p: p.ts_ns)
    assert reasons_and_drops(pk, detector) == ([], 0)
