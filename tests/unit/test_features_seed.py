"""The original tool's 22 features: order, definitions (docs/origins.md) and parity with its own
output."""
import json
import math

import pytest

from services.detection import features as F
from services.records.packet import Packet
from services.offline.seedlog import read_log


def pkt(ts=1_000_000_000, src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=80, proto=6,
        flags=0x02, length=60, rate=1):
    return Packet(ts, src, dst, sport, dport, proto, flags, length, sample_rate=rate)


def flow_of(*packets):
    st = F.flow_new(packets[0])
    for p in packets:
        F.flow_update(st, p)
    return st


def test_feature_names_are_the_seeds_22_in_order():
    assert F.SEED_FEATURES == (
        "duration", "packets", "bytes", "bps", "pps", "log_bytes", "log_packets", "tcp", "udp",
        "icmp", "fin", "syn", "rst", "psh", "ack", "urg", "src_port", "src_low", "src_high",
        "dst_port", "dst_low", "dst_high")
    assert F.FEATURE_NAMES[:22] == F.SEED_FEATURES
    assert F.SRC_FEATURES == F.SRC_AGG_FEATURES + F.HORIZON_FEATURES + F.SRC_EVIDENCE_FEATURES
    assert [n[4:] for n in F.SRC_AGG_FEATURES] == [n[4:] for n in F.DST_FEATURES]
    assert F.FEATURE_NAMES == (F.SEED_FEATURES + F.SRC_FEATURES + F.DST_FEATURES
                               + F.DST_EVIDENCE_FEATURES)
    assert len(F.FEATURE_NAMES) == len(set(F.FEATURE_NAMES))


def test_one_packet_flow_gets_the_seeds_one_millisecond_duration():
    f = dict(zip(F.SEED_FEATURES, F.flow_features(flow_of(pkt(length=60)))))
    assert f["duration"] == 0.001 and f["packets"] == 1 and f["bytes"] == 60
    assert f["bps"] == 60.0           # bytes per packet, as the original tool trained
    assert f["pps"] == 1000.0         # packets / max(duration, 1e-3)
    assert f["log_bytes"] == math.log1p(60) and f["log_packets"] == math.log1p(1)
    assert (f["tcp"], f["udp"], f["icmp"], f["syn"], f["ack"]) == (1, 0, 0, 1, 0)
    assert (f["src_port"], f["src_low"], f["src_high"]) == (40000, 0, 0)
    assert (f["dst_port"], f["dst_low"], f["dst_high"]) == (80, 1, 0)


def test_multi_packet_flow_rates_and_or_of_flags():
    st = flow_of(pkt(ts=0 + 10**9, flags=0x02, length=100), pkt(ts=3 * 10**9, flags=0x11, length=50),
                 pkt(ts=2 * 10**9, flags=0x18, length=50))
    f = dict(zip(F.SEED_FEATURES, F.flow_features(st)))
    assert f["duration"] == 2.0 and f["bps"] == 200 / 3 and f["pps"] == 1.5
    assert (f["fin"], f["syn"], f["psh"], f["ack"], f["rst"], f["urg"]) == (1, 1, 1, 1, 0, 0)


def test_flags_count_only_for_tcp_and_port_ranges_are_strict():
    f = dict(zip(F.SEED_FEATURES, F.flow_features(flow_of(pkt(proto=17, flags=0x3F, sport=1024,
                                                                  dport=49151)))))
    assert (f["fin"], f["syn"], f["ack"], f["udp"]) == (0, 0, 0, 1)
    assert (f["src_low"], f["dst_high"]) == (0, 0)
    f = dict(zip(F.SEED_FEATURES, F.flow_features(flow_of(pkt(sport=1023, dport=49152)))))
    assert (f["src_low"], f["dst_high"]) == (1, 1)


def test_sampled_packet_counts_as_its_sample_rate():
    f = dict(zip(F.SEED_FEATURES, F.flow_features(flow_of(pkt(rate=10, length=100)))))
    assert f["packets"] == 10 and f["bytes"] == 1000


def test_seed_capture_flows_match_the_seeds_commands_file(shared_dir):
    log = read_log(shared_dir / "data/seed-capture/firewall_log.json")
    assert len(log.packets) == 681
    flows: dict = {}
    for p in log.packets:
        flows.setdefault(p.flow_key(), F.flow_new(p))
        F.flow_update(flows[p.flow_key()], p)
    ref = json.loads((shared_dir / "data/seed-capture/ml_firewall_commands.json").read_text())
    assert len(flows) == len(ref) == 29
    for (key, st), entry in zip(flows.items(), ref):
        assert (key[0], key[1], str(key[2]), str(key[3])) == tuple(
            entry["fields"][k] for k in ("src", "dst", "sport", "dport"))
        assert F.seed_display_features(st) == entry["features"]  # bit-exact, floats included
