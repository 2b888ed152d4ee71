"""The kernel toolchain end to end: BCC compiles bpf/toolchain_probe.c, the program attaches to a
veth inside a namespace, real pings from the other namespace are dropped and counted, and
detaching restores traffic."""
from pathlib import Path

from tests.support.netns import in_netns

PROBE = Path(__file__).resolve().parents[2] / "bpf" / "toolchain_probe.c"


def test_probe_drops_and_counts_real_pings_then_detach_restores(netns_pair):
    from bcc import BPF

    assert netns_pair.ping(count=2) == 2, "namespaces are not connected before XDP"
    b = BPF(src_file=str(PROBE))
    fn = b.load_func("xdp_probe", BPF.XDP)
    with in_netns(netns_pair.b):
        b.attach_xdp(netns_pair.veth_b, fn, BPF.XDP_FLAGS_SKB_MODE)
    try:
        assert netns_pair.ping(count=5, wait=0.5) == 0
        dropped = sum(b["dropped"][0])
        assert dropped == 5
    finally:
        with in_netns(netns_pair.b):
            b.remove_xdp(netns_pair.veth_b, BPF.XDP_FLAGS_SKB_MODE)
        b.cleanup()
    assert netns_pair.ping(count=2) == 2
