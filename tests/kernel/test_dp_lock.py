"""Two processes editing the same pinned maps at once (the enforcer and `xdpguard add`): the
pin-directory lock makes each multi-map update atomic, and without it an update is lost.

Adding a limit rule writes limit_stats and dst_limit, then rebuilds the destination's limit_dst
entry (the TCP-flag masks the kernel tries) from a scan of dst_limit. Two writers each add a rule
for the same destination with a different mask: a slow one (its scan stretched by 40 ms, like a
big map or a preempted process) and a fast one starting 5 ms later, inside the slow one's scan.
With the lock every destination ends up listing both masks; without it the slow writer's stale
scan is written last and the fast writer's mask is lost, so its rule never matches a packet."""
import contextlib
import ctypes
import multiprocessing
import os
import time

import pytest
from scapy.all import IP, TCP, Ether, raw

from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.dataplane.maps import open_pinned
from services.dataplane.structs import AddrKey, LimitDst, addr_bytes
from services.records.rules import Rule
from tests.support import caps

SYN, ACK = 0x02, 0x10
DESTS = [f"198.18.7.{i}" for i in range(1, 13)]
SLOW_SCAN_S, FAST_START_S = 0.04, 0.005
XDP_DROP, XDP_PASS = 1, 2
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def writer(pin_dir: str, mask: int, slow: bool, locked: bool, barrier) -> None:
    """Add a 1-pps limit rule with `mask` for every destination, in step with the other writer."""
    dp = Datapath.open(pin_dir)
    if not locked:
        dp._lock = contextlib.nullcontext()  # what every writer did before the lock existed
    if slow:
        real_keys = bpfsys.keys

        def slow_keys(fd, key_type):
            out = real_keys(fd, key_type)
            time.sleep(SLOW_SCAN_S)
            return out
        bpfsys.keys = slow_keys  # this process only: Datapath's dst_limit scan
    for dst in DESTS:
        barrier.wait(timeout=30)
        if not slow:
            time.sleep(FAST_START_S)
        dp.add_rule(Rule("dst_limit", "limit", dst=dst, proto=6, tcp_flags=mask, rate_pps=1))
    dp.close()


@pytest.fixture
def pinned():
    caps.require(caps.have_root() and caps.have_bpffs() and caps.have_bcc(), "needs root, bpffs, BCC")
    pin_dir = caps.fresh_pin_dir()
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=64,
                                                        ring_pages=16))
    yield pin_dir
    loader.unload_all(pin_dir)


def run_two_writers(pin_dir: str, locked: bool) -> dict[str, list[int]]:
    """Both writers at once, in separate processes: {destination: masks listed in limit_dst}."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=writer, args=(pin_dir, SYN, True, locked, barrier)),
             ctx.Process(target=writer, args=(pin_dir, ACK, False, locked, barrier))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, "a writer process failed"
    fd, _ = open_pinned(pin_dir, "limit_dst")
    try:
        out = {}
        for dst in DESTS:
            v = LimitDst()
            assert bpfsys.lookup(fd, AddrKey((ctypes.c_uint8 * 16)(*addr_bytes(dst))), v)
            out[dst] = list(v.masks[:v.nmasks])
        return out
    finally:
        os.close(fd)


def verdicts(pin_dir: str, dst: str, flags: str) -> list[int]:
    """Two packets in a row to `dst` with TCP `flags`: a 1-pps limit passes one, drops one."""
    frame = raw(ETH / IP(src="10.0.0.1", dst=dst) / TCP(sport=1234, dport=80, flags=flags))
    fd = loader.prog_fd(pin_dir)
    try:
        return [bpfsys.prog_test_run(fd, frame)[0] for _ in range(2)]
    finally:
        os.close(fd)


def test_two_writers_at_once_under_the_lock_lose_no_update(pinned):
    masks = run_two_writers(pinned, locked=True)
    assert masks == {dst: [SYN, ACK] for dst in DESTS}
    with Datapath.open(pinned) as dp:
        assert len(dp.rules()) == 2 * len(DESTS)
    # both rules act on packets: each mask is in the list the kernel tries
    assert verdicts(pinned, DESTS[0], "S") == [XDP_PASS, XDP_DROP]
    assert verdicts(pinned, DESTS[0], "A") == [XDP_PASS, XDP_DROP]


def test_without_the_lock_the_same_writers_lose_updates(pinned):
    masks = run_two_writers(pinned, locked=False)
    lost = [dst for dst, m in masks.items() if m != [SYN, ACK]]
    assert lost, "no update was lost without the lock: the test cannot tell the lock works"
    # a stale scan was written last (almost always the slow writer's: [SYN])
    assert all(masks[dst] in ([SYN], [ACK]) for dst in lost)
    with Datapath.open(pinned) as dp:
        assert len(dp.rules()) == 2 * len(DESTS)  # dst_limit holds both rules...
    missing = "A" if masks[lost[0]] == [SYN] else "S"
    assert verdicts(pinned, lost[0], missing) == [XDP_PASS, XDP_PASS]  # ...one is never applied
