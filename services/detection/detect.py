"""The decision layer: one closed, scored window -> Rule suggestions with their reasons. Pure.

Novelty alone never blocks. A rule needs, for its own scope, BOTH
  - evidence of hostility: a measure of services.detection.evidence at or above its bound
    (services.detection.bounds, calibrated on benign captures), and
  - the model's agreement: at least `min_anomalous_share` of the flows that carry that evidence
    score at or above the threshold.
Scopes and rules:
  SRC_PREFIX (drop, /32 or /128): source measures (half-open flood, port scan or sweep probes,
      login sessions, volume). Never for an unspecified source (0.0.0.0, ::).
  DST_LIMIT (limit): destination measures, when the flows carrying them come from at least
      `spoof_min_sources` sources (spoofed or reflected: a source rule would never match twice)
      or from the unspecified address (DHCP clients). Fewer sources: each of them is blocked
      as a source instead (real addresses: a spoofer would not repeat itself). Protocol, port and TCP-flag mask follow
      the measure: SYN for half-open floods, SYN+ACK for reflected handshakes, RST for RST
      storms, UDP on any port for reflection and fragments (later fragments carry no ports),
      UDP/67 for DHCP floods.
  FLOW: only with `flow_only` (the original tool's method: every anomalous flow, exactly).
Response: STRONG evidence (>= `strong` x the bound), or evidence that comes back after its first
rule ran out (`Escalation`), gets the full answer: a drop for `ttl_s`, or a limit at the tight
rate (twice the legitimate rate the window showed for it, at least `limit_floor_pps`, at most
`limit_pps`). Weaker evidence first gets `short_ttl_s` and, for limits, `limit_pps`.
"""
from __future__ import annotations

import ipaddress
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from typing import Sequence

from services.records.packet import PROTO_NAMES, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN
from services.records.rules import Action, Rule, Scope

from . import evidence as E
from .bounds import EvidenceBounds
from .features import WindowState


@dataclass(frozen=True)
class DetectParams:
    spoof_min_sources: int = 8      # sources behind destination evidence that make a limit
    prefix_v4: int = 32
    prefix_v6: int = 128
    limit_pps: int = 50             # the loose limit (weak evidence); the tight one's ceiling
    limit_floor_pps: int = 2        # the tight limit when the window shows no legitimate share
    ttl_s: float = 600.0            # strong or repeated evidence (0 = never expires)
    short_ttl_s: float = 30.0       # weak evidence, first time
    min_anomalous_share: float = 0.5
    escalate_within_s: float = 900.0  # a rule suggested again within this is escalated
    max_rules: int = 512            # per window; the highest scores win
    flow_only: bool = False         # the original tool's method: exact 5-tuples only


@dataclass(frozen=True)
class Suggestion:
    rule: Rule
    reason: str
    score: float       # highest score among the flows it covers
    flows: int         # flows of the window carrying its evidence


class Escalation:
    """What was suggested before, by rule key: (level, expiry). A rule suggested again once its
    earlier answer has run out (traffic matched by a live rule is not sampled, so it cannot be
    seen while the rule holds) comes back one level up. Bounded: the oldest keys go first."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self.seen: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # key -> level, at, expires

    def level(self, key: str, strong: bool, now_ns: int, span_s: float) -> int:
        """0: a first, weak answer; 1 or more: the full answer."""
        prev = self.seen.get(key)
        base = 1 if strong else 0
        if prev is None or now_ns - prev[1] > span_s * 1e9:
            return base
        level, _, expires = prev
        if expires and now_ns >= expires - 2 * 10**9:  # the earlier rule has (nearly) run out
            return max(base, level + 1)
        return max(base, level)

    def record(self, key: str, level: int, now_ns: int, expires_ns: int) -> None:
        self.seen[key] = (level, now_ns, expires_ns)
        self.seen.move_to_end(key)
        while len(self.seen) > self.max_keys:
            self.seen.popitem(last=False)


def _proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def _prefix(addr: str, p: DetectParams) -> str:
    ip = ipaddress.ip_address(addr)
    length = p.prefix_v4 if ip.version == 4 else p.prefix_v6
    return str(ipaddress.ip_network(f"{addr}/{length}", strict=False))


def _blockable(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return not (ip.is_unspecified or ip.is_multicast or addr == "255.255.255.255")


# which flows carry a measure: mark bits required (all), plus a flow test
_SRC_CARRIERS = {"half_open": E.HALF_OPEN, "probe_tcp": E.HALF_OPEN | E.PROBE,
                 "probe_other": E.PROBE | E.UNANSWERED, "login": E.INITIATED, "packets": 0}
_ONE_SIDED = ("packets",)  # measures carried by the flows nobody answered
_DST_CARRIERS = {"half_open_srcs": E.HALF_OPEN, "synack_srcs": E.SYNACK, "rst_srcs": E.RST_ONLY,
                 "reflector_srcs": E.REFLECTED, "fragments": E.FRAGMENT, "dhcp": E.DHCP,
                 "unsolicited_srcs": E.UNANSWERED, "packets": 0}
# destination measures that say "one-sided, much" without saying how: used only when no
# specific measure (half-open, reflected, fragments, ...) already covers the destination
_GENERIC = ("unsolicited_srcs", "packets")
_TEXT = {"half_open": "half-open TCP connections", "probe_tcp": "half-open probes of one target group",
         "probe_other": "unanswered probes of one target group", "login": "sessions to one login service",
         "packets": "packets nobody answered", "half_open_srcs": "sources with half-open connections",
         "synack_srcs": "sources of unanswered SYN-ACKs", "rst_srcs": "sources of unanswered RSTs",
         "reflector_srcs": "sources of unsolicited reflector-port answers",
         "fragments": "non-first fragments", "dhcp": "DHCP client packets",
         "unsolicited_srcs": "sources nobody answered"}


def _carries(measure: str, key: tuple, mark: int, carriers: dict) -> bool:
    need = carriers[measure]
    if mark & need != need or (measure in _ONE_SIDED and mark & (E.ANSWERED | E.GROUP)):
        return False
    if measure == "probe_other":
        return key[4] != PROTO_TCP
    if measure == "login":
        return key[3] in E.LOGIN_PORTS
    return True


class _Decider:
    """One window's decisions (see module doc); `suggest` is the entry point."""

    def __init__(self, window, keys, scores, threshold, end_ns, params, bounds, ev, memory):
        self.window, self.keys, self.threshold, self.end, self.p = window, keys, threshold, end_ns, params
        self.scores = {k: float(s) for k, s in zip(keys, scores)}
        self.bounds, self.ev, self.memory = bounds, ev, memory
        self.width_s = max((end_ns - window.start_ns) / 1e9, 1e-3)
        self.out: dict[str, Suggestion] = {}

    def gate(self, flows: list[tuple]) -> tuple[bool, float, float]:
        """(model agrees, share of carrying flows at/above threshold, top score)."""
        if not flows:
            return False, 0.0, 0.0
        sc = [self.scores[k] for k in flows]
        share = sum(s >= self.threshold for s in sc) / len(sc)
        return share >= self.p.min_anomalous_share and max(sc) >= self.threshold, share, max(sc)

    def respond(self, rule: Rule, strong: bool) -> tuple[Rule, int]:
        p, level = self.p, 1 if strong else 0
        if self.memory is not None:
            level = self.memory.level(rule.key(), strong, self.end, p.escalate_within_s)
        ttl = p.ttl_s if level else p.short_ttl_s
        return rule.with_times(self.end, ttl), level

    def add(self, rule: Rule, strong: bool, reason: str, top: float, n: int) -> None:
        """Keep `rule` (its TTL and, for a limit, its rate by the response level) unless the
        window already has one with the same key and a higher score."""
        rule, level = self.respond(rule, strong)
        if rule.scope is Scope.DST_LIMIT and not level:
            rule = replace(rule, rate_pps=self.p.limit_pps)
        old = self.out.get(rule.key())
        if old is not None and old.score >= top:
            return
        if self.memory is not None:
            self.memory.record(rule.key(), level, self.end, rule.expires_ns)
        how = "drop" if rule.action is Action.DROP else f"limit to {rule.rate_pps} pps"
        ttl = (rule.expires_ns - rule.created_ns) / 1e9 if rule.expires_ns else 0
        self.out[rule.key()] = Suggestion(
            rule, f"{reason}: {how} for {ttl:.0f} s{' (repeated)' if level > (1 if strong else 0) else ''}",
            top, n)

    def sources(self) -> None:
        """SRC_PREFIX rules: per source, its strongest finding the model agrees with."""
        by_src: dict[str, list[tuple]] = {}
        for k in self.keys:
            by_src.setdefault(k[0], []).append(k)
        for src in self.ev.src:
            found = self.bounds.findings("src", self.ev.src_for_decision(src))
            if not found or not _blockable(src):
                continue
            marks = self.ev.marks
            for measure, value, strong in sorted(found, key=lambda f: -f[1] / self.bounds.bounds["src"][f[0]]):
                flows = [k for k in by_src.get(src, ()) if _carries(measure, k, marks[k], _SRC_CARRIERS)]
                ok, share, top = self.gate(flows)
                if not ok:
                    continue
                prefix = _prefix(src, self.p)
                self.add(Rule(Scope.SRC_PREFIX, Action.DROP, src=prefix), strong,
                         f"source {prefix}: {value:.0f} {_TEXT[measure]} (bound "
                         f"{self.bounds.bounds['src'][measure]:.0f}); {share:.0%} of its {len(flows)} "
                         f"such flows score >= {self.threshold:.3f} (top {top:.3f})", top, len(flows))
                break

    def destinations(self) -> None:
        """DST_LIMIT rules (or source rules for few sources): per destination, every specific
        finding the model agrees with; the generic ones only if none shaped a limit."""
        by_dst: dict[str, list[tuple]] = {}
        for k in self.keys:
            by_dst.setdefault(k[1], []).append(k)
        marks = self.ev.marks
        for dst, vals in self.ev.dst.items():
            limited = False
            for measure, value, strong in self.bounds.findings("dst", vals):
                if limited and measure in _GENERIC:
                    continue  # a specific finding already shaped this destination's limit
                flows = [k for k in by_dst.get(dst, ()) if _carries(measure, k, marks[k], _DST_CARRIERS)]
                srcs = {k[0] for k in flows}
                ok, share, top = self.gate(flows)
                if not ok:
                    continue
                if len(srcs) < self.p.spoof_min_sources and not any(s in E.UNSPECIFIED for s in srcs):
                    self.few_sources(dst, measure, value, strong, flows, share, top)
                    continue
                rule = self.limit(dst, measure, flows, by_dst[dst])
                limited = True
                what = f"{_proto_name(rule.proto)}{'/' + str(rule.dport) if rule.dport else ''}"
                mask = {TCP_SYN: " SYN", TCP_SYN | TCP_ACK: " SYN-ACK", TCP_RST: " RST"}.get(rule.tcp_flags, "")
                self.add(rule, strong,
                         f"destination {dst} {what}{mask}: {value:.0f} {_TEXT[measure]} (bound "
                         f"{self.bounds.bounds['dst'][measure]:.0f}) from {len(srcs)} sources; "
                         f"{share:.0%} of {len(flows)} flows score >= {self.threshold:.3f} "
                         f"(top {top:.3f})", top, len(flows))

    def few_sources(self, dst: str, measure: str, value: float, strong: bool, flows: list[tuple],
                    share: float, top: float) -> None:
        """Destination evidence carried by fewer than `spoof_min_sources` sources: those
        sources are real (a spoofer would not repeat itself), so they are blocked, not the
        destination limited; only those that carry their share (at least half of an even
        split of the carrying packets): a victim's ordinary clients add a little to a flood's
        one-sided volume and must keep their traffic."""
        pk = self.window.flows
        per: dict[str, int] = {}
        for k in flows:
            per[k[0]] = per.get(k[0], 0) + (pk[k]["packets"] if k in pk else 1)
        fair = sum(per.values()) / (2 * len(per))
        for src in sorted(per):
            if _blockable(src) and per[src] >= fair:
                prefix = _prefix(src, self.p)
                mine = [k for k in flows if k[0] == src]
                self.add(Rule(Scope.SRC_PREFIX, Action.DROP, src=prefix), strong,
                         f"source {prefix} -> {dst}: {value:.0f} {_TEXT[measure]} (bound "
                         f"{self.bounds.bounds['dst'][measure]:.0f}) from {len({k[0] for k in flows})} "
                         f"sources; {share:.0%} of {len(flows)} flows score >= {self.threshold:.3f} "
                         f"(top {top:.3f})", max(self.scores[k] for k in mine), len(mine))

    def limit(self, dst: str, measure: str, flows: list[tuple], all_flows: list[tuple]) -> Rule:
        """The limit's shape (module doc) and its tight rate."""
        marks, st = self.ev.marks, self.window.flows
        proto, mask = Counter(k[4] for k in flows).most_common(1)[0][0], 0
        if measure == "half_open_srcs":
            proto, mask = PROTO_TCP, TCP_SYN
        elif measure == "synack_srcs":
            proto, mask = PROTO_TCP, TCP_SYN | TCP_ACK
        elif measure == "rst_srcs":
            proto, mask = PROTO_TCP, TCP_RST
        elif measure in ("reflector_srcs", "fragments", "dhcp"):
            proto = PROTO_UDP if measure != "fragments" else proto
        elif proto == PROTO_TCP and sum(bool(marks[k] & E.HALF_OPEN) for k in flows) * 2 > len(flows):
            mask = TCP_SYN
        dport = 67 if measure == "dhcp" else 0
        if measure not in ("fragments", "dhcp") and not any(marks[k] & E.FRAGMENT for k in all_flows):
            port, n = Counter(k[3] for k in flows).most_common(1)[0]
            # protocol 0 has no ports a rule can name (records.rules refuses a port without a
            # protocol); a record from anywhere but the capture may still carry one
            dport = port if n >= 0.9 * len(flows) and proto else 0
        # legitimate share: what the limit would match from completed handshakes (SYN limits)
        # or answered flows (all others)
        legit = 0
        for k in all_flows:
            s = st.get(k)
            if s is None or k[4] != proto or (dport and k[3] != dport):
                continue
            if mask == TCP_SYN:
                legit += s.get("syn", 0) if s["flags"] & TCP_ACK else 0
            elif marks[k] & E.ANSWERED and not marks[k] & E.SYNACK and s["flags"] & mask == mask:
                legit += s["packets"]
        rate = min(self.p.limit_pps, max(self.p.limit_floor_pps, math.ceil(2 * legit / self.width_s)))
        return Rule(Scope.DST_LIMIT, Action.LIMIT, dst=dst, dport=dport, proto=proto, tcp_flags=mask,
                    rate_pps=rate)


def suggest(window: WindowState, keys: Sequence[tuple], scores: Sequence[float], threshold: float,
            *, window_end_ns: int, params: DetectParams = DetectParams(),
            bounds: EvidenceBounds | None = None, evidence: E.WindowEvidence | None = None,
            memory: Escalation | None = None) -> list[Suggestion]:
    """Rules for one closed window (module doc). `keys[i]` is the 5-tuple (src, dst, sport,
    dport, proto) scored `scores[i]`; `window.flows` holds their states (features form) and
    `window.start_ns` the window's start. `evidence` is the window's assessment (evidence.assess;
    default: this window alone, evidence.assess_window); `bounds` the model's (default: the
    floors); `memory` escalates repeated rules across windows (default: none, every answer is
    a first one). Rules are created at `window_end_ns`; at most `max_rules`, highest scores first."""
    p = params
    if p.flow_only:
        out = []
        for k, s in zip(keys, scores):
            if s >= threshold:
                src, dst, sport, dport, proto = k
                rule = Rule(Scope.FLOW, Action.DROP, src=src, dst=dst, sport=sport, dport=dport,
                            proto=proto).with_times(window_end_ns, p.ttl_s)
                out.append(Suggestion(rule, f"flow {src}:{sport} -> {dst}:{dport} "
                                            f"({_proto_name(proto)}): score {s:.3f} >= {threshold:.3f}",
                                      float(s), 1))
        out.sort(key=lambda sg: -sg.score)
        return out[:p.max_rules]
    if not len(keys) or max(scores) < threshold:
        return []
    if evidence is None:
        evidence, _ = E.assess_window(window, window_end_ns)
    d = _Decider(window, list(keys), scores, threshold, window_end_ns, p,
                 bounds or EvidenceBounds.default(), evidence, memory)
    d.destinations()
    d.sources()
    out = sorted(d.out.values(), key=lambda sg: -sg.score)
    return out[:p.max_rules]
