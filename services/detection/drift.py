"""Drift of the model on live traffic: the share of flow-windows scored at or above the
threshold, and the evidence rules fired, per hour, against a configured band. Pure.

Inputs are the scorer's cumulative counters (services.scorer.metrics, summed over workers):
`xdpguard_scorer_flows_scored_total` (flow-windows scored), `xdpguard_scorer_anomalies_total`
(of them at or above the threshold) and `xdpguard_scorer_verdicts_total` (rules fired: every
verdict the scorer publishes is an evidence rule). Prometheus computes the same figures with
the recording rules of compose/prometheus/rules/drift.yml and alerts outside the same band
(DEFAULT_BAND; tests/unit/test_drift.py keeps the two alike); `xdpguard top` feeds samples it
scrapes into `HourlyDrift`.

A counter that goes down (a worker restarted) counts from zero again, as Prometheus'
`increase()` does.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

HOUR_S = 3600.0


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at monotonic time `at` (seconds)."""
    at: float
    flows: float      # flow-windows scored
    above: float      # of them scored at or above the threshold
    rules: float      # verdicts (evidence rules) published


@dataclass(frozen=True)
class DriftBand:
    """Where the hourly figures are expected: the above-threshold share in [share_low,
    share_high] (fractions), at most `rules_high` rules an hour. The model's threshold is set
    so that about its target false-positive rate (0.02) of benign flow-windows score above it.
    The share is judged only over at least `min_flows` flow-windows: on a quiet site (a few
    hundred flows an hour, none above the threshold) it says nothing about drift."""
    share_low: float = 0.002
    share_high: float = 0.06
    rules_high: float = 60.0
    min_flows: float = 1000.0

    def outside(self, share: float | None, rules_per_hour: float | None,
                flows: float | None = None) -> list[str]:
        """Why the figures leave the band (empty: inside; None figures are not judged, nor a
        share over fewer than `min_flows` flow-windows when `flows` is given)."""
        out = []
        judged = share is not None and (flows is None or flows >= self.min_flows)
        if judged and not self.share_low <= share <= self.share_high:
            out.append(f"{share * 100:.2f}% of flow-windows above threshold, band "
                       f"{self.share_low * 100:.2f}%-{self.share_high * 100:.2f}%")
        if rules_per_hour is not None and rules_per_hour > self.rules_high:
            out.append(f"{rules_per_hour:,.1f} rules/h, band at most {self.rules_high:,.0f}")
        return out


DEFAULT_BAND = DriftBand()


@dataclass(frozen=True)
class Drift:
    """Figures over `span_s` seconds (at most an hour): the share of flow-windows at or above
    the threshold (None when none was scored) and rules fired, scaled to one hour."""
    span_s: float
    flows: float
    share: float | None
    rules_per_hour: float | None


def _increase(values: list[float]) -> float:
    """Increase of a cumulative counter over its samples, a drop meaning a restart from 0."""
    total = 0.0
    for a, b in zip(values, values[1:]):
        total += b - a if b >= a else b
    return total


class HourlyDrift:
    """Counter samples of the last hour (`add`), and the drift over them (`figures`)."""

    def __init__(self, window_s: float = HOUR_S) -> None:
        self.window_s = window_s
        self.samples: deque[Sample] = deque()

    def add(self, s: Sample) -> None:
        """A new sample (times must not go back); samples older than the window are dropped,
        keeping one at or before its start so the whole window is covered."""
        self.samples.append(s)
        while len(self.samples) > 2 and self.samples[1].at <= s.at - self.window_s:
            self.samples.popleft()

    def forget_before(self, at: float) -> None:
        """Drop the samples taken before `at` (a worker that stopped answering: its old samples
        must not count in the last hour's figures for ever, as they did: helper-74)."""
        while self.samples and self.samples[0].at < at:
            self.samples.popleft()

    def figures(self) -> Drift | None:
        """The drift over the samples held; None before two samples."""
        if len(self.samples) < 2:
            return None
        ss = list(self.samples)
        span = ss[-1].at - ss[0].at
        flows = _increase([s.flows for s in ss])
        above = _increase([s.above for s in ss])
        rules = _increase([s.rules for s in ss])
        return Drift(span, flows, above / flows if flows else None,
                     rules * HOUR_S / span if span > 0 else None)


def combined(drifts: list[Drift | None]) -> Drift | None:
    """Several workers' drift as one: flow-windows, those above the threshold and rules summed
    over the workers, each worker's from its own samples (`HourlyDrift` per worker). Summing the
    counters first and taking the increase of the sums read one worker's missed scrape or
    restart as every worker's counters starting again from 0: their lifetime totals counted as
    the last hour's (helper-73: 4.4 million evidence rules an hour). The span is the longest;
    None when no worker has two samples yet."""
    got = [d for d in drifts if d is not None]
    if not got:
        return None
    span = max(d.span_s for d in got)
    flows = sum(d.flows for d in got)
    above = sum(d.share * d.flows for d in got if d.share is not None)
    # each worker's rules over its own span, then per hour over the longest: a worker first
    # heard 2 s ago with one rule is one rule, not 1,800 an hour (helper-74)
    rules = sum(d.rules_per_hour * d.span_s / HOUR_S for d in got if d.rules_per_hour is not None)
    return Drift(span, flows, above / flows if flows else None,
                 rules * HOUR_S / span if span > 0 else None)
