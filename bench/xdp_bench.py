#!/usr/bin/env python3
"""Nanoseconds per packet of the xdpguard XDP program against the original tool's, through
BPF_PROG_TEST_RUN, in one run.

The reference is bench/reference_xdp.c: the original tool's design (Ethernet, IPv4 only, one hash
map keyed by a 16-byte 5-tuple, __sync_fetch_and_add on the matched rule's counter, drop; on a miss
a perf event with the packet's fields), loaded with BCC like bpf/xdpguard.c and filled with as many
IPv4 exact rules as xdpguard. Every xdpguard case is measured in rounds interleaved with a bare
`return XDP_DROP` and the reference case it is compared with (its match-drop for the drop cases,
its miss-with-event for the unmatched ones), so a noisy neighbour hits all alike; a ratio is the
median of the per-round ratios, and the goal column is issue 16's.

xdpguard holds --exact-rules IPv4 and as many IPv6 exact rules, --prefixes source prefixes of mixed
lengths (half IPv4: /16 /20 /24 /28 /32, half IPv6: /32 /48 /64 /96 /128; disjoint) and 1 limit,
none of them with an expiry; and one IPv4 host rule and one IPv4 exact rule with an expiry a day
away (the "with TTL" cases: every rule the pipeline writes has one, so the program reads a clock).

examples:
  .venv/bin/python bench/xdp_bench.py                  # 1,000,000 repeats, median of 5
  .venv/bin/python bench/xdp_bench.py --repeat 2000000 --runs 3 --markdown
  .venv/bin/python bench/xdp_bench.py --cases "drop ("   # the drop cases only
  .venv/bin/python bench/xdp_bench.py --cases "drop (" --hosts-first   # their host rules in slots
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import os
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scapy.all import IP, TCP, Ether, IPv6, raw  # noqa: E402

from services.dataplane import bpfsys, loader  # noqa: E402
from services.dataplane.datapath import Datapath  # noqa: E402
from services.dataplane.ringbuf import RingReader  # noqa: E402
from services.records.rules import Rule  # noqa: E402

BARE = "int prog(struct xdp_md *ctx) { return XDP_DROP; }"
REFERENCE = Path(__file__).resolve().with_name("reference_xdp.c")
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
PERF_RECORD = 56  # bytes one reference event takes in the perf buffer (header + size + 40, aligned)
V4_LENS, V6_LENS = (16, 20, 24, 28, 32), (32, 48, 64, 96, 128)
DROP, PASS = 1, 2


def frame(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A TCP SYN frame (60 bytes IPv4 with Ethernet padding, 74 bytes IPv6) from src:sport to
    dst:dport."""
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return raw(ETH / ip / TCP(sport=sport, dport=dport, flags="S")).ljust(60, b"\0")


def exact_src(i: int, v6: bool) -> str:
    """Source address of exact rule i (the rules are i -> 10.9.9.9 / 2001:db8:9::9 port 80)."""
    if v6:
        return str(ipaddress.IPv6Address((0x20010DB80001 << 80) + i))
    return str(ipaddress.IPv4Address(0x0B000000 + i))


def prefix_base(i: int, v6: bool) -> int:
    """Network address of prefix i of a family: each in its own /16 (IPv4) or /32 (IPv6)."""
    return (0x2A00 << 112) + (i << 96) if v6 else 0x14000000 + (i << 16)


def prefix_rules(n: int) -> list[Rule]:
    """n source-prefix drop rules, half per family, lengths cycling through V4_LENS / V6_LENS."""
    rules = []
    for i in range(n):
        v6 = i % 2 == 1
        j = i // 2
        lens = V6_LENS if v6 else V4_LENS
        addr = (ipaddress.IPv6Address if v6 else ipaddress.IPv4Address)(prefix_base(j, v6))
        rules.append(Rule("src_prefix", "drop", src=f"{addr}/{lens[j % len(lens)]}"))
    return rules


def prefix_hit(n: int, v6: bool, plen: int) -> str:
    """An address inside the prefix of length plen (nearest the middle of the set) of a family."""
    lens = V6_LENS if v6 else V4_LENS
    j = n // 4 - (n // 4) % len(lens) + lens.index(plen)
    base = prefix_base(j, v6)
    host = base if plen == (128 if v6 else 32) else base + 7
    return str((ipaddress.IPv6Address if v6 else ipaddress.IPv4Address)(host))


def measure(fd: int, pkt: bytes, repeat: int, expect: int | None = None) -> float:
    """Average ns per run of one BPF_PROG_TEST_RUN of `repeat` runs; exits on a wrong verdict."""
    verdict, ns = bpfsys.prog_test_run(fd, pkt, repeat)
    if expect is not None and verdict != expect:
        raise SystemExit(f"unexpected verdict {verdict} (wanted {expect})")
    return ns


def reference_key(b, src: str, dst: str, sport: int, dport: int, proto: int = 6):
    """The reference's `rules` key of one IPv4 flow (addresses as in the header, ports in host
    order, as the program builds it)."""
    k = b[b"rules"].Key()
    k.src = int.from_bytes(ipaddress.IPv4Address(src).packed, "little")
    k.dst = int.from_bytes(ipaddress.IPv4Address(dst).packed, "little")
    k.sport, k.dport, k.proto = sport, dport, proto
    return k


def fill_reference(b, n: int) -> None:
    """The reference's rules: n IPv4 5-tuples, the same as xdpguard's exact4, action drop."""
    m = b[b"rules"]
    leaf = m.Leaf()
    leaf.action = DROP
    for i in range(n):
        bpfsys.update(m.map_fd, reference_key(b, exact_src(i, False), "10.9.9.9", 1000 + i % 50000, 80), leaf)


TTL_HOST, TTL_FLOW = "30.0.0.1", ("31.0.0.1", "10.9.9.9", 7, 80)  # the two rules with an expiry


def measured_hosts(n_prefixes: int) -> list[str]:
    """The host rules the /32, /128 and TTL drop cases hit."""
    return [f"{prefix_hit(n_prefixes, False, 32)}/32", f"{prefix_hit(n_prefixes, True, 128)}/128",
            f"{TTL_HOST}/32"]


def fill_xdpguard(dp: Datapath, n_exact: int, n_prefixes: int, hosts_first: bool = False) -> None:
    """n_exact exact drop rules per family, n_prefixes mixed prefixes, one destination limit, and
    the TTL_HOST and TTL_FLOW drop rules expiring a day from now. hosts_first: the host rules the
    drop cases hit are written before all others (the same rules, another order: a host rule
    takes its inline slot in src_host_slot when that is free, so these then hold theirs)."""
    day = time.time_ns() + 86_400 * 10**9
    ttl_host = Rule("src_prefix", "drop", src=f"{TTL_HOST}/32", expires_ns=day)
    prefixes = prefix_rules(n_prefixes)
    if hosts_first:
        first = set(measured_hosts(n_prefixes))
        for rule in [r for r in prefixes if r.src in first] + [ttl_host]:
            dp.add_rule(rule)
        prefixes = [r for r in prefixes if r.src not in first]
    for v6, dst in ((False, "10.9.9.9"), (True, "2001:db8:9::9")):
        for i in range(n_exact):
            dp.add_rule(Rule("flow", "drop", src=exact_src(i, v6), dst=dst, sport=1000 + i % 50000,
                             dport=80, proto=6))
    for rule in prefixes:
        dp.add_rule(rule)
    dp.add_rule(Rule("dst_limit", "limit", dst="10.7.7.7", proto=6, dport=80, rate_pps=1000))
    if not hosts_first:
        dp.add_rule(ttl_host)
    src, dst, sport, dport = TTL_FLOW
    dp.add_rule(Rule("flow", "drop", src=src, dst=dst, sport=sport, dport=dport, proto=6, expires_ns=day))


def where_hosts(dp: Datapath, n_prefixes: int) -> str:
    """Where each measured host rule sits: its inline slot or the hash (a build without
    src_host_slot: the hash)."""
    slots = {}
    if "src_host_slot" in dp._maps:
        slots = {str(ipaddress.ip_address(bytes(v.addr)[:4] if v.family == 4 else bytes(v.addr)))
                 for _, v in dp._host_slots() if v.family}
    return ", ".join(f"{h} {'slot' if h.split('/')[0] in slots else 'hash'}"
                     for h in measured_hosts(n_prefixes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat (>= 1e6)")
    ap.add_argument("--runs", type=int, default=5, help="interleaved rounds per case; the median is reported")
    ap.add_argument("--exact-rules", type=int, default=100_000, help="exact rules per family")
    ap.add_argument("--prefixes", type=int, default=10_000, help="source prefixes, both families")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--cases", default="", metavar="TEXT",
                    help="only the cases whose name contains TEXT (e.g. 'drop', 'IPv4'); default all")
    ap.add_argument("--hosts-first", action="store_true",
                    help="write the host rules the drop cases hit before the others (see fill_xdpguard)")
    args = ap.parse_args()
    if args.exact_rules < 2 or args.prefixes < 40:
        print("xdp_bench: --exact-rules must be >= 2 and --prefixes >= 40", file=sys.stderr)
        return 2

    pin_dir = f"/sys/fs/bpf/xdpguard-bench-{uuid.uuid4().hex[:8]}"
    # rings large enough for every event of one run, so "emitting" never hits the full-ring path
    ring_pages = 1 << max(4, (args.repeat * 64 // 4096 - 1).bit_length())
    perf_pages = 1 << max(4, (args.repeat * PERF_RECORD // 4096 - 1).bit_length())
    t0 = time.monotonic()
    bare, bare_fd = loader.compile_program(text=BARE)
    ref, ref_fd = loader.compile_program(text=REFERENCE.read_text())
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(ring_pages=ring_pages))
    fd = loader.prog_fd(pin_dir)
    dp = Datapath.open(pin_dir)
    ring = RingReader(pin_dir)
    ref_lost = [0]
    # a reader woken once per run, like xdpguard's ring buffer (which wakes a reader only when it
    # has caught up): BCC's default, a wakeup per event, costs ~3 us per event on this VM
    ref[b"events"].open_perf_buffer(lambda cpu, data, size: None, page_cnt=perf_pages,
                                    lost_cb=lambda n: ref_lost.__setitem__(0, ref_lost[0] + n),
                                    wakeup_events=args.repeat)
    try:
        print(f"loaded 3 programs in {time.monotonic() - t0:.1f} s; filling maps...", file=sys.stderr)
        t0 = time.monotonic()
        fill_reference(ref, args.exact_rules)
        fill_xdpguard(dp, args.exact_rules, args.prefixes, args.hosts_first)
        print(f"{args.exact_rules} exact rules per family, {args.prefixes} prefixes, 1 limit in "
              f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
        print(f"measured host rules: {where_hosts(dp, args.prefixes)}", file=sys.stderr)
        rows, refs = run_cases(args, fd, bare_fd, ref_fd, dp, ring, ref)
        lost = dp.stats()["events_lost"]
    finally:
        ring.close()
        dp.close()
        os.close(fd)
        loader.unload_all(pin_dir)
        bare.cleanup()
        ref.cleanup()
    report(args, rows, refs, lost, ref_lost[0])
    return 0


def run_cases(args, fd, bare_fd, ref_fd, dp, ring, ref):
    """Every case in interleaved rounds: [(name, ns, bare ns, reference ns, ratio, goal)] and the
    reference's own {"match": [ns...], "miss": [ns...]} over all rounds."""
    hit = args.exact_rules // 2
    n = args.prefixes
    ref_match = frame(exact_src(hit, False), "10.9.9.9", 1000 + hit % 50000, 80)
    ref_miss = frame("10.1.1.1", "10.2.2.2", 1234, 443)
    v6_miss = frame("2001:db8:1::1", "2001:db8:2::2", 1234, 443)
    cases = [  # name, frame, verdict, sample rate, reference case, goal (x reference)
        ("source /32 drop (IPv4)", frame(prefix_hit(n, False, 32), "10.9.9.9", 5555, 80), DROP, 0, "match", 1.0),
        ("source /128 drop (IPv6)", frame(prefix_hit(n, True, 128), "2001:db8:9::9", 5555, 80), DROP, 0, "match", 1.0),
        ("exact 5-tuple drop (IPv4)", ref_match, DROP, 0, "match", 1.1),
        ("exact 5-tuple drop (IPv6)", frame(exact_src(hit, True), "2001:db8:9::9", 1000 + hit % 50000, 80),
         DROP, 0, "match", 1.1),
        ("source /32 drop (IPv4, rule with TTL)", frame(TTL_HOST, "10.9.9.9", 5555, 80), DROP, 0, "match", 1.0),
        ("exact 5-tuple drop (IPv4, rule with TTL)", frame(*TTL_FLOW), DROP, 0, "match", 1.1),
        ("source /24 drop (IPv4)", frame(prefix_hit(n, False, 24), "10.9.9.9", 5555, 80), DROP, 0, "match", 1.5),
        ("source /64 drop (IPv6)", frame(prefix_hit(n, True, 64), "2001:db8:9::9", 5555, 80), DROP, 0, "match", 1.5),
        # 10.1.1.1 has no rule; 2001:db8:1::1 is exact rule 1's source (its src_filter slot is
        # taken, so the exact lookups run and miss): the last two cases are the other way round
        ("unmatched, event emitted (IPv4)", ref_miss, PASS, 1, "miss", 1.0),
        ("unmatched, event emitted (IPv6, src has exact rules)", v6_miss, PASS, 1, "miss", 1.0),
        ("unmatched, sampling off (IPv4)", ref_miss, PASS, 0, "miss", 0.8),
        ("unmatched, sampling off (IPv6, src has exact rules)", v6_miss, PASS, 0, "miss", 0.8),
        ("unmatched, event emitted (IPv4, src has exact rules)",
         frame(exact_src(hit, False), "10.2.2.2", 1234, 443), PASS, 1, "miss", 1.0),
        ("unmatched, event emitted (IPv6)", frame("2001:db8:5::1", "2001:db8:2::2", 1234, 443), PASS, 1, "miss", 1.0),
        ("destination limit, over rate (IPv4)", frame("10.1.1.1", "10.7.7.7", 5555, 80), DROP, 0, "match", None),
    ]
    cases = [c for c in cases if args.cases in c[0]]
    ref_frames = {"match": (ref_match, DROP), "miss": (ref_miss, PASS)}
    refs = {"match": [], "miss": []}

    def drain():
        while ring.poll(0):
            pass
        ref.perf_buffer_consume()

    rows = []
    for name, pkt, expect, rate, which, goal in cases:
        dp.set_sample_rate(rate)
        drain()
        rounds = []
        for _ in range(args.runs):
            b = measure(bare_fd, pkt, args.repeat)
            r = measure(ref_fd, ref_frames[which][0], args.repeat, ref_frames[which][1])
            ns = measure(fd, pkt, args.repeat, expect)
            drain()  # so neither ring ever fills
            rounds.append((ns, b, r))
            refs[which].append(r)
        med = lambda i: statistics.median(x[i] for x in rounds)  # noqa: E731
        rows.append((name, med(0), med(1), med(2), statistics.median(x[0] / x[2] for x in rounds), goal))
    return rows, refs


def report(args, rows, refs, lost: int, ref_lost: int) -> None:
    """Print the reference figures and the table (markdown with --markdown)."""
    print(f"repeat {args.repeat}, median of {args.runs} interleaved rounds per case (ratios: median of "
          f"per-round ratios), kernel {os.uname().release}, {os.cpu_count()} CPUs, events lost: "
          f"xdpguard {lost}, reference {ref_lost}")
    med = {k: f"{statistics.median(v):.1f} ns" if v else "not run" for k, v in refs.items()}
    print(f"reference (bench/reference_xdp.c, {args.exact_rules} IPv4 rules): match drop "
          f"{med['match']}, miss with perf event {med['miss']} (medians over every round)")
    fmt = (lambda *c: "| " + " | ".join(c) + " |") if args.markdown else \
        (lambda *c: f"{c[0]:<54} {c[1]:>7} {c[2]:>6} {c[3]:>22} {c[4]:>12} {c[5]:>5}")
    print(fmt("case", "ns/pkt", "bare ns", "reference ns (case)", "x reference", "goal"))
    if args.markdown:
        print("|---|---:|---:|---:|---:|---:|")
    for name, ns, b, r, ratio, goal in rows:
        which = "miss+event" if name.startswith("unmatched") else "match drop"
        print(fmt(name, f"{ns:.1f}", f"{b:.1f}", f"{r:.1f} ({which})", f"{ratio:.3f}",
                  "-" if goal is None else f"{goal:.1f}"))


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("xdp_bench", main)
