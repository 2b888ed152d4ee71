"""`xdpguard monitor`: append sampled unmatched packets to a JSON-lines log in the original tool's
format (docs/origins.md).

One object per line with its keys in its order: src_ip, dst_ip, src_port, dst_port,
proto, tcp_flags, len (whole frame), timestamp (ns since boot, the kernel's monotonic clock).
The first SIGINT/SIGTERM stops after the current poll; lost events are reported on stderr.

A BPF ring buffer has one consumer position: two readers split the events between them. So
`monitor` refuses to start while another process (the capture service) reads the ring; what the
capture publishes is in Kafka (`xdpguard topics tail packets --follow`). `--sample N` sets the
kernel's 1-in-N rate for the monitor's run only: the rate found is put back when it ends.
"""
from __future__ import annotations

import json
import signal
import sys
import time

from services.common.errors import ConfigError, NotLoaded
from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.dataplane.ringbuf import RingReader
from services.dataplane.ringowners import describe, ring_readers
from services.manager.load_cmd import pin_dir
from services.offline.seedlog import entry_from_packet


def register(sub) -> None:
    m = sub.add_parser("monitor", help="log sampled unmatched packets as JSON lines (the "
                       "original tool's format)")
    m.add_argument("--file", default="firewall_log.json", help="output file, appended (default "
                   "firewall_log.json; - for stdout)")
    m.add_argument("--sample", type=int, help="set the kernel's sampling to 1 in N (0 = off) first")
    m.add_argument("--duration", type=float, help="stop after this many seconds")
    m.add_argument("--count", type=int, help="stop after this many packets")
    m.set_defaults(func=cmd_monitor)


def cmd_monitor(args) -> int:
    if args.sample is not None and args.sample < 0:
        raise ConfigError("--sample must be 0 (off) or N for 1 in N")
    for name in ("count", "duration"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be above 0")
    if not loader.is_loaded(pin_dir()):
        raise NotLoaded(f"no xdpguard program pinned in {pin_dir()}; run `xdpguard load -i IFACE`")
    others = ring_readers(pin_dir())
    if others:
        raise ConfigError(f"the ring buffer of {pin_dir()} is read by {describe(others)}: a "
                          "second reader would take events from it; see what capture publishes "
                          "with `xdpguard topics tail packets --follow`, or stop it first")
    try:
        out = sys.stdout if args.file == "-" else open(args.file, "a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.file}: {exc.strerror}") from None
    try:
        return _monitor(args, out)
    finally:
        if out is not sys.stdout:
            out.close()


def _monitor(args, out) -> int:
    """The read loop: sampling set (and put back), signals handled, counts reported."""
    restore_rate = None
    if args.sample is not None:
        with Datapath.open(pin_dir()) as dp:
            restore_rate = dp.sample_rate()
            dp.set_sample_rate(args.sample)
    stop = {"n": 0}

    def on_signal(signum, _frame):
        stop["n"] += 1
        if stop["n"] > 1:  # a second signal forces the exit
            raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    written, reported_lost = 0, 0
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        with RingReader(pin_dir()) as reader:
            print(f"monitoring {pin_dir()} -> {args.file} (Ctrl-C to stop)", file=sys.stderr)
            while not stop["n"]:
                if deadline and time.monotonic() >= deadline:
                    break
                pkts = reader.poll(200)
                if args.count:
                    pkts = pkts[:max(0, args.count - written)]
                for pkt, raw in zip(pkts, reader.last_raw_ts()):
                    out.write(json.dumps(entry_from_packet(pkt, raw)) + "\n")
                written += len(pkts)
                out.flush()
                lost = reader.lost()
                if lost > reported_lost:
                    print(f"warning: {lost - reported_lost} events lost (ring buffer full)",
                          file=sys.stderr)
                    reported_lost = lost
                if args.count and written >= args.count:
                    break
            lost = reader.lost()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if restore_rate is not None:
            with Datapath.open(pin_dir()) as dp:
                dp.set_sample_rate(restore_rate)
    print(f"{written} packets written to {args.file}, {lost} events lost"
          + (f"; sampling back to 1-in-{restore_rate}" if restore_rate is not None else ""),
          file=sys.stderr)
    return 0
