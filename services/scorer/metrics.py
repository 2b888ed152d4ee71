"""Metrics and health of one scorer worker: its Prometheus counters (own registry) and the
`/healthz` answer, both served by services.common.health on SCORER_METRICS_PORT. The stages
count what they do; what is open and how far behind each partition is, is read here.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.health import HealthServer

from . import faust_internals
from .settings import ScorerSettings

if TYPE_CHECKING:
    from .collect import CollectStage
    from .ingest import IngestStage


class ScorerMetrics:
    """The worker's counters, histograms and gauges (names: docs/scorer.md, Metrics)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.records = Counter("xdpguard_scorer_records", "packet records consumed", registry=r)
        self.events = Counter("xdpguard_scorer_events", "packet events folded into windows "
                              "(rate() = events/s)", registry=r)
        self.late = Counter("xdpguard_scorer_late_events", "events for an already closed window (dropped)",
                            registry=r)
        self.future = Counter("xdpguard_scorer_future_events", "events stamped more than "
                              "SCORER_MAX_FUTURE_S ahead of this host's clock (refused), by "
                              "capture node", ["node"], registry=r)
        self.clock_skew = Gauge("xdpguard_scorer_node_clock_skew_seconds", "a capture node's "
                                "newest event time minus this host's clock when it arrived "
                                "(its clock offset less transit time; > 0: ahead)", ["node"],
                                registry=r)
        self.late_flows = Counter("xdpguard_scorer_late_flows", "flows reaching stage 2 after their window "
                                  "closed (dropped)", registry=r)
        self.decode_errors = Counter("xdpguard_scorer_decode_errors", "records sent to the dead-letter topic",
                                     ["topic"], registry=r)
        self.lost = Counter("xdpguard_scorer_lost", "records given up on, each logged: refused by the "
                            "broker for good (too large) or a window that could not be closed",
                            ["what"], registry=r)
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
        # model roll-out (docs/scorer.md, "Model roll-out")
        self.model_records = Counter("xdpguard_scorer_model_records", "models topic records, by "
                                     "outcome: applied, refused (dead-lettered)", ["outcome"],
                                     registry=r)
        self.model_info = Gauge("xdpguard_scorer_model", "1 for the model of each role "
                                "(active: the newest switch; candidate: in its shadow phase)",
                                ["role", "model_id"], registry=r)
        self.windows_by_model = Counter("xdpguard_scorer_model_windows", "windows scored, by the "
                                        "model that scored them", ["model_id"], registry=r)
        self.shadow_windows = Counter("xdpguard_scorer_shadow_windows", "windows the candidate "
                                      "scored beside the active model", registry=r)
        self.shadow_flows = Counter("xdpguard_scorer_shadow_flows", "flows scored by both models, "
                                    "by agreement (agree: both below or both at/above their "
                                    "thresholds)", ["agreement"], registry=r)
        self.shadow_rules = Counter("xdpguard_scorer_shadow_rules", "drop/limit rules the candidate "
                                    "would add or drop, per window", ["change"], registry=r)
        self.partitions = Gauge("xdpguard_scorer_assigned_partitions", "packets partitions this worker owns",
                                registry=r)
        self.open_windows = Gauge("xdpguard_scorer_open_windows", "windows open", ["stage"], registry=r)


class ScorerHealth:
    """`/healthz` and the open-window gauges of one worker, read from both stages. The server
    runs only when SCORER_METRICS_PORT is set (start/stop follow the worker)."""

    def __init__(self, app: faust.App, s: ScorerSettings, metrics: ScorerMetrics,
                 ingest: "IngestStage", collect: "CollectStage") -> None:
        self.app, self.s, self.metrics, self.ingest, self.collect = app, s, metrics, ingest, collect
        self.server: HealthServer | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        if self.s.metrics_port:
            self.server = HealthServer(self.metrics.registry, self.healthy,
                                       host=self.s.metrics_host, port=self.s.metrics_port)
            await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    def refresh_gauges(self) -> None:
        """Set the open-window gauges of both stages (called by every close-windows tick)."""
        sources, dests = self.ingest.sources, self.collect.dests
        self.metrics.open_windows.labels("source").set(sum(len(p.windows) for p in sources.values()))
        self.metrics.open_windows.labels("dest").set(sum(len(p.windows) for p in dests.values()))

    def healthy(self) -> tuple[bool, str]:
        """(True, JSON): owned partitions, open windows, and per owned packets partition what
        holds its windows open (docs/scorer.md, Metrics)."""
        now_ns = time.time_ns()
        sources, dests, announced = self.ingest.sources, self.collect.dests, self.ingest.announced
        return True, json.dumps({
            "app": self.app.conf.id, "packets_partitions": sorted(sources),
            "flows_partitions": sorted(dests),
            "rebalancing": faust_internals.rebalancing(self.app),
            "open_windows": sum(len(p.windows) for p in sources.values()),
            "open_dest_windows": sum(len(q.windows) for q in dests.values()),
            # What holds windows open: each owned packets partition's event-time lag behind this
            # host's clock and the progress it last announced.
            "sources": {p: {"lag_s": round((now_ns - part.watermark()) / 1e9, 3)
                            if part.max_ts else None,
                            "unread": self.ingest.unread(p) or 0,
                            "open": len(part.windows),
                            "polled_s_ago": round(time.monotonic() - part.polled_at, 3)
                            if part.polled_at is not None else None,
                            "announced_lag_s": round((now_ns - announced[p][0]) / 1e9, 3)
                            if p in announced else None}
                        for p, part in sorted(sources.items())},
            # windows wait while the models topic was not read to its end lately (docs/scorer.md,
            # "Model roll-out"): how long ago it was
            "models_read_s_ago": round((now_ns - self.collect.models.known_until_ns) / 1e9, 3)
            if self.collect.models.known_until_ns else None,
            "uptime_s": round(time.time() - self.started_at, 1)})
