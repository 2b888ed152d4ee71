#!/usr/bin/env python3
"""Milliseconds per Datapath.occupancy() and Datapath.rules() call (what the enforcer runs after
every applied verdict and in its 1 s sweep) on a loaded xdpguard program at its default map sizes,
with 0 rules and then with --hosts host rules (half IPv4 /32, half IPv6 /128; on a build with the
inline host slot (src_host_slot) most of them sit in slots, the rest in the src_host4 /
src_host6 hashes). Runs on any tree's services/ (main or a branch): only the public Datapath API.

On a build with the slot directory it also times `_host_slots(every=True)`: a read of all 4,096
slots' per-CPU copies, what each occupancy() and rules() call cost before the directory.

examples:
  .venv/bin/python bench/rule_reads.py                   # 0 and 2,000 host rules
  .venv/bin/python bench/rule_reads.py --hosts 4000 --repeat 50
"""
from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.dataplane import bpfsys, loader  # noqa: E402
from services.dataplane.datapath import Datapath  # noqa: E402
from services.records.rules import Rule  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """(median, min, max) ms of `repeat` calls of fn."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out), min(out), max(out)


def row(what: str, n: int, got: tuple[float, float, float]) -> None:
    print(f"| {what} | {n:,} | {got[0]:.3f} | {got[1]:.3f}-{got[2]:.3f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=2000, help="host rules of the second case")
    ap.add_argument("--repeat", type=int, default=30, help="calls timed per figure")
    args = ap.parse_args()
    pin_dir = f"/sys/fs/bpf/xdpguard-bench-{uuid.uuid4().hex[:8]}"
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes())
    dp = Datapath.open(pin_dir)
    try:
        print(f"possible CPUs: {bpfsys.possible_cpus()}; tree: {Path(__file__).resolve().parents[1]}")
        print("| call | host rules | median ms | min-max ms |\n|---|---:|---:|---:|")
        for n in (0, args.hosts):
            v4 = ipaddress.IPv4Address("100.64.0.0")
            v6 = ipaddress.IPv6Address("2a00:1::")
            for i in range(n // 2):
                dp.add_rule(Rule("src_prefix", "drop", src=f"{v4 + i * 7}/32"))
                dp.add_rule(Rule("src_prefix", "drop", src=f"{v6 + (i << 64)}/128"))
            assert len(dp.rules()) == n // 2 * 2
            occ = dp.occupancy()
            where = ", ".join(f"{k} {occ[k][0]}" for k in ("src_host_slot", "src_host4", "src_host6")
                              if k in occ)
            print(f"<!-- {n // 2 * 2} host rules: {where} -->", flush=True)
            row("occupancy()", n // 2 * 2, timed(dp.occupancy, args.repeat))
            row("rules()", n // 2 * 2, timed(dp.rules, args.repeat))
            if hasattr(dp, "_slot_keys"):
                row("every slot read (`_host_slots(every=True)`)", n // 2 * 2,
                    timed(lambda: dp._host_slots(every=True), max(3, args.repeat // 5)))
    finally:
        dp.close()
        loader.unload_all(pin_dir)
    return 0


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("rule_reads", main)
