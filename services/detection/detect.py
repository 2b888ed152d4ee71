"""Turn one closed, scored window into Rule suggestions with a human-readable reason. Pure.

Given the window's flows (5-tuple keys), their scores (higher = more anomalous) and the window's
per-source / per-destination aggregates, the anomalous flows (score >= threshold) are covered by
the narrowest rule that still works, in this order:

1. DST_LIMIT: anomalous flows towards ONE destination from at least `spoof_min_sources`
   distinct sources (a spoofed or reflected flood: blocking sources would never match twice).
   Protocol, port (when >= 90% of those flows share it) and SYN-only flag mask are taken from
   the anomalous flows; the limit is `limit_pps`.
2. SRC_PREFIX: a source with at least `src_min_flows` anomalous flows making up at least
   `src_min_share` of its flows in the window (scans, sweeps, brute force: nearly all of an
   attacker's flows look wrong; a benign host with a few odd flows keeps its other traffic),
   as /32 (IPv4) or /128 (IPv6) unless the prefix lengths say otherwise.
3. FLOW: every remaining anomalous flow, exactly, except flows towards a destination a wide
   rule of this window already protects (their scores come from the victim's aggregate).

Own evidence (`own_scores`): a flow towards a flooded destination scores high because the
destination's aggregate (distinct sources, packet rate) is extreme, whoever sends it. The
caller may pass, per flow, the score of the same row with the destination aggregate replaced
by the flow's SOURCE aggregate (`own_row`: the destination as if this source were its only
client). Source-prefix and exact-flow rules then count only flows whose own score reaches the
wide threshold too (borderline flows, e.g. a benign client's pings scoring just above
`threshold`, are not dropped), so a benign client of an attacked victim (a pinger, an HTTP client with completed
handshakes) is never blocked, while the flooding / scanning / brute-forcing source, whose own
aggregate carries the anomaly, still is. Destination limits keep the full score.

`flow_only=True` reproduces the original tool's behaviour (exact 5-tuple drops only).
"""
from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

from .features import DST_FEATURES, SEED_FEATURES, SRC_FEATURES, WindowState, agg_features

_SRC_AT = len(SEED_FEATURES)
_DST_AT = _SRC_AT + len(SRC_FEATURES)


def own_row(row: Sequence[float]) -> list[float]:
    """The model row with its destination aggregate replaced by its source aggregate (the
    window's, same names after the prefix): what the flow would look like if its source were
    the destination's only client (module doc)."""
    return [*row[:_DST_AT], *row[_SRC_AT:_SRC_AT + len(DST_FEATURES)]]


def own_scores(detector, rows, scores, threshold: float):
    """Own-evidence scores (module doc): rescored only for rows at/above `threshold` (one model
    call); the others keep their score (they are not anomalous either way)."""
    import numpy as np
    scores = np.asarray(scores, dtype=np.float64)
    out = scores.copy()
    idx = np.flatnonzero(scores >= threshold)
    if len(idx):
        X = np.asarray([own_row(rows[i]) for i in idx], dtype=np.float64)
        out[idx] = np.asarray(detector.score_rows(X), dtype=np.float64)
    return out
from services.records.packet import PROTO_NAMES, PROTO_TCP, TCP_ACK, TCP_SYN
from services.records.rules import Action, Rule, Scope


@dataclass(frozen=True)
class DetectParams:
    spoof_min_sources: int = 32   # distinct anomalous sources to one destination -> rate limit
    src_min_flows: int = 3        # anomalous flows of one source -> block the source ...
    src_min_share: float = 0.5    # ... when they are at least this share of its window's flows
    prefix_v4: int = 32
    prefix_v6: int = 128
    limit_pps: int = 50           # packets/s a flooded destination still gets
    ttl_s: float = 600.0          # rule lifetime (0 = never expires)
    max_rules: int = 512          # per window; the highest scores win
    flow_only: bool = False       # the original tool's method: exact 5-tuples only


@dataclass(frozen=True)
class Suggestion:
    rule: Rule
    reason: str
    score: float       # highest score among the flows it covers
    flows: int         # anomalous flows of the window it covers


def _proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def _syn_only(flow: dict | None) -> bool:
    return flow is not None and bool(flow["flags"] & TCP_SYN) and not flow["flags"] & TCP_ACK


def _agg_text(agg: dict | None) -> str:
    """The ` [aggregate]` part of a reason, or "" when the aggregate is not known (the scorer's
    stage 2 windows carry no per-source aggregates)."""
    if not agg:
        return ""
    f = agg_features(agg)
    return (f" [{f[0]:.0f} flows, {f[1]:.0f} pkts, {f[3]:.0f} peers, {f[4]:.0f} ports, "
            f"SYN-no-ACK {f[5]:.0%}]")


def _prefix(addr: str, p: DetectParams) -> str:
    ip = ipaddress.ip_address(addr)
    length = p.prefix_v4 if ip.version == 4 else p.prefix_v6
    return str(ipaddress.ip_network(f"{addr}/{length}", strict=False))


def suggest(window: WindowState, keys: Sequence[tuple], scores: Sequence[float],
            threshold: float, *, window_end_ns: int, params: DetectParams = DetectParams(),
            wide_threshold: float | None = None,
            own_scores: Sequence[float] | None = None) -> list[Suggestion]:
    # Long function: the three rule kinds in their order of precedence, read top to bottom
    """Rules for the anomalous flows of one closed window (see module doc). `keys[i]` is the
    5-tuple (src, dst, sport, dport, proto) scored `scores[i]`; rules are created at
    `window_end_ns` and expire `params.ttl_s` later. Only flows scoring >= `wide_threshold`
    (default: `threshold`) count towards the wide rules (DST_LIMIT, SRC_PREFIX): their blast
    radius is larger, so the model's calibration gives them a stricter threshold.
    `own_scores[i]` (optional, see module doc) gates source-prefix and exact-flow rules."""
    p = params
    bad = [(k, float(s)) for k, s in zip(keys, scores) if s >= threshold]
    if not bad:
        return []
    wide = threshold if wide_threshold is None else max(threshold, wide_threshold)
    own = ({k: float(o) for k, o in zip(keys, own_scores)} if own_scores is not None else {})
    out: list[Suggestion] = []
    covered: set[tuple] = set()

    def add(rule: Rule, reason: str, group: list[tuple[tuple, float]]) -> None:
        top = max(s for _, s in group)
        out.append(Suggestion(rule.with_times(window_end_ns, p.ttl_s),
                              f"{reason} (score {top:.3f} >= {threshold:.3f})", top, len(group)))
        covered.update(k for k, _ in group)

    if not p.flow_only:
        by_dst: dict[str, list] = defaultdict(list)
        for k, s in bad:
            if s >= wide:
                by_dst[k[1]].append((k, s))
        for dst, group in by_dst.items():
            if len({k[0] for k, _ in group}) < p.spoof_min_sources:
                continue
            proto = Counter(k[4] for k, _ in group).most_common(1)[0][0]
            group = [(k, s) for k, s in group if k[4] == proto]
            # A SYN flood is limited on SYN-only packets, shaped (port) by its SYN-only flows
            # alone: the victim's real clients (handshakes completed, so not spoofed) score
            # high through its aggregate too, and must neither widen the limit to all TCP nor
            # pull its port. Seen in a soak: the 50 pps a limit lets through plus a client's
            # fetches on another port made a second limit on every TCP packet to the victim.
            mask = 0
            if proto == PROTO_TCP:
                syn = [(k, s) for k, s in group if _syn_only(window.flows.get(k))]
                if len({k[0] for k, _ in syn}) >= p.spoof_min_sources:
                    group, mask = syn, TCP_SYN
            dport, n = Counter(k[3] for k, _ in group).most_common(1)[0]
            dport = dport if n >= 0.9 * len(group) else 0
            rule = Rule(Scope.DST_LIMIT, Action.LIMIT, dst=dst, dport=dport, proto=proto,
                        tcp_flags=mask, rate_pps=p.limit_pps)
            what = f"{_proto_name(proto)}{'/' + str(dport) if dport else ''}"
            add(rule, f"flood from {len({k[0] for k, _ in group})} sources -> {dst} {what}"
                      f"{' SYN-only' if mask else ''}{_agg_text(window.dsts.get(dst))}: "
                      f"limit to {p.limit_pps} pps", group)

        by_src: dict[str, list] = defaultdict(list)
        for k, s in bad:
            if k not in covered and s >= wide and own.get(k, s) >= wide:
                by_src[k[0]].append((k, s))
        src_flows = Counter(k[0] for k in keys)
        for src, group in by_src.items():
            if len(group) < p.src_min_flows or len(group) < p.src_min_share * src_flows[src]:
                continue
            prefix = _prefix(src, p)
            add(Rule(Scope.SRC_PREFIX, Action.DROP, src=prefix),
                f"source {prefix}: {len(group)} anomalous flows{_agg_text(window.srcs.get(src))}",
                group)

    # Destinations a wide rule already protects: their other flows score high because the
    # destination's aggregate is extreme, not because of anything they do (a victim's own
    # clients); dropping them would be collateral damage.
    victims = {k[1] for k in covered}
    for k, s in bad:
        if k in covered or k[1] in victims or own.get(k, s) < (wide if own else threshold):
            continue
        src, dst, sport, dport, proto = k
        st = window.flows.get(k, {})
        add(Rule(Scope.FLOW, Action.DROP, src=src, dst=dst, sport=sport, dport=dport, proto=proto),
            f"flow {src}:{sport} -> {dst}:{dport} ({_proto_name(proto)}), "
            f"{st.get('packets', '?')} pkts {st.get('bytes', '?')} bytes", [(k, s)])

    out.sort(key=lambda sg: -sg.score)
    return out[:p.max_rules]
