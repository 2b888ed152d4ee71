"""The live pipeline's logic over a packet stream: tumbling event-time windows -> feature rows ->
scores -> rule suggestions; plus a simulated data plane that enforces those rules.

`Pipeline` is what the streaming scorer does, minus Kafka and partitions: packets in time order,
a window closes when a packet of a later window arrives (or on `flush`); its flows get feature
rows, evidence (services.detection.evidence: the source measures over the horizon, answers
looked up in this window and the one before), scores and decisions (detect.suggest, with one
escalation memory for the whole replay). A late packet (older than the open window) is counted
into the open window, as a grace-less stream would.

`SimulatedDataPlane` is the data plane of docs/dataplane.md in Python: precedence exact flow >
source prefix > destination limit > pass (a limit matches by `Rule.covers`); a rule is in force from its activation time
for its TTL; a destination limit lets `rate_pps` matching packets through per second and drops
the excess. As in the XDP program, a packet any rule matched is not sampled (`replay` never
hands it to the pipeline), whether the rule dropped it or let it through.
Flow and source rules also match the REVERSE direction (replies to a blocked peer): on a real
host the XDP program drops the request, so the reply is never sent; replaying a two-way capture
must not count those replies as "got through".
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from services.detection.detect import DetectParams, Escalation, Suggestion, suggest
from services.detection.evidence import Answers, ProbeFates, SourceWatch, WindowEvidence, assess_window
from services.detection.features import HORIZON_WINDOWS, SourceHorizon, WindowState, window_start
from services.detection.outage import OUTAGE_MEMORY_S
from services.records.packet import Packet
from services.records.rules import Rule, Scope


@dataclass
class WindowResult:
    start_ns: int
    end_ns: int
    state: WindowState
    keys: list[tuple]
    rows: np.ndarray
    scores: np.ndarray
    suggestions: list[Suggestion] = field(default_factory=list)
    evidence: WindowEvidence | None = None


class Pipeline:
    """Windowing + features + evidence (+ scoring and decisions when a detector is given)."""

    def __init__(self, detector=None, *, window_s: float = 1.0,
                 params: DetectParams = DetectParams()) -> None:
        if window_s <= 0:
            raise ValueError("window must be positive")
        self.detector = detector
        self.width_ns = int(window_s * 1e9)
        self.params = params
        self._win: WindowState | None = None
        span = getattr(detector, "horizon_windows", HORIZON_WINDOWS)
        memory_s = getattr(detector, "outage_memory_s", OUTAGE_MEMORY_S)
        self._horizon = SourceHorizon(self.width_ns, span)
        self._watch = SourceWatch(self.width_ns, span, memory_s)
        self._fates = ProbeFates(self.width_ns, span, memory_s)
        self._answers: Answers | None = None
        self._last_ws: int | None = None
        self.memory = Escalation()

    def push(self, pkt: Packet) -> list[WindowResult]:
        """Add one packet; returns the window it closed, if any."""
        out = []
        start = window_start(pkt.ts_ns, self.width_ns)
        if self._win is not None and start > self._win.start_ns:
            out.append(self._close())
        if self._win is None:
            self._win = WindowState(start)
        self._win.add(pkt)
        return out

    def flush(self) -> list[WindowResult]:
        return [self._close()] if self._win is not None else []

    def run(self, packets: Iterable[Packet]) -> Iterator[WindowResult]:
        for pkt in packets:
            yield from self.push(pkt)
        yield from self.flush()

    def _close(self) -> WindowResult:
        win, self._win = self._win, None
        end = win.start_ns + self.width_ns
        # windows without packets since the last one (answers.Answers: as stage 2 counts them)
        skipped = (win.start_ns - self._last_ws) // self.width_ns - 1 if self._answers is not None else 0
        ev, self._answers = assess_window(win, end, self._answers, self._watch, self._fates,
                                          skipped)
        self._last_ws = win.start_ns
        win.add_to(self._horizon)
        keys, rows = win.rows(self._horizon, *ev.model_inputs())
        X = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        if self.detector is None:
            return WindowResult(win.start_ns, end, win, keys, X, np.zeros(len(keys)), evidence=ev)
        scores = self.detector.score_rows(X)
        sugg = suggest(win, keys, scores, self.detector.threshold, window_end_ns=end,
                       params=self.params, bounds=getattr(self.detector, "evidence", None),
                       evidence=ev, memory=self.memory)
        return WindowResult(win.start_ns, end, win, keys, X, scores, sugg, ev)


class SimulatedDataPlane:
    """Simulated XDP rule maps. `install(rule, active_ns)`; `verdict(pkt)`: True when dropped,
    False when a rule matched and let it pass (a limit's allowance), None when no rule matched.
    A rule lasts from its activation for its TTL (`expires_ns - created_ns`; 0: for good)."""

    def __init__(self) -> None:
        self.flows: dict[tuple, list] = {}            # 5-tuple -> [active from, until] (ns)
        self.srcs: dict[str, list] = {}               # host address (/32, /128) -> [from, until]
        self.nets: list[tuple] = []                   # (network, [from, until]) for shorter prefixes
        self.limits: dict[str, list] = {}             # dst -> [[rule, [from, until], bucket_s, used]]
        self.keys: dict[str, list] = {}               # rule key -> its [from, until] (shared)
        self.matched_from: int | None = None          # activation of the rule `verdict` last matched

    def install(self, rule: Rule, active_ns: int) -> bool:
        """Add a rule. One whose key is still in force is refreshed as the enforcer does
        (services.enforcer.policy): once less than half the new TTL is left, the new rule
        (its rate included) replaces it. True when the rule is new or replaces an expired one."""
        ttl = rule.expires_ns - rule.created_ns if rule.expires_ns else 0
        until = active_ns + ttl if ttl else 2**63
        span = self.keys.get(rule.key())
        if span is not None and span[1] > active_ns:
            if span[1] - active_ns < (until - active_ns) / 2:
                span[1] = until
                for lim in self.limits.get(rule.dst, ()) if rule.scope is Scope.DST_LIMIT else ():
                    if lim[0].key() == rule.key():
                        lim[0] = rule
            return False
        span = self.keys[rule.key()] = [active_ns, until]
        if rule.scope is Scope.FLOW:
            self.flows[(rule.src, rule.dst, rule.sport, rule.dport, rule.proto)] = span
        elif rule.scope is Scope.SRC_PREFIX:
            net = ipaddress.ip_network(rule.src)
            if net.prefixlen == net.max_prefixlen:
                self.srcs[str(net.network_address)] = span
            else:
                self.nets = [n for n in self.nets if n[0] != net] + [(net, span)]
        else:
            lims = [lim for lim in self.limits.get(rule.dst, ()) if lim[0].key() != rule.key()]
            self.limits[rule.dst] = lims + [[rule, span, -1, 0]]
        return True

    def _src_blocked(self, addr: str, ts: int) -> list | None:
        """The [from, until] span of a host or prefix rule in force for `addr` at `ts`, or None."""
        span = self.srcs.get(addr)
        if span is not None and span[0] <= ts < span[1]:
            return span
        if self.nets:
            ip = ipaddress.ip_address(addr)
            return next((span for n, span in self.nets
                         if span[0] <= ts < span[1] and ip.version == n.version and ip in n), None)
        return None

    def verdict(self, pkt: Packet) -> bool | None:
        """True: dropped; False: a rule matched and let it through; None: no rule matched.
        `matched_from` is then the activation time (ns) of the rule that matched."""
        ts = pkt.ts_ns
        key = pkt.flow_key()
        for k in (key, (key[1], key[0], key[3], key[2], key[4])):
            span = self.flows.get(k)
            if span is not None and span[0] <= ts < span[1]:
                self.matched_from = span[0]
                return True
        span = self._src_blocked(pkt.src, ts) or self._src_blocked(pkt.dst, ts)
        if span:
            self.matched_from = span[0]
            return True
        for lim in self.limits.get(pkt.dst, ()):
            rule, span, bucket, used = lim
            if not span[0] <= ts < span[1] or not rule.covers(*key, tcp_flags=pkt.tcp_flags):
                continue
            sec = ts // 1_000_000_000
            if sec != bucket:
                lim[2], lim[3] = sec, 0
            lim[3] += 1
            self.matched_from = span[0]
            return lim[3] > rule.rate_pps
        return None


@dataclass
class ReplayResult:
    dropped: np.ndarray            # per input packet
    windows: list[WindowResult]
    first_rule_ns: int | None


class Replayer:
    """Pipeline + SimulatedDataPlane, one packet at a time (`feed`), for replays too long to hold: a rule
    suggested for a window becomes active `reaction_s` after that window's end; a packet any
    rule matched never reaches the pipeline (XDP samples unmatched packets only)."""

    def __init__(self, detector, *, window_s: float = 1.0, reaction_s: float = 1.0,
                 params: DetectParams = DetectParams(), keep_windows: bool = True) -> None:
        self.pipe = Pipeline(detector, window_s=window_s, params=params)
        self.enforcer = SimulatedDataPlane()
        self.react = int(reaction_s * 1e9)
        self.keep_windows = keep_windows
        self.windows: list[WindowResult] = []
        self.first_rule_ns: int | None = None

    def _handle(self, results: list[WindowResult]) -> None:
        for res in results:
            for sg in res.suggestions:
                if self.enforcer.install(sg.rule, res.end_ns + self.react) and self.first_rule_ns is None:
                    self.first_rule_ns = res.end_ns + self.react
            if self.keep_windows:
                res.state = None  # the rows and keys are kept; the raw state is not needed
                self.windows.append(res)

    def feed(self, pkt: Packet) -> bool:
        """One packet, in time order; True when the data plane dropped it."""
        v = self.enforcer.verdict(pkt)
        if v is None:
            self._handle(self.pipe.push(pkt))
        return bool(v)

    def finish(self) -> None:
        self._handle(self.pipe.flush())


def replay(packets: list[Packet], detector, *, window_s: float = 1.0, reaction_s: float = 1.0,
           params: DetectParams = DetectParams(), keep_windows: bool = True) -> ReplayResult:
    """Replay time-ordered packets on their own timestamps through pipeline and enforcer
    (`Replayer`); which packets were dropped, the windows, the first rule's activation."""
    r = Replayer(detector, window_s=window_s, reaction_s=reaction_s, params=params,
                 keep_windows=keep_windows)
    dropped = np.fromiter((r.feed(p) for p in packets), dtype=bool, count=len(packets))
    r.finish()
    return ReplayResult(dropped, r.windows, r.first_rule_ns)
