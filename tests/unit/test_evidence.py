"""Every evidence measure (services.detection.evidence) on a synthetic case: what it catches,
and the benign traffic of the same shape it must let through."""
from __future__ import annotations

import pytest

from services.detection import evidence as E
from services.detection.bounds import EvidenceBounds
from services.detection.features import WindowState
from services.records.packet import Packet

W = 10**9
T = 100 * W
ME = "10.0.0.5"


def tcp(t, s, d, sp, dp, fl, n=66):
    return Packet(T + t, s, d, sp, dp, 6, fl, n)


def udp(t, s, d, sp, dp, n=100):
    return Packet(T + t, s, d, sp, dp, 17, 0, n)


def assess(pkts, watch=None, start=T, previous=None, fates=None):
    w = WindowState(start)
    for p in pkts:
        w.add(p)
    return E.assess_window(w, start + W, previous, watch, fates)


def src(ev, addr, measure):
    return ev.src[addr][E.SRC_MEASURES.index(measure)]


def dst(ev, addr, measure):
    return ev.dst[addr][E.DST_MEASURES.index(measure)]


def handshake(t, client, server, sp, dp):
    return [tcp(t, client, server, sp, dp, 0x02), tcp(t + 1000, server, client, dp, sp, 0x12),
            tcp(t + 2000, client, server, sp, dp, 0x10), tcp(t + 3000, client, server, sp, dp, 0x18, 400)]


def test_half_open_counts_syns_never_acked_but_not_young_ones():
    flood = [tcp(i * 1000, "203.0.113.9", ME, 1024 + i, 80, 0x02) for i in range(50)]
    late = [tcp(W - 100_000_000 + i, "203.0.113.9", ME, 9000 + i, 80, 0x02) for i in range(10)]
    ev, _ = assess(flood + late)  # the last 10 came within GRACE of the window's end
    assert src(ev, "203.0.113.9", "half_open") == 50
    client = [p for i in range(50) for p in handshake(i * 10_000, ME, "93.184.216.34", 40000 + i, 443)]
    ev, _ = assess(client)
    assert src(ev, ME, "half_open") == 0


def test_tcp_probes_count_one_target_group_not_scattered_peers():
    scan = [tcp(i * 1000, "203.0.113.9", ME, 4444, port, 0x02) for port in range(1, 41) for i in (port,)]
    scan += [tcp(i * 1000 + 500, ME, "203.0.113.9", port, 4444, 0x14) for i, port in enumerate(range(1, 41))]
    ev, _ = assess(scan)
    assert src(ev, "203.0.113.9", "probe_tcp") == 40  # RST answers do not make it answered
    # a P2P node's attempts to dead peers: half-open, but one per host all over the Internet
    p2p = [tcp(i * 1000, ME, f"{20 + i}.{i}.1.1", 50000 + i, 6881, 0x02) for i in range(40)]
    ev, _ = assess(p2p)
    assert src(ev, ME, "probe_tcp") <= 1 and src(ev, ME, "half_open") == 1  # busiest host: 1


def test_udp_probes_weigh_by_what_nobody_answered():
    sweep = [udp(i * 1000, "203.0.113.9", f"10.1.2.{i}", 5000, 161) for i in range(1, 41)]
    ev, _ = assess(sweep)
    assert src(ev, "203.0.113.9", "probe_other") == 40
    # a DNS prober: many resolvers (here even one /24), each answers
    prober = [p for i in range(1, 41) for p in (udp(i * 1000, ME, f"9.9.9.{i}", 30000 + i, 53),
                                                udp(i * 1000 + 500, f"9.9.9.{i}", ME, 53, 30000 + i))]
    ev, _ = assess(prober)
    assert src(ev, ME, "probe_other") == 0


def test_udp_ports_of_one_host_count_half_and_hosts_of_one_net_count_whole():
    ports = [udp(i * 1000, "203.0.113.9", "10.1.2.3", 5000, 1000 + i) for i in range(40)]
    ev, _ = assess(ports)
    assert src(ev, "203.0.113.9", "probe_other") == 20  # media and NAT traversal fan out over ports
    hosts = [udp(i * 1000, "203.0.113.9", f"10.1.2.{i}", 5000, 161) for i in range(1, 41)]
    ev, _ = assess(hosts)
    assert src(ev, "203.0.113.9", "probe_other") == 40
    tcp_ports = [tcp(i * 1000, "203.0.113.9", "10.1.2.3", 5000, 1000 + i, 0x02) for i in range(40)]
    ev, _ = assess(tcp_ports)
    assert src(ev, "203.0.113.9", "probe_tcp") == 40  # a TCP port scan counts whole


def test_a_syn_in_the_grace_period_is_judged_when_the_next_window_closes():
    """SYNs in the window's last 250 ms: unsettled there; with no packet of their flow in the next
    window they count there as half-open probes, while one whose handshake went on does not."""
    watch = E.SourceWatch(W)
    late = [tcp(W - 100_000_000 + i, "203.0.113.9", "10.1.2.3", 5000 + i, 20 + i, 0x02) for i in range(4)]
    ev, prev = assess(late, watch)
    assert src(ev, "203.0.113.9", "probe_tcp") == 0  # not settled yet
    done = [tcp(W + 5_000_000, "203.0.113.9", "10.1.2.3", 5003, 23, 0x10)]  # the 4th one's ACK
    ev, _ = assess(done, watch, T + W, prev)
    assert src(ev, "203.0.113.9", "probe_tcp") == 3 and src(ev, "203.0.113.9", "half_open") == 3


def test_a_lone_unsettled_syn_of_a_new_source_is_not_kept():
    """A spoofed flood's sources send one SYN each: nothing to carry for them (memory)."""
    watch = E.SourceWatch(W)
    flood = [tcp(W - 100_000_000 + i, f"198.18.{i // 250}.{i % 250}", ME, 1000 + i, 80, 0x02) for i in range(500)]
    assess(flood, watch)
    assert watch.pending == {}
    scan = [tcp(2 * W - 100_000_000 + i, "203.0.113.9", ME, 5000, 20 + i, 0x02) for i in range(3)]
    assess(scan, watch, T + W)
    assert len(watch.pending[T + W]) == 3


def test_a_login_syn_in_the_grace_period_counts_as_a_login_session():
    """A guesser far away: the SYN of every fourth session falls in a window's last 250 ms and
    its handshake ends in the next window; it is a login session all the same (as it was
    before unsettled SYNs were carried), whether the source is new or not: counted in the
    window its handshake completes (a SYN alone is no session: wt-benign2, an app pool
    retrying a database that is down), so the window after, which sums the last 3."""
    watch = E.SourceWatch(W)
    pk = [p for i in range(2) for p in handshake(i * 10_000, "203.0.113.9", ME, 30000 + i, 22)]
    pk += [tcp(W - 100_000_000, "203.0.113.9", ME, 30002, 22, 0x02)]
    pk += [tcp(W - 50_000_000, "203.0.113.10", ME, 31000, 22, 0x02)]  # a new source's first SYN
    ev, prev = assess(pk, watch)
    assert src(ev, "203.0.113.9", "login") == 2 and src(ev, "203.0.113.10", "login") == 0
    assert [k[0] for k in watch.pending[T]] == ["203.0.113.9"]  # a lone SYN is not carried
    acks = [tcp(W + 10_000_000, "203.0.113.9", ME, 30002, 22, 0x10),
            tcp(W + 10_000_000, "203.0.113.10", ME, 31000, 22, 0x10)]
    ev, _ = assess(acks, watch, T + W, prev)
    assert src(ev, "203.0.113.9", "login") == 3 and src(ev, "203.0.113.10", "login") == 1
    assert src(ev, "203.0.113.9", "probe_tcp") == 0  # their handshakes went on


def test_probes_add_up_over_the_horizon():
    watch = E.SourceWatch(W)
    prev = None
    for k in range(4):
        pk = [Packet(T + k * W + i * 1000, "203.0.113.9", f"10.1.2.{k * 10 + i}", 5000, 53, 17, 0, 60)
              for i in range(10)]
        ev, prev = assess(pk, watch, T + k * W, prev)
    assert src(ev, "203.0.113.9", "probe_other") == 40  # ten a second, one /24, one port


def test_retries_to_one_dead_device_are_held_to_the_horizons_unanswered_share():
    """An SNMP station: 20 devices of one /24 polled (19 answer), then 5 windows of retries to
    the dead one. The group is 20 over the horizon and every probe of a retry window is
    unanswered; decisions read probe_other weighted by the horizon's share of distinct targets
    nobody answered (1 of 20), the model still sees the window's. A sweep is not held."""
    watch, fates = E.SourceWatch(W), E.ProbeFates(W)
    poll = [p for j in range(1, 21) for p in
            ([udp(j * 1000, ME, f"10.1.2.{j}", 50161, 161)] +
             ([udp(j * 1000 + 500, f"10.1.2.{j}", ME, 161, 50161)] if j > 1 else []))]
    ev, prev = assess(poll, watch, T, None, fates)
    assert ev.held == {} and src(ev, ME, "probe_other") == 1  # 1 of 20 unanswered: 20 / 20
    for k in range(1, 6):
        retry = [Packet(T + k * W + 1000, ME, "10.1.2.1", 50161, 161, 17, 0, 90)]
        ev, prev = assess(retry, watch, T + k * W, prev, fates)
        assert src(ev, ME, "probe_other") == 20  # the window's share: 1 of 1
        assert ev.held[ME] == 1 and ev.src_for_decision(ME)[E.SRC_MEASURES.index("probe_other")] == 1
    sweep_watch, sweep_fates, prev = E.SourceWatch(W), E.ProbeFates(W), None
    for k in range(4):
        pk = [Packet(T + k * W + i * 1000, "203.0.113.9", f"10.1.2.{k * 10 + i}", 5000, 161, 17, 0, 60)
              for i in range(10)]
        ev, prev = assess(pk, sweep_watch, T + k * W, prev, sweep_fates)
    assert src(ev, "203.0.113.9", "probe_other") == 40 and ev.held == {}
    assert sweep_fates.unanswered_share("203.0.113.9") == 1.0


def test_probe_fates_keep_only_group_candidates_and_the_span():
    """A spoofed flood's one-probe sources are not kept; windows older than the span go."""
    fates = E.ProbeFates(W, span=3)
    flood = [udp(i * 1000, f"198.18.{i // 250}.{i % 250}", ME, 1000 + i, 53) for i in range(500)]
    assess(flood, None, T, None, fates)
    assert fates.seen == {}
    fates.add(T + W, {"a": {("d", 17, 1): True}})
    fates.add(T + 4 * W, {"a": {("d", 17, 1): False}})
    assert list(fates.windows) == [T + 4 * W] and fates.unanswered_share("a") == 0.0
    assert fates.unanswered_share("b") is None


def test_probe_fates_merge_answered_anywhere_in_a_window_and_over_the_horizon():
    """One rule joins fates: the parts of a window (stage 2 partitions) and the horizon's
    windows. A target answered in any of them is answered; unanswered only if every copy says
    so; targets seen in one copy only keep their fate."""
    into = {("d1", 17, 161): True, ("d2", 17, 161): True, ("d3", 17, 161): False}
    E.merge_fates(into, {("d1", 17, 161): False, ("d2", 17, 161): True, ("d4", 17, 161): True})
    assert into == {("d1", 17, 161): False, ("d2", 17, 161): True, ("d3", 17, 161): False,
                    ("d4", 17, 161): True}
    fates = E.ProbeFates(W, span=3)
    fates.add_tally(T, {"a": [2, 2, {("d1", 17, 161): True, ("d2", 17, 161): True}]})
    fates.add_tally(T, {"a": [1, 0, {("d1", 17, 161): False}]})  # another partition's part
    assert fates.unanswered_share("a") == 0.5
    fates.add_tally(T + W, {"a": [1, 0, {("d2", 17, 161): False}]})  # answered a window later
    assert fates.unanswered_share("a") == 0.0 and fates.seen == {"a": 2}
    tally = E.merge_tallies([{"a": [2, 2, {("d1", 17, 161): True, ("d2", 17, 161): True}]},
                             {"a": [1, 0, {("d1", 17, 161): False}]}])
    assert tally == {"a": [3, 2, {("d1", 17, 161): False, ("d2", 17, 161): True}]}


def test_login_sessions_to_one_service_over_three_windows_and_web_ports_do_not_count():
    watch = E.SourceWatch(W)
    for k in range(3):
        pk = [p for i in range(4) for p in handshake(i * 10_000, "203.0.113.9", ME, 30000 + 10 * k + i, 21)]
        pk += [p for i in range(10) for p in handshake(i * 10_000, "10.0.0.11", ME, 40000 + 10 * k + i, 80)]
        moved = [Packet(p.ts_ns + k * W, p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_flags,
                        p.length) for p in pk]
        ev, _ = assess(moved, watch, T + k * W)
    assert src(ev, "203.0.113.9", "login") == 12
    assert src(ev, "10.0.0.11", "login") == 0


def test_volume_counts_what_nobody_answered():
    flood = [udp(i * 10_000, "203.0.113.9", ME, 5000, 9, 1400) for i in range(3000)]
    ev, _ = assess(flood)
    assert src(ev, "203.0.113.9", "packets") == 3000 and dst(ev, ME, "packets") == 3000
    download = [p for i in range(3000) for p in (tcp(i * 10_000, "93.184.216.34", ME, 443, 50000, 0x10, 1514),
                                                 tcp(i * 10_000 + 5, ME, "93.184.216.34", 50000, 443, 0x10))]
    ev, _ = assess(download)
    assert src(ev, "93.184.216.34", "packets") == 0 and dst(ev, ME, "packets") == 0


def test_half_open_sources_towards_one_destination():
    spoofed = [tcp(i * 1000, f"198.51.{i // 200}.{i % 200}", ME, 1024 + i, 80, 0xC2) for i in range(30)]
    ev, _ = assess(spoofed)  # SYN with ECE+CWR is a SYN too
    assert dst(ev, ME, "half_open_srcs") == 30
    clients = [p for i in range(30) for p in handshake(i * 10_000, f"198.51.0.{i}", ME, 40000 + i, 80)]
    ev, _ = assess(clients)
    assert dst(ev, ME, "half_open_srcs") == 0


def test_synacks_and_rsts_count_only_when_nobody_asked():
    refl = [tcp(i * 1000, f"198.51.0.{i}", ME, 443, 20000 + i, 0x12) for i in range(20)]
    rst = [tcp(i * 1000, f"198.51.1.{i}", ME, 80, 30000 + i, 0x04) for i in range(20)]
    ev, _ = assess(refl + rst)
    assert dst(ev, ME, "synack_srcs") == 20 and dst(ev, ME, "rst_srcs") == 20
    # the same answers to this host's own SYNs (a browser) and a reset of its own connection
    own = [p for i in range(20) for p in (tcp(i * 1000 - 500, ME, f"198.51.0.{i}", 20000 + i, 443, 0x02),
                                          refl[i])]
    own += [p for i in range(20) for p in (tcp(i * 1000 - 500, ME, f"198.51.1.{i}", 30000 + i, 80, 0x18),
                                           rst[i])]
    ev, _ = assess(own)
    assert dst(ev, ME, "synack_srcs") == 0 and dst(ev, ME, "rst_srcs") == 0


def test_a_reset_of_an_unasked_synack_is_no_answer_but_a_clients_own_reset_is():
    """A live victim of SYN-ACK reflection resets every SYN-ACK it did not ask for; those
    resets answer no SYN-ACK (answers.refuses). A client that cancels its own connection (SYN,
    SYN-ACK, RST: a happy-eyeballs loser) did ask: its flow carries a SYN. A reset still
    answers anything else: a restarting server resetting its keep-alive clients."""
    refl = [tcp(i * 1000, f"198.51.0.{i}", ME, 80, 20000 + i, 0x12) for i in range(20)]
    resets = [tcp(i * 1000 + 50, ME, f"198.51.0.{i}", 20000 + i, 80, 0x04) for i in range(20)]
    ev, _ = assess(refl + resets)
    assert dst(ev, ME, "synack_srcs") == 20
    assert all(ev.marks[p.flow_key()] & E.SYNACK for p in refl)
    clients = [tcp(i * 1000, f"198.51.2.{i}", ME, 40000 + i, 80, 0x18, 300) for i in range(30)]
    resets = [tcp(i * 1000 + 50, ME, f"198.51.2.{i}", 80, 40000 + i, 0x04) for i in range(30)]
    ev, _ = assess(clients + resets)
    assert dst(ev, ME, "unsolicited_srcs") == 0 and dst(ev, ME, "synack_srcs") == 0
    assert all(ev.marks[p.flow_key()] & E.ANSWERED for p in clients)
    cancelled = [p for i in range(20) for p in (tcp(i * 1000 - 500, ME, f"198.51.0.{i}", 20000 + i, 80, 0x02),
                                                refl[i], tcp(i * 1000 + 50, ME, f"198.51.0.{i}", 20000 + i, 80, 0x04))]
    ev, _ = assess(cancelled)
    assert dst(ev, ME, "synack_srcs") == 0
    # a reset with data or FIN in the same flow is a closed connection's end, not a refusal
    from services.detection.answers import refuses
    assert refuses(("a", "b", 1, 2, 6), 1, 0x04) and refuses(("a", "b", 1, 2, 6), 2, 0x14)
    assert not refuses(("a", "b", 1, 2, 6), 3, 0x04) and not refuses(("a", "b", 1, 2, 6), 2, 0x1C)
    assert not refuses(("a", "b", 1, 2, 6), 1, 0x06) and not refuses(("a", "b", 1, 2, 17), 1, 0x04)


def test_a_dhcp_servers_offers_to_new_clients_are_no_sweep():
    """A DHCP server offers each new client its address (UDP 67 -> 68, unicast); the client
    answers by broadcast from 0.0.0.0, never from the offered address: 30 offers of one /24
    are no probes, while 30 datagrams to port 68 from another port still are."""
    srv = "10.0.0.1"
    offers = [udp(i * 10_000_000, srv, f"10.0.0.{100 + i}", 67, 68, 300) for i in range(30)]
    requests = [udp(i * 10_000_000 + 1000, "0.0.0.0", "255.255.255.255", 68, 67, 300) for i in range(30)]
    ev, _ = assess(offers + requests)
    assert src(ev, srv, "probe_other") == 0
    sweep = [udp(i * 10_000_000, srv, f"10.0.0.{100 + i}", 5000, 68, 300) for i in range(30)]
    ev, _ = assess(sweep)
    assert src(ev, srv, "probe_other") == 30


def test_reflector_answers_unless_solicited_even_by_multicast():
    amp = [udp(i * 1000, f"198.51.0.{i}", ME, 123, 8080, 468) for i in range(20)]
    ev, _ = assess(amp)
    assert dst(ev, ME, "reflector_srcs") == 20
    # SSDP discovery: one M-SEARCH to the multicast group, twenty devices answer it
    ssdp = [udp(0, ME, "239.255.255.250", 51000, 1900, 200)]
    ssdp += [udp(1000 + i, f"192.168.1.{i + 10}", ME, 1900, 51000, 300) for i in range(20)]
    ev, _ = assess(ssdp)
    assert dst(ev, ME, "reflector_srcs") == 0


@pytest.mark.parametrize("group, port", [("224.0.0.251", 5353), ("239.255.255.250", 1900),
                                         ("ff02::fb", 5353), ("192.168.1.255", 137)])
def test_devices_announcing_to_a_group_are_no_reflected_answers(group, port):
    """mDNS answers and announcements go from 5353 to 224.0.0.251:5353 (ff02::fb), SSDP
    NOTIFYs from 1900 to 239.255.255.250:1900, NetBIOS name service to the subnet's broadcast:
    30 devices of a LAN doing so in one window are discovery, not amplification (a reflector
    answers a query's source address, a unicast victim). A limit on 224.0.0.251 udp/5353 had cut
    a real mDNS/SSDP capture's discovery (1.10% of its packets)."""
    v6 = ":" in group
    devices = [f"fe80::{i + 10:x}" if v6 else f"192.168.1.{i + 10}" for i in range(30)]
    ann = [udp(i * 1000, d, group, port, port, 300) for i, d in enumerate(devices)]
    ev, _ = assess(ann)
    assert dst(ev, group, "reflector_srcs") == 0
    # the same answers sent to one host's unicast address that asked nothing are still counted
    ev, _ = assess([udp(i * 1000, d, ME if not v6 else "2001:db8::5", port, 40000, 300)
                    for i, d in enumerate(devices)])
    assert dst(ev, ME if not v6 else "2001:db8::5", "reflector_srcs") == 30


def test_fragments_dhcp_and_unsolicited_sources():
    frags = [udp(i * 1000, f"198.51.0.{i % 50}", ME, 0, 0, 1514) for i in range(100)]
    ev, _ = assess(frags)
    assert dst(ev, ME, "fragments") == 100
    dhcp = [udp(i * 1000, "0.0.0.0", "255.255.255.255", 68, 67, 342) for i in range(40)]
    ev, _ = assess(dhcp)
    assert dst(ev, "255.255.255.255", "dhcp") == 40
    call = [p for i in range(50) for p in (udp(i * 20_000_000, ME, "198.51.100.20", 16384, 30000, 200),
                                           udp(i * 20_000_000 + 5, "198.51.100.20", ME, 30000, 16384, 200))]
    ev, _ = assess(call)
    assert dst(ev, ME, "unsolicited_srcs") == 0 and dst(ev, "198.51.100.20", "unsolicited_srcs") == 0


@pytest.mark.parametrize("scope,measure", [(s, m) for s, ms in (("src", E.SRC_MEASURES),
                                                                 ("dst", E.DST_MEASURES)) for m in ms])
def test_bounds_are_the_benign_maximum_times_the_margin_never_below_the_floor(scope, measure):
    b = EvidenceBounds.calibrate({scope: {measure: 1000.0}})
    assert b.bounds[scope][measure] == 2000.0
    floor = EvidenceBounds.default().bounds[scope][measure]
    assert EvidenceBounds.calibrate({scope: {measure: 1.0}}).bounds[scope][measure] == floor > 0
    assert EvidenceBounds.from_dict(b.to_dict()) == b
