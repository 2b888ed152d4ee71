"""`xdpguard analyze`: the original tool's offline analyzer (import_firewall_rules.py, see
docs/origins.md), with xdpguard's model.

Reads a JSON-lines log in the original tool's format, aggregates 5-tuple flows over the whole log
(its order: first appearance), runs the log through the live windowing/scoring/detection
(services.offline.replay) and prints the original tool's per-flow line. Score: xdpguard's sign,
HIGHER = MORE anomalous (the original tool printed decision_function, lower = anomalous); a
flow's score is its highest over its windows. Writes the original tool's commands file shape
(`cmd, fields, features, ml_score, ml_label, action`, `result` when applied) plus `rule` and
`reason`. `--apply` adds the model's rules (drop/limit, with TTL) through
services.dataplane.datapath, never a shell; PASS entries are written but not applied: a pass rule
per normal flow allow-listed it forever (one of the original tool's weaknesses, docs/origins.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from services.common.errors import ConfigError, XdpguardError
from services.records.packet import PROTO_NAMES

EPILOG = """examples:
  xdpguard analyze --file firewall_log.json --dry-run
  xdpguard analyze --file firewall_log.json --apply          # needs a loaded program (root)
"""


def register(sub) -> None:
    p = sub.add_parser("analyze", help="score a JSON-lines log in the original tool's format per flow "
                       "and write rule commands (docs/origins.md)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", "-f", default="firewall_log.json", help="JSON-lines log in the original tool's format")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--manager", "-m", default="xdpguard", help="command named in the cmd lists")
    p.add_argument("--out-file", "-o", default="ml_firewall_commands.json", help="output JSON")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-sudo", action="store_true", help="no sudo prefix in the cmd lists")
    mode.add_argument("--dry-run", action="store_true", help="never apply; no sudo prefix")
    p.add_argument("--apply", action="store_true", help="add the model's rules to the live maps")
    p.add_argument("--pin-dir", default=None, help="pinned maps (default XDPGUARD_PIN_DIR)")
    p.add_argument("--window", type=float, default=1.0, help="window seconds (default 1)")
    p.set_defaults(func=cmd_analyze)


def manager_cmd(manager: str, fields: dict, action: str, sudo: bool) -> list[str]:
    cmd = [manager, "add", "--src", fields["src"], "--dst", fields["dst"]]
    if fields["proto"] in ("tcp", "udp"):
        if fields["sport"] != "0":
            cmd += ["--sport", fields["sport"]]
        if fields["dport"] != "0":
            cmd += ["--dport", fields["dport"]]
    cmd += ["--proto", fields["proto"], "--action", action]
    return ["sudo"] + cmd if sudo else cmd


def analyze(packets, detector, window_s: float = 1.0) -> list[dict]:
    """One entry per 5-tuple flow (the original tool's order: first appearance): key, state, score, label, rule, reason."""
    from services.detection import features as F
    from services.offline.replay import Pipeline

    flows: dict[tuple, dict] = {}
    for p in packets:
        st = flows.get(p.flow_key())
        if st is None:
            st = flows[p.flow_key()] = F.flow_new(p)
        F.flow_update(st, p)
    ordered = sorted(packets, key=lambda p: p.ts_ns)
    score: dict[tuple, float] = {}
    suggestions = []
    for w in Pipeline(detector, window_s=window_s).run(ordered):
        for k, s in zip(w.keys, w.scores):
            score[k] = max(score.get(k, float("-inf")), float(s))
        suggestions += w.suggestions
    # index the suggestions so a big log is not flows x rules: exact flows by key, host rules by
    # address, the rest (shorter prefixes) scanned
    from services.records.rules import Scope

    by_flow, by_src, by_dst, other = {}, {}, {}, []
    for sg in suggestions:
        r = sg.rule
        if r.scope is Scope.FLOW:
            by_flow.setdefault((r.src, r.dst, r.sport, r.dport, r.proto), sg)
        elif r.scope is Scope.DST_LIMIT:
            by_dst.setdefault(r.dst, []).append(sg)
        elif r.src.endswith(("/32", "/128")):
            by_src.setdefault(r.src.rsplit("/", 1)[0], sg)
        else:
            other.append(sg)
    out = []
    for k, st in flows.items():
        s = score.get(k, 0.0)
        cover = by_flow.get(k) or by_src.get(k[0]) or next(
            (sg for sg in by_dst.get(k[1], []) + other
             if sg.rule.covers(*k, tcp_flags=st["flags"])), None)
        label = int(s >= detector.threshold and cover is not None)
        out.append({"key": k, "state": st, "score": s, "label": label,
                    "rule": cover.rule if label else None, "reason": cover.reason if label else ""})
    return out


def cmd_analyze(args) -> int:
    from services.detection import features as F
    from services.detection.model import load_model

    from .flows_cmd import read_checked

    if args.window <= 0:
        raise ConfigError("--window must be above 0")
    log = read_checked(args.file, "analyze")
    print(f"Loading ML model from {args.model or 'the shipped model'}...")
    det = load_model(args.model)
    print(f"✓ Model loaded successfully ({det.model_id}, threshold {det.threshold:.4f})")
    print(f"Reading log entries from {args.file}...")
    results = analyze(log.packets, det, args.window)
    print(f"Found {len(results)} unique flow(s) to analyze")
    dp = None
    if args.apply and not args.dry_run:
        from services.dataplane.datapath import Datapath  # lazily: needs root and a loaded program
        from services.common.settings import load_common

        dp = Datapath.open(args.pin_dir or load_common().pin_dir)
    applied: dict[str, dict] = {}
    commands, n = [], len(results)
    try:
        for i, r in enumerate(results, start=1):
            src, dst, sport, dport, proto = r["key"]
            fields = {"src": src, "dst": dst, "sport": str(sport), "dport": str(dport),
                      "proto": PROTO_NAMES.get(proto, str(proto))}
            action = "drop" if r["label"] else "pass"
            disp = F.seed_display_features(r["state"])
            decision = "ANOMALY" if r["label"] else "NORMAL"
            print(f"[{i}/{n}] {src}:{sport} → {dst}:{dport} ({fields['proto']}) | Pkts: "
                  f"{disp['packets']}, Bytes: {disp['bytes']}, Dur: {disp['duration']:.4f}s | "
                  f"Score: {r['score']:.4f} | {decision} → {action.upper()}")
            entry = {"cmd": manager_cmd(args.manager, fields, action,
                                        sudo=not (args.no_sudo or args.dry_run)),
                     "fields": fields, "features": disp, "ml_score": r["score"],
                     "ml_label": r["label"], "action": action,
                     "rule": r["rule"].to_dict() if r["rule"] else None, "reason": r["reason"]}
            if dp is not None and r["rule"] is not None:
                key = r["rule"].key()
                if key not in applied:
                    applied[key] = _apply(dp, r["rule"])
                entry["result"] = applied[key]
            commands.append(entry)
    finally:
        if dp is not None:
            dp.close()
    try:
        with open(args.out_file, "w", encoding="utf-8") as fh:
            json.dump(commands, fh, indent=2)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out_file}: {exc.strerror}") from None
    print(f"\n✓ Wrote {len(commands)} commands to {args.out_file}")
    anomalies = sum(r["label"] for r in results)
    print(f"\n{'=' * 60}\nML Prediction Summary:\n  Normal traffic (PASS):  {n - anomalies}\n"
          f"  Anomalies (DROP):       {anomalies}\n  Total flows analyzed:   {n}\n{'=' * 60}")
    if applied:
        ok = sum(a["applied"] for a in applied.values())
        print(f"Applied {ok}/{len(applied)} rules to the live maps", file=sys.stderr)
    return 0


def _apply(dp, rule) -> dict:
    try:
        dp.add_rule(rule)
        print(f"  → ✓ Rule added: {rule.key()}")
        return {"rc": 0, "stdout": "Rule added", "stderr": "", "applied": True}
    except XdpguardError as exc:
        print(f"  → Failed: {exc}")
        return {"rc": 1, "stdout": "", "stderr": str(exc), "applied": False}
