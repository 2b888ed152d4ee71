#!/usr/bin/env python3
"""Fuzz the XDP program with BPF_PROG_TEST_RUN: random, mutated, truncated and oversized frames
against a rule set of every scope, each answer checked against the reference model
(tests/support/xdpfuzz.py). Stops at the first disagreement and prints the frame in hex.

usage (root, bpffs mounted, from the repository root):
  .venv/bin/python bench/fuzz_xdp.py                     # 1,000,000 frames, seed 1
  .venv/bin/python bench/fuzz_xdp.py -n 5000000 --seed 42
  .venv/bin/python bench/fuzz_xdp.py --no-events         # skip the ring-event comparison (faster)
  .venv/bin/python bench/fuzz_xdp.py --json              # one JSON line of results

Figures of a run go to docs/benchmarks.md ("## Fuzz").
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.xdpfuzz import Frames, FuzzEnv, run_fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--frames", type=int, default=1_000_000, help="frames to run (default 1e6)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--chunk", type=int, default=50_000, help="frames per progress line")
    ap.add_argument("--no-events", action="store_true", help="do not compare sampled ring events")
    ap.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = ap.parse_args()

    env = FuzzEnv()
    frames = Frames(args.seed)
    total: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        done = 0
        while done < args.frames:
            n = min(args.chunk, args.frames - done)
            tally = run_fuzz(env, frames, n, check_events=not args.no_events)
            for k, v in tally.items():
                total[k] = total.get(k, 0) + v
            done += n
            if not args.json:
                el = time.perf_counter() - t0
                print(f"{done:>10} frames  {done / el:8.0f}/s  drop {total['drop']}  parse_fail "
                      f"{total['fail']}  non_ip {total['non_ip']}  events {total['events']}",
                      flush=True)
    except AssertionError as exc:
        print(f"DISAGREEMENT after {total.get('frames', 0)} checked frames: {exc}", file=sys.stderr)
        return 1
    finally:
        env.close()
    elapsed = time.perf_counter() - t0
    result = {"frames": total["frames"], "seed": args.seed, "seconds": round(elapsed, 1),
              "frames_per_s": round(total["frames"] / elapsed), "dropped": total["drop"],
              "parse_fail": total["fail"], "non_ip": total["non_ip"],
              "unmatched": total["unmatched"], "events_checked": total["events"],
              "disagreements": 0, "kernel": platform.release()}
    print(json.dumps(result) if args.json else
          f"OK: {result['frames']} frames, 0 disagreements, {result['dropped']} drops all "
          f"explained by a rule, {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("fuzz_xdp", main)
