"""`xdpguard demo`: the end-to-end demonstration run by scripts/demo (the broker must be up).

An attacker and a victim namespace joined by a veth, XDP on the victim's end, capture, one scorer
worker and the enforcer (demo_stack.py). A benign client pings the victim throughout; after a
quiet period an hping3 SYN flood starts from another address of the attacker namespace. The demo
waits for the rule the pipeline writes, keeps the flood going a little, and prints when the
attack started, when it was blocked, and how many benign packets were dropped. Ctrl-C or
SIGTERM at any point still removes everything it created.
"""
from __future__ import annotations

import signal
import sys
import time

from services.common.errors import ConfigError

from .demo_stack import Stack, metric, stop_traffic, transmitted_received

EPILOG = """examples:
  scripts/demo                         # starts the broker too
  xdpguard demo --pps 3000 --after 4   # a heavier flood, 4 s after the flood is blocked
"""


def register(sub) -> None:
    import argparse
    p = sub.add_parser("demo", help="run the end-to-end demo (broker must be up; see scripts/demo)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pps", type=int, default=2000, help="SYN flood packets per second")
    p.add_argument("--quiet", type=float, default=3.0, help="benign-only seconds before the attack")
    p.add_argument("--after", type=float, default=3.0, help="seconds to keep flooding once blocked")
    p.add_argument("--timeout", type=float, default=30.0, help="give up if not blocked by then")
    p.add_argument("--keep-logs", action="store_true", help="keep the services' logs (path printed)")
    p.set_defaults(func=cmd_demo)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_demo(args) -> int:
    if args.pps < 1 or args.quiet < 0 or args.after < 0 or args.timeout <= 0:
        raise ConfigError("--pps must be at least 1, --quiet and --after 0 or more, --timeout "
                          "above 0")
    old = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    t_start = time.monotonic()
    stack = Stack(keep_logs=args.keep_logs)
    ok = False
    try:
        stack.start(say=_say)
        ok = run_demo(stack, args)
    except KeyboardInterrupt:
        _say("interrupted: cleaning up")
    finally:
        if stack.tmp is not None and (args.keep_logs or not ok):
            stack.keep_logs = True
            _say(f"service logs kept in {stack.tmp}")
        codes = stack.stop()
        signal.signal(signal.SIGTERM, old)
        _say(f"cleaned up (namespaces, XDP, pins, topics, processes; exit codes "
             f"{', '.join(f'{k} {v}' for k, v in codes.items()) or 'n/a'}) in "
             f"{time.monotonic() - t_start:.1f} s total")
    return 0 if ok else 1


def run_demo(stack: Stack, args) -> bool:
    topo = stack.topo
    ping = stack.benign_ping()
    flood = None
    try:
        _say(f"benign: {topo.client_ip} pings {topo.victim_ip} every 200 ms; "
             f"{args.quiet:.0f} s of benign traffic only")
        time.sleep(args.quiet)
        attack_ns = time.time_ns()
        flood = stack.syn_flood(topo.attacker_ip, pps=args.pps)
        _say(f"attack: hping3 SYN flood {topo.attacker_ip} -> {topo.victim_ip}:80 at "
             f"{args.pps} packets/s started at {_clock(attack_ns)}")
        rule, first_drop_ns = _wait_blocked(stack, topo.attacker_ip, args.timeout)
        if rule is None:
            _say(f"NOT blocked within {args.timeout:.0f} s")
            return False
        installed = rule.rule.created_ns
        _say(f"rule installed at {_clock(installed)} (+{(installed - attack_ns) / 1e9:.2f} s): "
             f"{rule.rule.action.value} {rule.rule.key()} (origin {rule.rule.origin.value}, "
             f"expires in {(rule.rule.expires_ns - time.time_ns()) / 1e9:.0f} s)")
        _say(f"first attack packet dropped by it seen at {_clock(first_drop_ns)} "
             f"(+{(first_drop_ns - attack_ns) / 1e9:.2f} s after the attack started)")
        time.sleep(args.after)
    finally:
        flood_out = stop_traffic(flood) if flood is not None else ""
        ping_out = stop_traffic(ping)
    attack_sent = transmitted_received(flood_out)[0]
    attack_dropped = sum(s.hits for s in stack.rules_hitting(topo.attacker_ip))
    benign_sent, benign_answered = transmitted_received(ping_out)
    benign_dropped = sum(s.hits for s in stack.rules_hitting(topo.client_ip)
                         if s.rule.scope.value != "dst_limit")
    cap, enf = stack.metrics("capture"), stack.metrics("enforcer")
    print()
    print("outcome")
    print(f"  attack started        {_clock(attack_ns)}")
    print(f"  attack blocked        {_clock(first_drop_ns)}  "
          f"(time to block {(first_drop_ns - attack_ns) / 1e9:.2f} s)")
    print(f"  attack packets        {attack_sent} sent, {attack_dropped} dropped in XDP by the rule")
    print(f"  benign packets        {benign_sent} pings sent, {benign_answered} answered, "
          f"{benign_dropped} dropped by xdpguard")
    print(f"  capture               {metric(cap, 'xdpguard_capture_events_published_total'):.0f} "
          f"events published, {metric(cap, 'xdpguard_capture_ring_lost_total'):.0f} ring losses, "
          f"sampling 1-in-{metric(cap, 'xdpguard_capture_sample_rate'):.0f}")
    print(f"  enforcer              {metric(enf, 'xdpguard_enforcer_rules_applied_total'):.0f} rules "
          f"applied, {metric(enf, 'xdpguard_enforcer_rules_refused_total'):.0f} refused")
    print()
    sys.stdout.flush()
    return benign_dropped == 0


def _wait_blocked(stack: Stack, address: str, timeout: float):
    """The first rule covering `address` with hits, and when its hits were first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = [s for s in stack.rules_hitting(address) if s.hits > 0]
        if hit:
            return min(hit, key=lambda s: s.rule.created_ns), time.time_ns()
        time.sleep(0.02)
    return None, 0


def _clock(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ns / 1e9)) + f".{ns // 1_000_000 % 1000:03d}"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
