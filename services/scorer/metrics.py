"""Prometheus metrics of one scorer worker (own registry, served by services.common.health)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ScorerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.records = Counter("xdpguard_scorer_records", "packet records consumed", registry=r)
        self.events = Counter("xdpguard_scorer_events", "packet events folded into windows "
                              "(rate() = events/s)", registry=r)
        self.late = Counter("xdpguard_scorer_late_events", "events for an already closed window (dropped)",
                            registry=r)
        self.late_flows = Counter("xdpguard_scorer_late_flows", "flows reaching stage 2 after their window "
                                  "closed (dropped)", registry=r)
        self.decode_errors = Counter("xdpguard_scorer_decode_errors", "records sent to the dead-letter topic",
                                     ["topic"], registry=r)
        self.windows_closed = Counter("xdpguard_scorer_windows_closed", "windows closed", ["stage"], registry=r)
        self.windows_scored = Counter("xdpguard_scorer_windows_scored", "stage 2 windows scored", registry=r)
        self.flows_scored = Counter("xdpguard_scorer_flows_scored", "flows scored", registry=r)
        self.anomalies = Counter("xdpguard_scorer_anomalies", "flows at or above the threshold", registry=r)
        self.verdicts = Counter("xdpguard_scorer_verdicts", "verdicts published", ["action"], registry=r)
        self.scoring_seconds = Histogram(
            "xdpguard_scorer_scoring_seconds", "one batched model call", registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.detect_lag = Histogram(
            "xdpguard_scorer_detect_lag_seconds", "wall clock at verdict minus the window's end (event time)",
            registry=r, buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30))
        self.partitions = Gauge("xdpguard_scorer_assigned_partitions", "packets partitions this worker owns",
                                registry=r)
        self.open_windows = Gauge("xdpguard_scorer_open_windows", "windows open", ["stage"], registry=r)
