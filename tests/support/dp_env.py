"""A loaded, unattached XDP program for BPF_PROG_TEST_RUN tests: its pinned maps (Datapath), its
ring, frames run through it and counter deltas. tests/kernel/conftest.py gives one per test module
(fixture `env`, maps emptied before every test); the fuzz environment (tests/support/xdpfuzz.py)
builds on it."""
from __future__ import annotations

import ctypes
import ipaddress
import os

from services.dataplane import bpfsys, loader
from services.dataplane.datapath import Datapath
from services.dataplane.ringbuf import RingReader
from services.dataplane.structs import (Addr4Key, AddrKey, Flow4Key, Flow6Fold, Flow6Key, HostSlot, LimitKey,
                                        Lpm4Key, LpmKey, host_slot, pfx_filter_slot)
from tests.support.caps import fresh_pin_dir

XDP_DROP, XDP_PASS = 1, 2
SMALL = loader.Sizes(exact=64, prefix=64, allow=64, limit=16, ring_pages=16)


class Env:
    """The program loaded (not attached) with `sizes` under a fresh test pin directory; `close()`
    unloads it and removes the pins. Needs root, bpffs and BCC."""

    def __init__(self, sizes: loader.Sizes = SMALL):
        self.pin_dir = fresh_pin_dir()
        loader.load([], pin_dir=self.pin_dir, sizes=sizes)
        self.fd = loader.prog_fd(self.pin_dir)
        self.dp = Datapath.open(self.pin_dir)
        self.ring = RingReader(self.pin_dir)

    def run(self, frame, repeat: int = 1) -> int:
        """The program's XDP action for one frame (bytes or a scapy packet)."""
        return bpfsys.prog_test_run(self.fd, bytes(frame), repeat)[0]

    def events(self) -> list:
        """Every sampled event waiting in the ring (drains it)."""
        out = []
        while True:
            got = self.ring.poll(0)
            if not got:
                return out
            out.extend(got)

    def reset(self) -> None:
        """Empty every rule map, sampling back to 1 in 1, drain the ring."""
        clear_rules(self.dp)
        self.events()

    def close(self) -> None:
        self.ring.close()
        self.dp.close()
        os.close(self.fd)
        loader.unload_all(self.pin_dir)


def clear_rules(dp: Datapath) -> None:
    """Empty every rule map of a loaded program (rule counts back to 0) and set sampling back to 1
    in 1."""
    for rs in dp.rules():  # through Datapath first, so rule counts and filter slots go back to 0
        dp.delete_rule(rs.rule)
    maps = dp._maps
    for name, key in (("exact4", Flow4Key), ("exact6", Flow6Fold), ("exact6x", Flow6Key), ("src_prefix4", Lpm4Key), ("src_prefix", LpmKey),
                      ("src_host4", Addr4Key), ("src_host6", AddrKey),
                      ("allow", LpmKey), ("dst_limit", LimitKey), ("limit_dst", AddrKey),
                      ("limit_stats", LimitKey)):
        for k in bpfsys.keys(maps[name].fd, key):
            bpfsys.delete(maps[name].fd, k)
    for i, v in dp._host_slots(every=True):  # inline host rules written behind Datapath's back
        if any(bytes(v)):
            dp._write("src_host_slot", ctypes.c_uint32(i), HostSlot(), "host slot")
    dp.recount()
    dp.set_sample_rate(1)


class Delta:
    """Counter changes across a block: `with Delta(env) as d: ...; d["drop_exact"]`."""

    def __init__(self, env: Env):
        self.env = env

    def __enter__(self):
        self.before = self.env.dp.stats()
        return self

    def __exit__(self, *exc):
        after = self.env.dp.stats()
        self.values = {k: after[k] - self.before[k] for k in after}

    def __getitem__(self, key):
        return self.values[key]


def sharing(addr: str) -> str:
    """Another IPv4 address whose inline host slot (structs.host_slot) is `addr`'s: the first
    after it."""
    want, ip = host_slot(addr), ipaddress.IPv4Address(addr)
    while True:
        ip += 1
        if host_slot(str(ip)) == want:
            return str(ip)


def syn(src: str) -> bytes:
    """A TCP SYN frame from `src` (IPv4 or IPv6 text) to 10.200.0.2 / fd00::2 port 80: a
    source-rule probe that no destination rule matches."""
    from scapy.all import IP, TCP, Ether, IPv6, raw  # lazily: scapy is slow to import
    l3 = IPv6(src=src, dst="fd00::2") if ":" in src else IP(src=src, dst="10.200.0.2")
    return raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3 /
               TCP(sport=1234, dport=80, flags="S"))


def pfx_filter_word(env: Env, cidr: str) -> int:
    """The src_pfx_filter word (its four band counts) of the slot of source prefix `cidr`."""
    got = ctypes.c_uint32()
    bpfsys.lookup(env.dp._maps["src_pfx_filter"].fd, ctypes.c_uint32(pfx_filter_slot(cidr)), got)
    return got.value
