"""Split by file into fixed folds, and attacks stretched in time (services.offline.folds)."""
from __future__ import annotations

from services.offline.folds import assign_folds, group_of, rate_pps, sustain, sustained
from services.offline.training import LabelledCapture as Capture
from services.records.packet import Packet


def cap(name, label="benign", n=5, gap=10**8):
    return Capture(name, label, "k", [Packet(10**9 + i * gap, "a", "b", 1, 2, 6, 2, 60) for i in range(n)])


def test_groups_join_one_capture_in_two_formats():
    assert group_of("x/y/synscan.pcap") == group_of("z/synscan.pcapng") == "synscan"
    assert group_of("amp.UDP.snmp.src161.pcapng") == "amp.udp.snmp.src161"


def test_folds_are_fixed_stratified_and_never_split_a_group():
    caps = [cap(f"b{i}.pcap") for i in range(20)] + [cap(f"a{i}.pcap", "attack") for i in range(5)]
    caps += [cap("d/a0.pcapng", "attack")]
    f = assign_folds(caps, 5)
    assert f == assign_folds(list(reversed(caps)), 5)          # order of the manifests: no matter
    assert f["a0.pcap"] == f["d/a0.pcapng"]                      # one group, one fold
    assert sorted(sum(1 for c in caps[:20] if f[c.name] == k) for k in range(5)) == [4] * 5
    assert len({f[f"a{i}.pcap"] for i in range(5)}) == 5         # attacks dealt round robin too


def test_sustained_repeats_back_to_back_until_the_span():
    c = cap("s.pcap", "attack", n=5)                              # 0.4 s, 10 packets/s
    got = list(sustained(c.packets, 2.0))
    assert len(got) == 20 and got[5].ts_ns - got[0].ts_ns == 5 * 10**8
    assert all(b.ts_ns > a.ts_ns for a, b in zip(got, got[1:]))
    assert abs(rate_pps(sustain(c, 2.0)) - 10) < 0.6
    long = cap("l.pcap", "attack", n=50)                          # 4.9 s: kept whole
    assert list(sustained(long.packets, 2.0)) == long.packets
