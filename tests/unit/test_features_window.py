"""Window aggregates: incremental, mergeable, serialisable, and they see floods and scans."""
import json

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from services.detection import features as F
from services.records.packet import Packet

packets = st.builds(
    Packet, ts_ns=st.integers(1, 10**10), src=st.sampled_from(["10.0.0.1", "10.0.0.2", "fe80::1"]),
    dst=st.sampled_from(["10.0.0.9", "10.0.0.8"]), sport=st.integers(0, 65535),
    dport=st.integers(0, 65535), proto=st.sampled_from([1, 6, 17]), tcp_flags=st.integers(0, 63),
    length=st.integers(42, 1514))


def agg_of(pkts, update=F.src_update):
    agg = F.agg_new()
    for p in pkts:
        update(agg, p)
    return agg


@settings(max_examples=60, deadline=None)
@given(st.lists(packets, min_size=1, max_size=40), st.integers(0, 40))
def test_merging_two_halves_equals_one_pass(pkts, cut):
    a, b = pkts[:cut], pkts[cut:]
    whole = agg_of(pkts)
    assert F.agg_merge(agg_of(a), agg_of(b)) == whole
    if a and b:
        fa, fb = F.flow_new(a[0]), F.flow_new(b[0])
        for p in a:
            F.flow_update(fa, p)
        for p in b:
            F.flow_update(fb, p)
        fw = F.flow_new(pkts[0])
        for p in pkts:
            F.flow_update(fw, p)
        m = F.flow_merge(fa, fb)
        assert (m["packets"], m["bytes"], m["flags"], m["first"], m["last"]) == (
            fw["packets"], fw["bytes"], fw["flags"], fw["first"], fw["last"])


@settings(max_examples=40, deadline=None)
@given(st.lists(packets, min_size=1, max_size=30))
def test_state_survives_json_and_msgpack(pkts):
    w = F.WindowState(0)
    for p in pkts:
        w.add(p)
    d = w.to_dict()
    for codec in (lambda x: json.loads(json.dumps(x)),
                  lambda x: msgpack.unpackb(msgpack.packb(x), strict_map_key=False)):
        back = F.WindowState.from_dict(codec(d))
        assert back.rows()[1] == w.rows()[1]


@settings(max_examples=40, deadline=None)
@given(st.lists(packets, min_size=1, max_size=50))
def test_shares_are_shares_and_counts_bounded(pkts):
    f = dict(zip(F.SRC_FEATURES, F.agg_features(agg_of(pkts))))
    for k in ("src_syn_noack_share", "src_icmp_share", "src_udp_share"):
        assert 0.0 <= f[k] <= 1.0
    assert f["src_packets"] == len(pkts)
    assert 1 <= f["src_flows"] <= len({p.flow_key() for p in pkts}) * 1.05 + 1


def test_distinct_counts_are_exact_when_small_and_close_when_large():
    sk = F.sketch_new()
    for i in range(20):
        F.sketch_add(sk, f"10.0.0.{i}")
    assert round(F.sketch_count(sk)) == 20
    sk = F.sketch_new()
    for i in range(5000):
        F.sketch_add(sk, f"item{i}")
    assert abs(F.sketch_count(sk) - 5000) < 250   # linear counting: a few % at n ~ 1.2 m


def test_spoofed_syn_flood_shows_in_the_destination_aggregate():
    flood = [Packet(10**9 + i, f"203.0.{i // 250}.{i % 250}", "10.10.10.10", 1024 + i, 80, 6, 0x02, 60)
             for i in range(500)]
    f = dict(zip(F.DST_FEATURES, F.agg_features(agg_of(flood, F.dst_update))))
    assert f["dst_peers"] > 480 and f["dst_syn_noack_share"] == 1.0 and f["dst_pkts_per_flow"] < 1.1


def test_port_scan_shows_in_the_source_aggregate():
    scan = [Packet(10**9 + i, "10.0.0.66", "10.0.0.1", 55555, port, 6, 0x02, 58)
            for i, port in enumerate(range(1, 301))]
    f = dict(zip(F.SRC_FEATURES, F.agg_features(agg_of(scan))))
    assert f["src_ports"] > 285 and f["src_peers"] == 1 or round(f["src_peers"]) == 1
    assert f["src_syn_noack_share"] == 1.0


def test_window_rows_follow_feature_names():
    w = F.WindowState(0)
    w.add(Packet(5, "10.0.0.1", "10.0.0.2", 1, 2, 17, 0, 100))
    keys, rows = w.rows()
    assert keys == [("10.0.0.1", "10.0.0.2", 1, 2, 17)]
    assert len(rows[0]) == len(F.FEATURE_NAMES)
    assert F.window_start(2_500_000_000, 1_000_000_000) == 2_000_000_000


@settings(max_examples=40, deadline=None)
@given(st.lists(packets, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_rows_do_not_depend_on_arrival_order(pkts, rnd):
    """Partitions interleave packets arbitrarily in the scorer: features must not care."""
    a, b = F.WindowState(0), F.WindowState(0)
    shuffled = list(pkts)
    rnd.shuffle(shuffled)
    for p in pkts:
        a.add(p)
    for p in shuffled:
        b.add(p)
    ka, ra = a.rows()
    kb, rb = b.rows()
    assert dict(zip(ka, ra)) == dict(zip(kb, rb))
    hz = F.SourceHorizon(1, span=1)
    a.add_to(hz)
    for k in ka:  # the window row is the module-level row() of its states
        assert dict(zip(ka, ra))[k] == F.row(a.flows[k], a.srcs[k[0]], hz.features(0, k[0]),
                                             a.dsts[k[1]])


W = 1_000_000_000


def sweep_window(ws: int, hosts: range, src: str = "10.0.0.66") -> list:
    return [((src, f"10.9.{h // 250}.{h % 250}", 40000, 40125, 17), 1) for h in hosts]


def test_horizon_sees_a_slow_sweep_that_one_window_cannot():
    """Ten new hosts a second, one packet each: per window always 10 peers; over the
    horizon the peers add up while a busy client's stay few."""
    hz = F.SourceHorizon(W)
    client = [(("10.0.0.5", f"10.2.0.{i % 3}", 50000 + i, 443, 6), 40) for i in range(6)]
    for n in range(12):
        hz.add(n * W, sweep_window(n * W, range(10 * n, 10 * n + 10)) + client)
        peers, sparse = hz.features(n * W, "10.0.0.66")
        probed = 10 * min(n + 1, F.HORIZON_WINDOWS)
        assert abs(peers - probed) <= 1 + 0.1 * probed  # a sketch estimate (collisions)
        assert sparse == pytest.approx(peers * peers / probed)
        c_peers, c_sparse = hz.features(n * W, "10.0.0.5")
        assert round(c_peers) == 3 and c_sparse < 0.1
    assert len(hz.windows) == F.HORIZON_WINDOWS  # older windows dropped


def test_horizon_skips_gaps_and_keeps_one_peer_sources_small():
    hz = F.SourceHorizon(W, span=3)
    hz.add(0, [(("172.16.0.1", "10.0.0.1", 1, 80, 6), 1)])
    assert type(hz.windows[0]["172.16.0.1"][1]) is int  # a spoofed source: one int, no set
    hz.add(5 * W, [(("172.16.0.1", "10.0.0.2", 1, 80, 6), 2)])
    assert hz.features(5 * W, "172.16.0.1") == pytest.approx([1.0, 0.5], rel=1e-3)  # w0: gone
    assert list(hz.windows) == [5 * W]
    assert hz.features(5 * W, "10.1.1.1") == [0.0, 0.0]  # unknown source


def test_horizon_counts_a_window_added_twice_once():
    hz = F.SourceHorizon(W, span=3)
    hz.add(0, [(("10.0.0.66", "10.0.0.1", 1, 80, 17), 1)])
    hz.add(W, [(("10.0.0.66", "10.0.0.2", 1, 80, 17), 1)])
    hz.add(W, [(("10.0.0.66", "10.0.0.2", 1, 80, 17), 1)])
    assert hz.seen == {"10.0.0.66": 2}
    assert hz.features(W, "10.0.0.66") == pytest.approx([2.0, 2.0], rel=1e-3)
    for n in range(2, 6):
        hz.add(n * W, [])
    assert hz.seen == {} and len(hz.windows) == 3
