"""The two public reports of issue 13 (cases 1 and 2) replayed end to end: XDP on the victim's end
of a veth, a listening TCP socket behind it, crafted SYNs sent from the attacker's namespace with
scapy, and the victim's SYN-ACKs counted on the attacker's side. A blocked source must get no
answer, whatever extension headers or fragments carry its SYN; the same SYNs answered once the
rule is gone show the victim's stack would have taken them."""
import json
import socket
import subprocess
import sys
import textwrap
import uuid

import pytest

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.records.rules import Rule
from tests.support import caps
from tests.support.netns import create_pair, destroy_pair, in_netns

V6_PORT, V4_PORT = 2000, 8080


@pytest.fixture(scope="module")
def victim():
    """(pair, pin_dir): XDP on veth_b, listeners on [ip6_b]:2000 and ip_b:8080 in namespace b."""
    caps.require(caps.have_root() and caps.have_bpffs() and caps.have_bcc(), "needs root, bpffs, BCC")
    pair = create_pair()
    pin_dir = f"/sys/fs/bpf/xdpguard-test-{uuid.uuid4().hex[:8]}"
    socks = []
    try:
        with in_netns(pair.b):
            loader.load([pair.veth_b], pin_dir=pin_dir, sizes=loader.Sizes(
                exact=64, prefix=64, allow=64, limit=16, ring_pages=16))
            for family, addr, port in ((socket.AF_INET6, pair.ip6_b, V6_PORT),
                                       (socket.AF_INET, pair.ip_b, V4_PORT)):
                s = socket.socket(family, socket.SOCK_STREAM)
                s.bind((addr, port))
                s.listen(64)
                socks.append(s)
        yield pair, pin_dir
    finally:
        for s in socks:
            s.close()
        loader.unload_all(pin_dir)
        destroy_pair(pair)


def mac(pair, ns: str, dev: str) -> str:
    out = pair.run(ns, "ip", "-j", "link", "show", dev).stdout
    return json.loads(out)[0]["address"]


def syn_acks(pair, packets: str) -> int:
    """Send the scapy packets that the expression `packets` builds (names: SRC6, DST6, SRC4,
    DST4, ETH) from namespace a, one at a time; the number of connections (attacker ports) that
    got a SYN-ACK back."""
    code = textwrap.dedent(f"""
        import time
        from functools import reduce
        from scapy.all import (IP, TCP, Ether, IPv6, IPv6ExtHdrDestOpt, Raw, AsyncSniffer,
                               conf, raw, sendp)
        conf.verb = 0
        SRC6, DST6, SRC4, DST4 = {pair.ip6_a!r}, {pair.ip6_b!r}, {pair.ip_a!r}, {pair.ip_b!r}
        ETH = Ether(src={mac(pair, pair.a, pair.veth_a)!r}, dst={mac(pair, pair.b, pair.veth_b)!r})
        sniffer = AsyncSniffer(iface={pair.veth_a!r}, store=True,
                               lfilter=lambda p: TCP in p and p[TCP].flags & 0x12 == 0x12)
        sniffer.start()
        time.sleep(0.5)
        for p in {packets}:
            sendp(p, iface={pair.veth_a!r})
            time.sleep(0.05)
        time.sleep(1.0)
        print(len({{p[TCP].dport for p in sniffer.stop()}}))
    """)
    out = pair.run(pair.a, sys.executable, "-c", code, timeout=60).stdout
    return int(out.split()[-1])


# (scapy's `layer * n` is a list of n copies, not a chain: the chain is folded with `/`)
V6_SYNS = ("[reduce(lambda a, b: a / b, [IPv6ExtHdrDestOpt() for _ in range(n)], "
           "ETH / IPv6(src=SRC6, dst=DST6)) / TCP(sport=40000 + n, dport=2000, flags='S') "
           "for n in (0, 1, 4, 5, 8, 10)]")
# the report's SYN, its TCP header split 8 + 12 bytes over two fragments (checksum of the whole)
SPLIT_SYN = ("[ETH / IP(src=SRC4, dst=DST4, id=77, flags='MF', proto=6) / Raw(t[:8]), "
             "ETH / IP(src=SRC4, dst=DST4, id=77, frag=1, proto=6) / Raw(t[8:])] "
             "if (t := raw(IP(src=SRC4, dst=DST4) / TCP(sport=40000, dport=8080, flags='S'))[20:]) "
             "else []")
WHOLE_SYN = "[ETH / IP(src=SRC4, dst=DST4) / TCP(sport=40001, dport=8080, flags='S')]"


def test_rel_a_blocked_ipv6_source_gets_no_answer_behind_extension_headers(victim):
    pair, pin_dir = victim
    rule = Rule("src_prefix", "drop", src=f"{pair.ip6_a}/128", origin="manual")
    with Datapath.open(pin_dir) as dp:
        dp.add_rule(rule)
    try:
        assert syn_acks(pair, V6_SYNS) == 0
    finally:
        with Datapath.open(pin_dir) as dp:
            dp.delete_rule(rule)
    assert syn_acks(pair, V6_SYNS) == 6  # the victim answers every one of them unblocked


def test_rel_a_blocked_flow_gets_no_answer_through_a_tiny_first_fragment(victim):
    pair, pin_dir = victim
    rule = Rule("flow", "drop", src=pair.ip_a, dst=pair.ip_b, sport=40000, dport=V4_PORT, proto=6,
                origin="manual")
    with Datapath.open(pin_dir) as dp:
        dp.add_rule(rule)
        before = dp.stats()["drop_frag"]
    try:
        assert syn_acks(pair, SPLIT_SYN) == 0
        with Datapath.open(pin_dir) as dp:
            assert dp.stats()["drop_frag"] - before == 2
        assert syn_acks(pair, WHOLE_SYN) == 1  # the victim is alive
        # an allowlisted source is exempt: the victim reassembles the split SYN and answers it
        with Datapath.open(pin_dir) as dp:
            dp.allow_add(f"{pair.ip_a}/32")
        assert syn_acks(pair, SPLIT_SYN) == 1
    finally:
        with Datapath.open(pin_dir) as dp:
            dp.delete_rule(rule)
            dp.allow_del(f"{pair.ip_a}/32")
