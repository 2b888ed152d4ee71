#!/usr/bin/env python3
"""Stage 1 of the scorer alone, in process: packet records decoded and folded into
`windows.SourcePartition` (and, with --close, every window closed into flow chunks), no Kafka or
faust. Measures the fold the way `bench/scorer_bench.py` feeds it (its traffic, its records),
for profiling (py-spy) and for comparing trees without a broker.

examples:
  .venv/bin/python bench/fold_bench.py                         # 400k events, 10% flood
  .venv/bin/python bench/fold_bench.py --flood 0.5 --close
  py-spy record -o fold.svg -- .venv/bin/python bench/fold_bench.py --repeat 5
  cd ../old-tree && ../wt/.venv/bin/python ../wt/bench/fold_bench.py --fold columnar  # old tree's stage 1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# the tree to measure: the current directory's when it is one (an old tree in a worktree),
# else this file's
sys.path.insert(0, str(Path.cwd() if (Path.cwd() / "services/scorer").is_dir()
                       else Path(__file__).resolve().parents[1]))

from bench.scorer_bench import encode_records, traffic, traffic_arguments  # noqa: E402
from services.scorer.windows import SourcePartition  # noqa: E402
from services.wire.codec import PacketColumns, decode_packet_columns  # noqa: E402

W = 10**9


def run(records: list[tuple[int, PacketColumns]], partitions: int, close: bool,
        kind=SourcePartition) -> tuple[float, float, int]:
    """(fold seconds, close seconds, flows) of decoded `records` on fresh partitions of
    `kind`."""
    parts = {p: kind(p, W, 0, lambda: 0.0) for p in range(partitions)}
    t0 = time.perf_counter()
    for off, (p, cols) in enumerate(records):
        parts[p].add(off, cols)
    t1 = time.perf_counter()
    flows = sum(len(f) for part in parts.values() for f in part.windows.values())
    if close:
        for part in parts.values():
            for ws in sorted(part.windows):
                part.close(ws, partitions)
    return t1 - t0, time.perf_counter() - t1, flows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    traffic_arguments(ap)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--close", action="store_true", help="also close every window (flow chunks)")
    ap.add_argument("--fold", choices=("both", "columnar", "reference"), default="both",
                    help="which fold: SourcePartition.add, the per-event reference, or both")
    a = ap.parse_args()
    records = encode_records(traffic(a.events, a.rate, a.flood, a.sources), a.batch, a.partitions)
    t0 = time.perf_counter()
    decoded = [(p, decode_packet_columns(data)) for p, data in records]
    decode = time.perf_counter() - t0
    print(f"decode {a.events / decode:,.0f} events/s ({decode:.3f} s)")
    kinds = {"columnar": SourcePartition}
    if a.fold != "columnar":  # the per-event reference (a tree before issue 17 has none)
        from tests.support.fold_reference import ReferencePartition
        kinds["reference"] = ReferencePartition
    names = list(kinds) if a.fold == "both" else [a.fold]
    for _ in range(a.repeat):
        for name in names:
            fold, closing, flows = run(decoded, a.partitions, a.close, kinds[name])
            line = f"{name:9} fold {a.events / fold:,.0f} events/s ({fold:.3f} s, {flows} flows)"
            if a.close:
                line += (f"; close {closing:.3f} s; decode+fold+close "
                         f"{a.events / (decode + fold + closing):,.0f} events/s")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
