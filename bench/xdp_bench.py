#!/usr/bin/env python3
"""Nanoseconds per packet of the xdpguard XDP program through BPF_PROG_TEST_RUN.

Every case runs beside two reference programs measured in the same run: a bare
`return XDP_DROP` and the same source compiled parse-only (-DXG_PARSE_ONLY: Ethernet/VLAN/IP/L4
parsing and the global counters, no map lookups), so the ratios say what the rules cost.

examples:
  sudo .venv/bin/python bench/xdp_bench.py                  # 1,000,000 repeats, median of 5
  sudo .venv/bin/python bench/xdp_bench.py --repeat 2000000 --runs 3 --markdown
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scapy.all import IP, TCP, Ether, raw  # noqa: E402

from services.dataplane import bpfsys, loader  # noqa: E402
from services.dataplane.datapath import Datapath  # noqa: E402
from services.dataplane.ringbuf import RingReader  # noqa: E402
from services.records.rules import Rule  # noqa: E402

BARE = "int prog(struct xdp_md *ctx) { return XDP_DROP; }"
# one 16-byte-key per-CPU hash lookup (key read from the IPv4 header, like exact4's), nothing
# else: the floor under any exact-rule drop
LOOKUP = """
struct k16 { u8 s[4]; u8 d[4]; u16 sp; u16 dp; u8 proto; u8 pad[3]; };
BPF_PERCPU_HASH(h, struct k16, u64, 262144);
int prog(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (data + 14 + 20 + 4 > end) return XDP_PASS;
    struct k16 k = {};
    __builtin_memcpy(k.s, data + 26, 4);
    __builtin_memcpy(k.d, data + 30, 4);
    k.sp = *(u16 *)(data + 34);
    k.dp = *(u16 *)(data + 36);
    k.proto = *(u8 *)(data + 23);
    u64 *v = h.lookup(&k);
    if (v) { *v += 1; return XDP_DROP; }
    return XDP_PASS;
}
"""
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def frame(src: str, dst: str, sport: int, dport: int) -> bytes:
    return raw(ETH / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S"))


def measure(fd: int, pkt: bytes, repeat: int, runs: int, expect: int | None = None) -> float:
    times = []
    for _ in range(runs):
        verdict, ns = bpfsys.prog_test_run(fd, pkt, repeat)
        if expect is not None and verdict != expect:
            raise SystemExit(f"unexpected verdict {verdict} (wanted {expect})")
        times.append(ns)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat (>= 1e6)")
    ap.add_argument("--runs", type=int, default=5, help="runs per case; the median is reported")
    ap.add_argument("--exact-rules", type=int, default=100_000)
    ap.add_argument("--prefixes", type=int, default=10_000)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()

    pin_dir = f"/sys/fs/bpf/xdpguard-bench-{uuid.uuid4().hex[:8]}"
    # a ring large enough for every event of one run, so "emitting" never hits the full-ring path
    ring_pages = 1 << max(4, (args.repeat * 64 // 4096 - 1).bit_length())
    t0 = time.monotonic()
    bare, bare_fd = loader.compile_program(text=BARE)
    lookup, lookup_fd = loader.compile_program(text=LOOKUP)
    parse_only, parse_fd = loader.compile_program(extra_cflags=("-DXG_PARSE_ONLY=1",))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(ring_pages=ring_pages))
    fd = loader.prog_fd(pin_dir)
    dp = Datapath.open(pin_dir)
    ring = RingReader(pin_dir)
    try:
        print(f"loaded 3 programs in {time.monotonic() - t0:.1f} s; filling maps...", file=sys.stderr)
        t0 = time.monotonic()
        for i in range(args.exact_rules):
            src = str(ipaddress.IPv4Address(0x0B000000 + i))
            dp.add_rule(Rule("flow", "drop", src=src, dst="10.9.9.9", sport=1000 + i % 50000,
                             dport=80, proto=6))
        for i in range(args.prefixes):
            dp.add_rule(Rule("src_prefix", "drop", src=f"{ipaddress.IPv4Address(0xC0000000 + (i << 8))}/24"))
        fill_lookup(lookup, args.exact_rules)
        dp.add_rule(Rule("dst_limit", "limit", dst="10.7.7.7", proto=6, dport=80, rate_pps=1000))
        print(f"{args.exact_rules} exact rules, {args.prefixes} prefixes, 1 limit in "
              f"{time.monotonic() - t0:.1f} s", file=sys.stderr)

        unmatched = frame("10.1.1.1", "10.2.2.2", 1234, 443)
        hit = args.exact_rules // 2
        exact_hit = frame(str(ipaddress.IPv4Address(0x0B000000 + hit)), "10.9.9.9", 1000 + hit % 50000, 80)
        prefix_hit = frame(str(ipaddress.IPv4Address(0xC0000000 + ((args.prefixes // 2) << 8) + 7)),
                           "10.9.9.9", 5555, 80)
        limit_hit = frame("10.1.1.1", "10.7.7.7", 5555, 80)

        def drain():
            while ring.poll(0):
                pass

        cases = []

        def case(name, pkt, expect, sample_rate):
            # the three programs interleaved run by run, so a noisy neighbour hits all alike
            dp.set_sample_rate(sample_rate)
            drain()
            rows = []
            for _ in range(args.runs):
                b = measure(bare_fd, pkt, args.repeat, 1)
                p = measure(parse_fd, pkt, args.repeat, 1)
                ns = measure(fd, pkt, args.repeat, 1, expect)
                drain()  # so the ring never fills
                rows.append((ns, b, p))
            med = lambda i: statistics.median(r[i] for r in rows)  # noqa: E731
            cases.append((name, med(0), med(1), med(2),
                          statistics.median(r[0] / r[1] for r in rows),
                          statistics.median(r[0] / r[2] for r in rows)))

        case("unmatched, sampling off", unmatched, 2, 0)
        case("unmatched, event emitted (1 in 1)", unmatched, 2, 1)
        case(f"exact-rule drop ({args.exact_rules // 1000}k rules)", exact_hit, 1, 0)
        case(f"source-prefix drop ({args.prefixes // 1000}k prefixes)", prefix_hit, 1, 0)
        case("destination limit (over rate: drop)", limit_hit, 1, 0)
        floor = [measure(lookup_fd, exact_hit, args.repeat, 1, 1) for _ in range(args.runs)]
        lost = dp.stats()["events_lost"]
    finally:
        ring.close()
        dp.close()
        os.close(fd)
        loader.unload_all(pin_dir)
        bare.cleanup()
        parse_only.cleanup()
        lookup.cleanup()

    kernel = os.uname().release
    print(f"repeat {args.repeat}, median of {args.runs} interleaved runs (ratios: median of per-run ratios), kernel {kernel}, "
          f"{os.cpu_count()} CPUs, events lost during the run: {lost}")
    if args.markdown:
        print("| case | ns/pkt | bare XDP_DROP ns | parse-only ns | x bare | x parse-only |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, ns, b, p, xb, xp in cases:
            print(f"| {name} | {ns:.0f} | {b:.0f} | {p:.0f} | {xb:.2f} | {xp:.2f} |")
    else:
        print(f"{'case':<40} {'ns/pkt':>7} {'bare':>6} {'parse':>6} {'x bare':>7} {'x parse':>8}")
        for name, ns, b, p, xb, xp in cases:
            print(f"{name:<40} {ns:>7.0f} {b:>6.0f} {p:>6.0f} {xb:>7.2f} {xp:>8.2f}")
    print(f"reference: bare per-CPU hash lookup, 16-byte key, {args.exact_rules // 1000}k entries: "
          f"{statistics.median(floor):.0f} ns/pkt")
    return 0


def fill_lookup(b, n: int) -> None:
    import ctypes
    m = b[b"h"]
    ncpu = bpfsys.possible_cpus()
    vals = (ctypes.c_uint64 * ncpu)()
    for i in range(n):
        k = m.Key()
        k.s[:] = list(ipaddress.IPv4Address(0x0B000000 + i).packed)
        k.d[:] = list(ipaddress.IPv4Address("10.9.9.9").packed)
        k.sp = socket.htons(1000 + i % 50000)
        k.dp = socket.htons(80)
        k.proto = 6
        bpfsys.update(m.map_fd, k, vals)


if __name__ == "__main__":
    sys.exit(main())
