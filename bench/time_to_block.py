#!/usr/bin/env python3
"""Time to block: from the first attack packet to the first packet dropped by the rule the
pipeline writes, p50/p95 over --runs floods, with default settings of every service.

One stack (services/manager/demo_stack.py: attacker and victim namespaces, XDP on the victim's
veth, capture + one scorer worker + enforcer as processes, real Kafka). Each run floods the
victim (hping3 SYN flood, --pps) from a NEW source address of the attacker namespace, so earlier
rules do not interfere. t0 is taken just before hping3 is started (so process start-up counts
against us); "rule" is the enforcer's install time (the rule's created_ns); "dropped" is the
first poll (every 10 ms) that sees the rule's hit counter above 0.

examples:
  .venv/bin/python bench/time_to_block.py              # 10 runs
  .venv/bin/python bench/time_to_block.py --runs 20 --pps 5000
"""
from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.manager.demo_stack import Stack, http_get, stop_traffic  # noqa: E402


def first_drop(stack: Stack, src: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = [s for s in stack.rules_hitting(src) if s.hits > 0 and s.rule.scope.value != "dst_limit"]
        if hit:
            return time.time_ns(), min(s.rule.created_ns for s in hit)
        time.sleep(0.01)
    return None, None


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--pps", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--gap", type=float, default=2.0, help="quiet seconds between runs")
    ap.add_argument("--verbose", action="store_true", help="print the scorer's /healthz after each run")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: no pins left
    stack = Stack()
    blocked, installed, missed = [], [], 0
    try:
        stack.start(say=lambda m: print(m, flush=True))
        base = stack.topo.attacker_ip.rsplit(".", 1)[0]
        time.sleep(2)
        for i in range(args.runs):
            src = f"{base}.{100 + i}"
            stack.add_attacker_address(src)
            t0 = time.time_ns()
            flood = stack.syn_flood(src, pps=args.pps)
            try:
                drop_ns, rule_ns = first_drop(stack, src, args.timeout)
            finally:
                stop_traffic(flood)
            if drop_ns is None:
                missed += 1
                print(f"run {i + 1}: {src} not blocked within {args.timeout:.0f} s", flush=True)
            else:
                blocked.append((drop_ns - t0) / 1e9)
                installed.append((rule_ns - t0) / 1e9)
                print(f"run {i + 1}: {src} rule after {installed[-1]:.2f} s, first drop seen "
                      f"after {blocked[-1]:.2f} s", flush=True)
            if args.verbose:
                print("  scorer:", http_get(stack.proc("scorer").port, "/healthz")[1], flush=True)
            time.sleep(args.gap)
    finally:
        stack.stop()
    if not blocked:
        print("no run was blocked")
        return 1
    print()
    print(f"{len(blocked)} of {args.runs} floods blocked ({missed} not within {args.timeout:.0f} s); "
          f"hping3 SYN flood at {args.pps} packets/s; default settings (1 s windows)")
    print("| measure | p50 | p95 | min | max | mean |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, v in (("first attack packet -> rule installed (s)", installed),
                    ("first attack packet -> first packet dropped (s)", blocked)):
        print(f"| {name} | {pct(v, .5):.2f} | {pct(v, .95):.2f} | {min(v):.2f} | {max(v):.2f} | "
              f"{statistics.mean(v):.2f} |")
    return 0


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("time_to_block", main)
