#!/usr/bin/env python3
"""Nanoseconds per packet of a source-prefix lookup alone, four ways, through
BPF_PROG_TEST_RUN: the measurement behind the data plane's prefix maps (issue 16, "one hash map
per prefix length in use ... or an LPM trie only for the lengths that need it").

Each program reads the IPv4 source at a fixed offset (no parser, no counters) and answers drop
on a match, pass on a miss:
  trie16  one LPM trie walk, 16-byte v4-mapped keys, both families' prefixes in one trie
          (xdpguard's src_prefix before src_prefix4)
  trie4   one LPM trie walk, 4-byte keys, IPv4 prefixes only (src_prefix4)
  hash16  one hash lookup per IPv4 length in use, longest first, 16-byte v4-mapped keys
  hash4   the same with 4-byte keys
  bitmap4 the per-length design xdpguard could run: the lengths in use from a bitmap in an array
          (bit n: some prefix of length n), a skip filter first (an array of prefix counts per
          /16 of the source: a source whose /16 holds no prefix is not looked up), then one
          lookup per length in use, longest first, in ONE per-CPU hash keyed by (length, masked
          address) whose value holds the rule's counters (incremented on a hit); a bounded loop
          over the bitmap's set bits
  unroll4 the same with the loop unrolled over all 32 lengths (a bit test each)
over bench/xdp_bench.py's --prefixes (half IPv4 /16 /20 /24 /28 /32, half IPv6; the hosts are
left out, as xdpguard keeps them in their own hashes), so the IPv4 lengths in use are 28, 24,
20 and 16. Each case is 5 rounds of every program in turn, median reported, beside a bare
`return XDP_DROP`. "miss in a /16 with a prefix" is a source the filter lets through (its /16
holds a /24 it is not in) that matches nothing: every length in use is looked up.

examples:
  .venv/bin/python bench/prefix_lookup_bench.py
  .venv/bin/python bench/prefix_lookup_bench.py --prefixes 40000 --repeat 2000000
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xdp_bench import frame, prefix_hit, prefix_rules  # noqa: E402

from services.dataplane import bpfsys, loader  # noqa: E402

LENS4 = (28, 24, 20, 16)  # the IPv4 lengths below /32 that xdp_bench's prefixes use
PROGRAMS = ("bare", "trie16", "trie4", "hash16", "hash4", "bitmap4", "unroll4")
TEXT = r"""
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
struct k16 { u32 plen; u8 a[16]; };
struct k4 { u32 plen; u32 a; };
struct val { u64 expires; u64 created; u32 plen; u8 action; u8 origin; u8 pad[2]; };
BPF_LPM_TRIE(t16, struct k16, struct val, 65536);
BPF_LPM_TRIE(t4, struct k4, struct val, 65536);
BPF_HASH(h16, struct k16, struct val, 65536);
BPF_HASH(h4, struct k4, struct val, 65536);
struct rule { u64 expires; u64 created; u64 packets; u64 bytes; u8 action; u8 origin; u8 pad[6]; };
BPF_PERCPU_HASH(p4, struct k4, struct rule, 65536);
BPF_ARRAY(lens4, u32, 1);           // bit n set: some prefix of length n is in p4
BPF_ARRAY(filter16, u32, 65536);    // prefixes (>= /16) under each /16

static __always_inline int src(struct xdp_md *ctx, u32 *s) {
    struct iphdr *ip = (void *)(long)ctx->data + sizeof(struct ethhdr);
    if ((void *)(ip + 1) > (void *)(long)ctx->data_end)
        return -1;
    *s = ip->saddr;
    return 0;
}
int prog(struct xdp_md *ctx) { return XDP_DROP; }  // "bare"
int trie16(struct xdp_md *ctx) {
    u32 s;
    if (src(ctx, &s)) return XDP_PASS;
    struct k16 k = {.plen = 128};
    k.a[10] = k.a[11] = 0xff;
    __builtin_memcpy(&k.a[12], &s, 4);
    return t16.lookup(&k) ? XDP_DROP : XDP_PASS;
}
int trie4(struct xdp_md *ctx) {
    u32 s;
    if (src(ctx, &s)) return XDP_PASS;
    struct k4 k = {.plen = 32, .a = s};
    return t4.lookup(&k) ? XDP_DROP : XDP_PASS;
}
int hash16(struct xdp_md *ctx) {
    u32 s;
    if (src(ctx, &s)) return XDP_PASS;
    u8 lens[] = {LENS};
    struct k16 k = {};
    k.a[10] = k.a[11] = 0xff;
#pragma unroll
    for (int i = 0; i < sizeof(lens); i++) {
        u32 x = s & bpf_htonl(~0u << (32 - lens[i]));
        k.plen = 96 + lens[i];
        __builtin_memcpy(&k.a[12], &x, 4);
        if (h16.lookup(&k)) return XDP_DROP;
    }
    return XDP_PASS;
}
int hash4(struct xdp_md *ctx) {
    u32 s;
    if (src(ctx, &s)) return XDP_PASS;
    u8 lens[] = {LENS};
    struct k4 k = {};
#pragma unroll
    for (int i = 0; i < sizeof(lens); i++) {
        k.plen = lens[i];
        k.a = s & bpf_htonl(~0u << (32 - lens[i]));
        if (h4.lookup(&k)) return XDP_DROP;
    }
    return XDP_PASS;
}
// the source and the lengths in use, 0 unless the filter slot of the source's /16 is empty
static __always_inline int filtered(struct xdp_md *ctx, u32 *s, u32 *m) {
    u32 zero = 0;
    if (src(ctx, s)) return -1;
    u32 *lens = lens4.lookup(&zero);
    if (!lens) return -1;
    u32 slot = bpf_ntohl(*s) >> 16;
    u32 *f = filter16.lookup(&slot);
    if (!f || !*f) return -1;
    *m = *lens;
    return 0;
}
int bitmap4(struct xdp_md *ctx) {
    u32 s, m;
    if (filtered(ctx, &s, &m)) return XDP_PASS;
    struct k4 k = {};
#pragma clang loop unroll(disable)
    for (int i = 0; i < 32 && m; i++) {
        u32 x = m, n = 0, t;  // n = the highest bit set in m (LLVM's ctlz crashes BCC's backend)
        t = (x > 0xffff) << 4; x >>= t; n |= t;
        t = (x > 0xff) << 3; x >>= t; n |= t;
        t = (x > 0xf) << 2; x >>= t; n |= t;
        t = (x > 0x3) << 1; x >>= t; n |= t;
        n |= x >> 1;
        m &= ~(1u << n);
        k.plen = n;
        k.a = n ? s & bpf_htonl(~0u << (32 - n)) : 0;
        struct rule *r = p4.lookup(&k);
        if (r) { r->packets++; r->bytes += 60; return XDP_DROP; }
    }
    return XDP_PASS;
}
int unroll4(struct xdp_md *ctx) {
    u32 s, m;
    if (filtered(ctx, &s, &m)) return XDP_PASS;
    struct k4 k = {};
#pragma unroll
    for (int n = 31; n >= 0; n--) {
        if (!(m & (1u << n))) continue;
        k.plen = n;
        k.a = n ? s & bpf_htonl(~0u << (32 - n)) : 0;
        struct rule *r = p4.lookup(&k);
        if (r) { r->packets++; r->bytes += 60; return XDP_DROP; }
    }
    return XDP_PASS;
}
"""


def fill(b, n: int) -> None:
    """Every non-host prefix of xdp_bench.prefix_rules(n) into the 16-byte maps (both families)
    and the IPv4 ones into the 4-byte maps, keys as each program builds them."""
    for rule in prefix_rules(n):
        net = ipaddress.ip_network(rule.src)
        if net.prefixlen == net.max_prefixlen:
            continue
        v4 = net.version == 4
        raw = (b"\0" * 10 + b"\xff\xff" if v4 else b"") + net.network_address.packed
        v = b[b"t16"].Leaf()
        for name in (b"t16", b"h16"):
            k = b[name].Key(plen=(96 if v4 else 0) + net.prefixlen, a=(ctypes.c_uint8 * 16)(*raw))
            bpfsys.update(b[name].map_fd, k, v)
        if v4:
            k = b[b"p4"].Key(plen=net.prefixlen, a=int.from_bytes(net.network_address.packed, "little"))
            bpfsys.update(b[b"p4"].map_fd, k, (b[b"p4"].Leaf * bpfsys.possible_cpus())())
            lens, zero = b[b"lens4"], ctypes.c_uint32(0)
            m = ctypes.c_uint32()
            bpfsys.lookup(lens.map_fd, zero, m)
            bpfsys.update(lens.map_fd, zero, ctypes.c_uint32(m.value | 1 << net.prefixlen))
            slot, n = ctypes.c_uint32(int(net.network_address) >> 16), ctypes.c_uint32()
            bpfsys.lookup(b[b"filter16"].map_fd, slot, n)
            bpfsys.update(b[b"filter16"].map_fd, slot, ctypes.c_uint32(n.value + 1))
            for name in (b"t4", b"h4"):
                k = b[name].Key(plen=net.prefixlen, a=int.from_bytes(net.network_address.packed, "little"))
                bpfsys.update(b[name].map_fd, k, v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat")
    ap.add_argument("--runs", type=int, default=5, help="rounds per case; the median is reported")
    ap.add_argument("--prefixes", type=int, default=10_000, help="prefixes, both families, as xdp_bench")
    args = ap.parse_args()
    if args.prefixes < 40 or args.repeat < 1 or args.runs < 1:
        print("prefix_lookup_bench: --prefixes >= 40, --repeat >= 1, --runs >= 1", file=sys.stderr)
        return 2
    b, bare_fd = loader.compile_program(text=TEXT.replace("LENS", ", ".join(map(str, LENS4))))
    try:
        fds = {name: b.load_func(name.encode(), b.XDP).fd for name in PROGRAMS[1:]}
        fds["bare"] = bare_fd
        fill(b, args.prefixes)
        cases = [(f"/{n} hit ({LENS4.index(n) + 1} hash lookups)",
                  frame(prefix_hit(args.prefixes, False, n), "10.9.9.9", 5555, 80), 1) for n in (24, 16)]
        cases.append((f"miss ({len(LENS4)} hash lookups)", frame("10.1.1.1", "10.2.2.2", 1234, 443), 2))
        miss16 = str(ipaddress.ip_address(prefix_hit(args.prefixes, False, 24)) + 256)  # /16 with a /24
        cases.append((f"miss in a /16 with a prefix", frame(miss16, "10.2.2.2", 1234, 443), 2))
        print(f"{args.prefixes} prefixes, repeat {args.repeat}, median of {args.runs} rounds, ns per packet")
        print(f"{'case':<26}" + "".join(f"{p:>8}" for p in PROGRAMS))
        for name, pkt, verdict in cases:
            got = {p: [] for p in PROGRAMS}
            for _ in range(args.runs):
                for p in PROGRAMS:
                    v, ns = bpfsys.prog_test_run(fds[p], pkt, args.repeat)
                    if p != "bare" and v != verdict:
                        raise SystemExit(f"prefix_lookup_bench: {p} answered {v} on {name} (wanted {verdict})")
                    got[p].append(ns)
            print(f"{name:<26}" + "".join(f"{statistics.median(got[p]):>8.0f}" for p in PROGRAMS))
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("prefix_lookup_bench", main)
