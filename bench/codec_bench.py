#!/usr/bin/env python3
"""Packet codec speed on one core: events/s encoded and decoded per record size. Encoding is the
reference encoder from Packet objects (tests/support/packet_records.py); the capture encodes
numpy rows instead (bench/capture_bench.py measures that path).

examples:
  .venv/bin/python bench/codec_bench.py
  .venv/bin/python bench/codec_bench.py --events 500000 --batches 1 64 512
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.wire.codec import decode_packet_columns, decode_packets  # noqa: E402
from services.records.packet import Packet  # noqa: E402
from tests.support.packet_records import encode_packets  # noqa: E402


def rate(fn, items, n_events: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - t)
    return n_events / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256, 512])
    args = ap.parse_args()
    t0 = time.time_ns()
    packets = [Packet(t0 + i * 1000, f"10.{i % 7}.{(i // 7) % 250}.{i % 200 + 1}", "192.168.1.1",
                      1024 + i % 60000, 80, 6, 0x02, 60, 3, 1, "node-a", i)
               for i in range(args.events)]
    print("| events/record | encode events/s | decode to columns events/s | decode to Packet events/s | bytes/event |")
    print("|---|---|---|---|---|")
    for b in args.batches:
        groups = [packets[i:i + b] for i in range(0, len(packets), b)]
        records = [encode_packets(g) for g in groups]
        enc = rate(encode_packets, groups, len(packets))
        dec_cols = rate(decode_packet_columns, records, len(packets))
        dec = rate(decode_packets, records, len(packets))
        size = sum(map(len, records)) / len(packets)
        print(f"| {b} | {enc:,.0f} | {dec_cols:,.0f} | {dec:,.0f} | {size:.1f} |")


if __name__ == "__main__":
    main()
