"""pcap/pcapng reading: link types, Ethernet-equivalent lengths, counts of the real captures."""
import csv
import ipaddress
import struct

from services.offline.pcap import LINK_ETHERNET, LINK_SLL, LINK_SLL2, parse_frame, read_pcap

IP = bytes.fromhex("4500003c1c4640004006b1e6c0a80001c0a800c7")  # 192.168.0.1 -> 192.168.0.199, TCP
TCP = struct.pack("!HHIIBBHHH", 40000, 80, 0, 0, 0x50, 0x02, 1024, 0, 0) + b"\0" * 20


def test_ethernet_vlan_sll_and_sll2_give_the_same_packet():
    eth = b"\0" * 12 + b"\x08\x00" + IP + TCP
    vlan = b"\0" * 12 + b"\x81\x00\x00\x05\x08\x00" + IP + TCP
    sll = b"\0" * 14 + b"\x08\x00" + IP + TCP
    sll2 = b"\x08\x00" + b"\0" * 18 + IP + TCP
    a = parse_frame(LINK_ETHERNET, eth, len(eth), 7)
    assert (a.src, a.dst, a.sport, a.dport, a.proto, a.tcp_flags, a.length) == (
        "192.168.0.1", "192.168.0.199", 40000, 80, 6, 0x02, len(eth))
    assert parse_frame(LINK_ETHERNET, vlan, len(vlan), 7).sport == 40000
    for link, frame in ((LINK_SLL, sll), (LINK_SLL2, sll2)):
        p = parse_frame(link, frame, len(frame), 7)
        assert p == a  # Ethernet-equivalent length


def test_non_ip_frames_are_skipped():
    arp = b"\0" * 12 + b"\x08\x06" + b"\0" * 28
    assert parse_frame(LINK_ETHERNET, arp, len(arp), 0) is None


def test_real_captures_read_with_manifest_counts(shared_dir):
    base = shared_dir / "data/pcaps"
    rows = {r["file"]: r for r in csv.DictReader(open(base / "manifest.csv"))}
    for name in ("chrissanders+packets/synscan.pcapng", "lucaderi+sgr/2022/Favilli/tests/hs-icmpScan.pcap",
                 "chrissanders+packets/http_espn.pcapng"):
        pk = read_pcap(base / name)
        assert len(pk) == int(rows[name]["packets"])
        assert len({p.flow_key() for p in pk}) == int(rows[name]["flows5"])
        span = (max(p.ts_ns for p in pk) - min(p.ts_ns for p in pk)) / 1e9
        assert abs(span - float(rows[name]["duration_s"])) < 0.01


def test_sll_pcap_and_pcapng_files_read_end_to_end(tmp_path):
    from scapy.utils import PcapNgWriter, RawPcapWriter

    sll = b"\0" * 14 + b"\x08\x00" + IP + TCP
    path = tmp_path / "sll.pcap"
    w = RawPcapWriter(str(path), linktype=LINK_SLL)
    w.write_header(None)
    w.write_packet(sll, sec=1700000000, usec=250000)
    w.close()
    (p,) = read_pcap(path)
    assert p.ts_ns == 1_700_000_000_250_000_000 and p.length == len(sll) - 2 and p.dport == 80

    from scapy.layers.l2 import Ether
    from scapy.layers.inet import IP as ScapyIP, UDP
    ng = tmp_path / "eth.pcapng"
    w = PcapNgWriter(str(ng))
    frame = Ether() / ScapyIP(src="10.1.1.1", dst="10.2.2.2") / UDP(sport=53, dport=5353)
    frame.time = 1700000001.5
    w.write(frame)
    w.close()
    (q,) = read_pcap(ng)
    assert (q.src, q.dst, q.sport, q.dport, q.proto) == ("10.1.1.1", "10.2.2.2", 53, 5353, 17)
    assert q.ts_ns == 1_700_000_001_500_000_000 and q.length == len(frame)


def test_frames_are_read_as_the_data_plane_parses_them():
    """parse_frame against the data plane's reference parser (tests/support/xdpfuzz.py, which
    the kernel fuzz tests hold the XDP program to: 0 disagreements) on the fuzz generator's
    frames: well-formed, cut, mutated, VLAN-tagged, with IPv4 options, IPv6 chains of up to ten
    headers (AH too) and fragments of every kind. A Packet exactly where the program samples an
    event, with the event's fields; None where it passes or drops the frame unsampled."""
    from services.dataplane.structs import XG_IPV6_EXT_MAX, XG_VLAN_MAX
    from services.offline import pcap
    from tests.support.xdpfuzz import Frames, parse

    assert (pcap.VLAN_MAX, pcap.IPV6_EXT_MAX) == (XG_VLAN_MAX, XG_IPV6_EXT_MAX)

    kinds: dict[str, int] = {}
    frames = Frames(20261202)
    for _ in range(20_000):
        f = next(frames)
        want = parse(f)
        got = parse_frame(LINK_ETHERNET, f, len(f), 1)
        kind = want if isinstance(want, str) else want.state
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind != "ok":
            assert got is None, (kind, f.hex())
            continue
        assert got is not None, f.hex()
        a = ipaddress.ip_address
        assert (a(got.src).packed, a(got.dst).packed) == tuple(
            x[12:] if x[:12] == b"\0" * 10 + b"\xff\xff" else x for x in (want.saddr, want.daddr))
        assert (got.sport, got.dport, got.proto, got.tcp_flags, got.length) == \
            (want.sport, want.dport, want.proto, want.tcp_flags, len(f)), f.hex()
    assert all(kinds.get(k, 0) > 100 for k in ("ok", "partial", "bad_frag", "fail", "non_ip")), kinds


def test_a_frame_the_capture_cut_keeps_its_addresses():
    """snaplen: the frame was whole on the wire, so what was read is kept (ports 0 where cut)."""
    frame = b"\0" * 12 + b"\x08\x00" + IP + TCP
    cut = frame[:14 + 20 + 2]
    assert parse_frame(LINK_ETHERNET, cut, len(cut), 0) is None            # cut on the wire
    p = parse_frame(LINK_ETHERNET, cut, len(frame), 0)                     # cut by the capture
    assert (p.src, p.sport, p.proto, p.length) == ("192.168.0.1", 0, 6, len(frame))
    v6 = b"\0" * 12 + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, 8, 0, 64) + b"\1" * 32 + \
        bytes([6, 0]) + b"\0" * 6
    p = parse_frame(LINK_ETHERNET, v6[:-4], len(v6) + 20, 0)               # chain cut by it
    assert (p.proto, p.sport) == (0, 0)
