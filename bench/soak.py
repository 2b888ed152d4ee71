#!/usr/bin/env python3
"""Soak benchmark: N minutes of mixed benign and attack traffic through the whole pipeline
(attacker/victim namespaces, XDP on the victim's veth, capture, one scorer worker, enforcer,
Kafka), reporting each service's memory (RSS) at start, peak and end, events lost on the way,
rules applied, and what happened to the benign traffic. Not a CI test.

Traffic: a benign client pings the victim every 200 ms and fetches a page every 100 ms from a
web server in the victim namespace, all the time. Attacks rotate, each `--attack` seconds with
`--gap` quiet seconds between: a SYN flood from a fixed address, a spoofed SYN flood (random
source per packet), a UDP flood from a second address and a port scan from a third.

usage (root; the broker must be up, e.g. scripts/kafka start):
  .venv/bin/python bench/soak.py                    # 10 minutes
  .venv/bin/python bench/soak.py --minutes 2 --pps 1000
  .venv/bin/python bench/soak.py --json soak.json   # also write the results as JSON

Figures of a run go to docs/benchmarks.md ("## Soak").
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.records.packet import PROTO_ICMP, PROTO_TCP  # noqa: E402
from services.manager.demo_stack import (Stack, http_counts, metric, stop_traffic,  # noqa: E402
                                         transmitted_received)

SERVICES = ("capture", "scorer", "enforcer")
WEB_PORT = 8080  # the benign client's fetches (the floods go to port 80)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (faust workers may fork helpers)."""
    total = rss_mib(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return total + sum(tree_rss_mib(int(k)) for k in kids)


class Attacks:
    """Rotating attacks from the attacker namespace."""

    def __init__(self, stack: Stack, pps: int) -> None:
        self.stack, self.pps = stack, pps
        t = stack.topo
        base = t.attacker_ip.rsplit(".", 1)[0]
        self.udp_src, self.scan_src = f"{base}.67", f"{base}.68"
        stack.add_attacker_address(self.udp_src)
        stack.add_attacker_address(self.scan_src)
        self.kinds = ("syn_flood", "spoofed_syn", "udp_flood", "port_scan")
        self.sent = {k: 0 for k in self.kinds}

    def start(self, i: int) -> tuple[str, subprocess.Popen]:
        kind = self.kinds[i % len(self.kinds)]
        t, u = self.stack.topo, f"u{max(1, 1_000_000 // self.pps)}"
        if kind == "syn_flood":
            return kind, self.stack.syn_flood(t.attacker_ip, pps=self.pps)
        args = {"spoofed_syn": ["-S", "-p", "80", "--rand-source"],
                "udp_flood": ["--udp", "-p", "53", "-a", self.udp_src],
                "port_scan": ["-S", "-p", "++1", "-a", self.scan_src]}[kind]
        interval = u if kind != "port_scan" else "u5000"  # a scan is slow: 200 ports/s
        return kind, t.popen(t.attacker, "hping3", "-q", *args, "-i", interval, t.victim_ip,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, kind: str, p: subprocess.Popen) -> None:
        self.sent[kind] += transmitted_received(stop_traffic(p))[0]


def snapshot(stack: Stack) -> dict:
    snap = {"t": time.time()}
    for name in SERVICES:
        p = stack.proc(name)
        snap[f"{name}_rss_mib"] = round(tree_rss_mib(p.popen.pid), 1)
        snap[f"{name}_alive"] = p.popen.poll() is None
    return snap


def counters(stack: Stack) -> dict:
    cap, sco, enf = (stack.metrics(n) for n in SERVICES)
    c = {n: metric(cap, f"xdpguard_capture_{n}") for n in (
        "events_read_total", "ring_lost_total", "queue_overflow_total", "events_accepted_total",
        "events_refused_total", "events_published_total", "sample_rate", "buffered", "next_seq")}
    c.update({n: metric(sco, n) for n in ("xdpguard_scorer_events_total", "xdpguard_scorer_records_total",
                                          "xdpguard_scorer_late_events_total", "xdpguard_scorer_flows_scored_total",
                                          "xdpguard_scorer_windows_scored_total", "xdpguard_scorer_verdicts_total")})
    c.update({n: metric(enf, f"xdpguard_enforcer_{n}") for n in (
        "verdicts_total", "rules_applied_total", "rules_refreshed_total", "rules_refused_total",
        "rules_evicted_total", "rules_expired_total", "deadletters_total", "model_rules")})
    from services.dataplane.datapath import Datapath
    with Datapath.open(stack.pin_dir) as dp:
        k = dp.stats()
        c["kernel"] = {n: k[n] for n in ("seen", "drop_exact", "drop_prefix", "drop_limit",
                                         "unmatched", "events", "events_lost")}
        c["rules_installed"] = len(dp.rules())
    return c


def drain(stack: Stack, quiet_s: float = 5.0, limit_s: float = 90.0) -> None:
    """Wait until the scorer has consumed what capture published (its counters stop moving)."""
    last, still, deadline = None, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        page = stack.metrics("scorer")
        now = (metric(page, "xdpguard_scorer_records_total"), metric(page, "xdpguard_scorer_events_total"))
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still >= quiet_s:
            return
        time.sleep(0.5)


def covers_client(rule, client: str) -> bool:
    """Whether a rule listed for the client's address (Stack.rules_hitting) matches its traffic:
    source and flow rules on it do; a destination limit on the victim only when it covers one of
    the client's packets (Rule.covers): an echo request, or a packet of a fetch from WEB_PORT
    (SYN, ACK, PSH+ACK, FIN+ACK from an ephemeral port)."""
    if rule.scope.value != "dst_limit":
        return True
    packets = [(0, 0, PROTO_ICMP, 0)] + [(40000, WEB_PORT, PROTO_TCP, flags)
                                         for flags in (0x02, 0x10, 0x18, 0x11)]
    return any(rule.covers(client, rule.dst, *p) for p in packets)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 3)[3],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    ap.add_argument("--pps", type=int, default=2000, help="flood packets per second (default 2000)")
    ap.add_argument("--attack", type=float, default=30.0, help="seconds per attack (default 30)")
    ap.add_argument("--gap", type=float, default=15.0, help="quiet seconds between attacks (default 15)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the services' logs (their folder is printed at the end)")
    args = ap.parse_args()

    stack = Stack(keep_logs=args.keep_logs)
    samples, result = [], {}
    ping = http_server = http_client = None
    current = None
    try:
        stack.start(say=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
        attacks = Attacks(stack, args.pps)
        ping = stack.benign_ping()
        http_server, http_client = stack.benign_http(port=WEB_PORT)
        time.sleep(2)
        start = snapshot(stack)
        samples.append(start)
        t0 = time.monotonic()
        end_at = t0 + args.minutes * 60
        i, next_switch, next_sample, attacking = 0, t0 + args.gap, t0 + args.every, False
        while time.monotonic() < end_at:
            now = time.monotonic()
            if now >= next_switch:
                if attacking:
                    attacks.stop(*current)
                    current, attacking = None, False
                    next_switch = now + args.gap
                else:
                    current, attacking = attacks.start(i), True
                    print(f"[{time.strftime('%H:%M:%S')}] attack {current[0]}", flush=True)
                    i += 1
                    next_switch = now + args.attack
            if now >= next_sample:
                s = snapshot(stack)
                samples.append(s)
                next_sample = now + args.every
                print(f"[{time.strftime('%H:%M:%S')}] rss capture {s['capture_rss_mib']} scorer "
                      f"{s['scorer_rss_mib']} enforcer {s['enforcer_rss_mib']} MiB", flush=True)
                if not all(s[f"{n}_alive"] for n in SERVICES):
                    print("a service died; stopping", flush=True)
                    break
            time.sleep(0.2)
        if current is not None:
            attacks.stop(*current)
            current = None
        drain(stack)
        benign_rules = [{"rule": r.rule.key(), "origin": r.rule.origin.value, "hits": r.hits,
                         "dropped": r.dropped} for r in stack.rules_hitting(stack.topo.client_ip)
                        if covers_client(r.rule, stack.topo.client_ip)]
        end = snapshot(stack)
        samples.append(end)
        c = counters(stack)
        ping_sent, ping_ok = transmitted_received(stop_traffic(ping))
        http_sent, http_ok = http_counts(stop_traffic(http_client))
        ping = http_client = None
        lost = c["ring_lost_total"] + c["queue_overflow_total"] + c["events_refused_total"]
        result = {
            "minutes": round((time.monotonic() - t0) / 60, 2), "pps": args.pps,
            "rss_mib": {n: {"start": start[f"{n}_rss_mib"], "end": end[f"{n}_rss_mib"],
                            "peak": max(s[f"{n}_rss_mib"] for s in samples)} for n in SERVICES},
            "events": {"kernel_sampled": c["kernel"]["events"],
                       "kernel_ring_lost": c["kernel"]["events_lost"],
                       "capture_read": c["events_read_total"], "capture_lost_counted": lost,
                       "capture_published": c["events_published_total"],
                       "capture_unacknowledged": c["buffered"],
                       "scorer_consumed": c["xdpguard_scorer_events_total"],
                       "scorer_late": c["xdpguard_scorer_late_events_total"],
                       # late events are counted (dropped after their window closed)
                       "lost_uncounted": c["events_published_total"] - c["xdpguard_scorer_events_total"]
                       - c["xdpguard_scorer_late_events_total"]},
            "rules": {"verdicts": c["verdicts_total"], "applied": c["rules_applied_total"],
                      "refreshed": c["rules_refreshed_total"], "refused": c["rules_refused_total"],
                      "evicted": c["rules_evicted_total"], "expired": c["rules_expired_total"],
                      "installed_at_end": c["rules_installed"]},
            "kernel": c["kernel"],
            "attacks_sent": attacks.sent,
            "rules_matching_benign_client": benign_rules,
            "benign": {"pings": ping_sent, "pings_answered": ping_ok, "http": http_sent,
                       "http_answered": http_ok},
            "all_alive": all(end[f"{n}_alive"] for n in SERVICES),
            "samples": samples,
        }
    finally:
        for p in (current[1] if current else None, ping, http_client, http_server):
            if p is not None:
                stop_traffic(p)
        stack.stop()
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.keep_logs:
        print(f"service logs kept in {stack.tmp}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result.get("all_alive") else 1


if __name__ == "__main__":
    from services.common.errors import exit_on_error
    exit_on_error("soak", main)
