"""The live pipeline's logic over a packet stream: tumbling event-time windows -> feature rows ->
scores -> rule suggestions; plus a simulated data plane that enforces those rules.

`Pipeline` is what the streaming scorer does per partition set, minus Kafka: packets in time
order, a window closes when a packet of a later window arrives (or on `flush`). A late packet
(older than the open window) is counted into the open window, as a grace-less stream would.

`SimulatedDataPlane` is the data plane of docs/dataplane.md in Python: precedence exact flow >
source prefix > destination limit > pass, matching by `Rule.covers`; a rule is active from its
activation time; a destination limit lets `rate_pps` matching packets through per second and
drops the excess.
Flow and source rules also match the REVERSE direction (replies to a blocked peer): on a real
host the XDP program drops the request, so the reply is never sent; replaying a two-way capture
must not count those replies as "got through".
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from itertools import chain
from typing import Iterable, Iterator

import numpy as np

from services.detection.detect import DetectParams, Suggestion, own_scores, suggest
from services.detection.features import HORIZON_WINDOWS, SourceHorizon, WindowState, window_start
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


class Pipeline:
    """Windowing + features (+ scoring and detection when a detector is given)."""

    def __init__(self, detector=None, *, window_s: float = 1.0,
                 params: DetectParams = DetectParams()) -> None:
        if window_s <= 0:
            raise ValueError("window must be positive")
        self.detector = detector
        self.width_ns = int(window_s * 1e9)
        self.params = params
        self._win: WindowState | None = None
        self._horizon = SourceHorizon(self.width_ns, getattr(detector, "horizon_windows",
                                                             HORIZON_WINDOWS))

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
        win.add_to(self._horizon)
        keys, rows = win.rows(self._horizon)
        X = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        end = win.start_ns + self.width_ns
        if self.detector is None:
            return WindowResult(win.start_ns, end, win, keys, X, np.zeros(len(keys)))
        scores = self.detector.score_rows(X)
        sugg = suggest(win, keys, scores, self.detector.threshold, window_end_ns=end,
                       params=self.params,
                       wide_threshold=getattr(self.detector, "wide_threshold", None),
                       own_scores=own_scores(self.detector, rows, scores, self.detector.threshold))
        return WindowResult(win.start_ns, end, win, keys, X, scores, sugg)


class SimulatedDataPlane:
    """Simulated XDP rule maps: `install(rule, active_ns)`; `verdict(pkt)` -> True if dropped.

    Whether a rule matches a packet is `Rule.covers` (the kernel's matching); the indexes below
    only pick the few rules worth asking, so a replay of millions of packets stays fast."""

    def __init__(self) -> None:
        self.by_addr: dict[str, list[tuple]] = {}     # address -> [(flow rule from it, or host
        #                                               prefix rule on it, active from ns)]
        self.nets: list[tuple] = []                   # (shorter prefix rule, active from ns)
        self.limits: dict[str, list] = {}             # dst -> [[rule, active, bucket_s, used]]
        self.keys: set[str] = set()

    def install(self, rule: Rule, active_ns: int) -> bool:
        """Add a rule (a second rule with the same key is ignored); True when new."""
        if rule.key() in self.keys:
            return False
        self.keys.add(rule.key())
        if rule.scope is Scope.FLOW:
            self.by_addr.setdefault(str(ipaddress.ip_address(rule.src)), []).append((rule, active_ns))
        elif rule.scope is Scope.SRC_PREFIX:
            net = ipaddress.ip_network(rule.src)
            if net.prefixlen == net.max_prefixlen:
                self.by_addr.setdefault(str(net.network_address), []).append((rule, active_ns))
            else:
                self.nets.append((rule, active_ns))
        else:
            self.limits.setdefault(rule.dst, []).append([rule, active_ns, -1, 0])
        return True

    def verdict(self, pkt: Packet) -> bool:
        ts = pkt.ts_ns
        fwd = (pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.proto)
        rev = (pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.proto)
        for rule, active in chain(self.by_addr.get(pkt.src, ()), self.by_addr.get(pkt.dst, ()),
                                  self.nets):
            if ts >= active and (rule.covers(*fwd) or rule.covers(*rev)):
                return True
        for lim in self.limits.get(pkt.dst, ()):
            rule, active, bucket, used = lim
            if ts < active or not rule.covers(*fwd, tcp_flags=pkt.tcp_flags):
                continue
            sec = ts // 1_000_000_000
            if sec != bucket:
                lim[2], lim[3] = sec, 0
            lim[3] += 1
            return lim[3] > rule.rate_pps
        return False


@dataclass
class ReplayResult:
    dropped: np.ndarray            # per input packet
    windows: list[WindowResult]
    first_rule_ns: int | None


def replay(packets: list[Packet], detector, *, window_s: float = 1.0, reaction_s: float = 1.0,
           params: DetectParams = DetectParams(), keep_windows: bool = True) -> ReplayResult:
    """Replay time-ordered packets on their own timestamps through pipeline and enforcer: a rule
    suggested for a window becomes active `reaction_s` after that window's end. Dropped packets
    never reach the pipeline (XDP drops them before sampling)."""
    pipe = Pipeline(detector, window_s=window_s, params=params)
    enf = SimulatedDataPlane()
    react = int(reaction_s * 1e9)
    dropped = np.zeros(len(packets), dtype=bool)
    windows: list[WindowResult] = []
    first_rule = None

    def handle(results: list[WindowResult]) -> None:
        nonlocal first_rule
        for res in results:
            for sg in res.suggestions:
                if enf.install(sg.rule, res.end_ns + react) and first_rule is None:
                    first_rule = res.end_ns + react
            if keep_windows:
                res.state = None  # the rows and keys are kept; the raw state is not needed
                windows.append(res)

    for i, pkt in enumerate(packets):
        if enf.verdict(pkt):
            dropped[i] = True
            continue
        handle(pipe.push(pkt))
    handle(pipe.flush())
    return ReplayResult(dropped, windows, first_rule)
