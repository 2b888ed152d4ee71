"""Drift: the hourly share of flow-windows above threshold and evidence rules fired, from the
scorer's cumulative counters (services.detection.drift), against a band that the Prometheus
alert rules (compose/prometheus/rules/drift.yml) use as well; and `xdpguard top`'s drift line
reads the scorer's exposition."""
from pathlib import Path

import pytest
import yaml

from services.detection.drift import DEFAULT_BAND, DriftBand, HourlyDrift, Sample
from services.manager.drift_view import DriftFeed, parse_counters
from services.scorer.metrics import ScorerMetrics

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "compose" / "prometheus" / "rules" / "drift.yml"


def test_share_and_rules_per_hour_over_the_samples():
    h = HourlyDrift()
    assert h.figures() is None
    h.add(Sample(0, 1000, 10, 0))
    assert h.figures() is None
    h.add(Sample(1800, 11_000, 210, 5))
    d = h.figures()
    assert d.span_s == 1800 and d.flows == 10_000
    assert d.share == pytest.approx(0.02) and d.rules_per_hour == pytest.approx(10.0)


def test_a_worker_restart_counts_from_zero_like_prometheus_increase():
    h = HourlyDrift()
    for s in (Sample(0, 500, 5, 1), Sample(600, 900, 9, 3), Sample(1200, 100, 2, 1)):
        h.add(s)
    d = h.figures()
    assert d.flows == 400 + 100 and d.share == pytest.approx((4 + 2) / 500)
    assert d.rules_per_hour == pytest.approx((2 + 1) * 3)


def test_only_the_last_hour_is_kept():
    h = HourlyDrift()
    h.add(Sample(0, 0, 0, 0))
    h.add(Sample(1800, 1000, 1000, 100))   # a burst, an hour and a half ago
    h.add(Sample(5400, 2000, 1000, 100))
    h.add(Sample(7200, 3000, 1000, 100))
    d = h.figures()
    assert d.span_s == 5400 - 1800 + 1800 and d.share == pytest.approx(0.0)


def test_no_flow_scored_has_no_share():
    h = HourlyDrift()
    h.add(Sample(0, 7, 1, 0))
    h.add(Sample(60, 7, 1, 0))
    assert h.figures().share is None


def test_the_band_names_what_leaves_it():
    b = DriftBand(share_low=0.01, share_high=0.05, rules_high=10)
    assert b.outside(0.02, 3) == [] and b.outside(None, None) == []
    assert b.outside(0.2, 3) == ["20.00% of flow-windows above threshold, band 1.00%-5.00%"]
    assert b.outside(0.005, 12) == ["0.50% of flow-windows above threshold, band 1.00%-5.00%",
                                    "12.0 rules/h, band at most 10"]


def test_a_quiet_sites_share_is_not_judged():
    """A few hundred flow-windows an hour, none above the threshold: not drift."""
    b = DriftBand(share_low=0.01, share_high=0.05, rules_high=10, min_flows=1000)
    assert b.outside(0.0, 0, flows=300) == [] and b.outside(0.5, 0, flows=999) == []
    assert b.outside(0.0, 0, flows=1000) == ["0.00% of flow-windows above threshold, band 1.00%-5.00%"]


def test_prometheus_rules_record_the_figures_and_alert_outside_the_same_band():
    doc = yaml.safe_load(RULES.read_text())
    rules = {r.get("record") or r.get("alert"): r for g in doc["groups"] for r in g["rules"]}
    share = rules["xdpguard:scorer_flows_above_threshold:share1h"]["expr"]
    assert "xdpguard_scorer_anomalies_total[1h]" in share
    assert "xdpguard_scorer_flows_scored_total[1h]" in share
    assert "xdpguard_scorer_verdicts_total[1h]" in rules["xdpguard:scorer_rules_fired:per_hour"]["expr"]
    alert = rules["XdpguardDriftAboveThresholdShare"]["expr"]
    assert f"< {DEFAULT_BAND.share_low}" in alert and f"> {DEFAULT_BAND.share_high}" in alert
    assert f"xdpguard:scorer_flows_scored:per_hour >= {DEFAULT_BAND.min_flows:g}" in alert
    assert "xdpguard_scorer_flows_scored_total[1h]" in rules["xdpguard:scorer_flows_scored:per_hour"]["expr"]
    assert f"> {DEFAULT_BAND.rules_high:g}" in rules["XdpguardDriftRulesFired"]["expr"]
    prom = yaml.safe_load((ROOT / "compose" / "prometheus" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in compose["services"]["prometheus"]["volumes"]


def test_the_counters_are_read_from_a_scorer_exposition():
    from prometheus_client import generate_latest

    m = ScorerMetrics()
    m.flows_scored.inc(400)
    m.anomalies.inc(8)
    m.verdicts.labels("drop").inc(2)
    m.verdicts.labels("rate_limit").inc(1)
    assert parse_counters(generate_latest(m.registry).decode()) == {"flows": 400, "above": 8,
                                                                      "rules": 3}


def test_top_drift_line_before_and_after_a_second_sample():
    feed = DriftFeed(["http://unused"])
    assert "unavailable" in feed.line().plain
    feed.first = {"flows": 1000.0, "above": 300.0, "rules": 0.0}
    feed.hourly["http://unused"].add(Sample(0, 1000, 300, 0))
    line = feed.line()
    assert "since the workers started" in line.plain and "30.00% of 1,000" in line.plain
    assert "OUTSIDE BAND" in line.plain
    feed.hourly["http://unused"].add(Sample(600, 2000, 310, 1))
    assert "last 10 min): 1.00% of 1,000 flow-windows" in feed.line().plain
    assert "6.0 evidence rules/h" in feed.line().plain and "OUTSIDE" not in feed.line().plain


def test_an_endpoint_that_does_not_answer_http_is_named_in_the_line_not_raised():
    import asyncio
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer_garbage():
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"\x00\x01not http at all\r\n\r\n")
        conn.close()

    t = threading.Thread(target=answer_garbage, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/metrics"
    feed = DriftFeed([url], timeout=5)
    try:
        asyncio.run(feed.poll())
    finally:
        t.join(5)
        srv.close()
    assert feed.error.startswith(url + ": ")
    assert feed.line().plain.startswith(f"drift: unavailable ({url}: ")


def test_a_page_without_the_scorer_counters_is_not_read_as_zero_flows():
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    r = CollectorRegistry()
    Counter("node_cpu_seconds", "another exporter", registry=r).inc(5)
    with pytest.raises(ValueError, match="not a scorer's metrics endpoint"):
        parse_counters(generate_latest(r).decode())
    assert parse_counters(generate_latest(ScorerMetrics().registry).decode())["flows"] == 0


def test_poll_sums_the_workers_that_answer_and_names_the_one_that_does_not():
    import asyncio
    import threading

    from prometheus_client import start_http_server

    workers = []
    for flows, above in ((300, 3), (700, 11)):
        m = ScorerMetrics()
        m.flows_scored.inc(flows)
        m.anomalies.inc(above)
        server, thread = start_http_server(0, addr="127.0.0.1", registry=m.registry)
        workers.append((server, thread))
    urls = [f"http://127.0.0.1:{s.server_port}/metrics" for s, _ in workers]
    down = "http://127.0.0.1:1/metrics"
    feed = DriftFeed(urls + [down], timeout=5)
    try:
        asyncio.run(feed.poll())
    finally:
        for server, thread in workers:
            server.shutdown()
            server.server_close()
            thread.join(5)
    assert feed.first == {"flows": 1000.0, "above": 14.0, "rules": 0.0}
    line = feed.line().plain
    assert "1.40% of 1,000 flow-windows" in line and f"[not scraped: {down}: " in line


def test_silent_endpoints_are_waited_for_together_not_one_after_another():
    """Workers are scraped at once, a thread each: ten that accept and never answer (more
    than asyncio's default thread pool holds on 2 cores) cost one timeout per poll; the live
    one's counters still count."""
    import asyncio
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import generate_latest

    m = ScorerMetrics()
    m.flows_scored.inc(50)
    page = generate_latest(m.registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    live = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=live.serve_forever, daemon=True).start()
    silent = []
    for _ in range(10):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)  # accepted by the kernel, never answered
        silent.append(srv)
    urls = [f"http://127.0.0.1:{s.getsockname()[1]}/metrics" for s in silent]
    urls.append(f"http://127.0.0.1:{live.server_address[1]}/metrics")
    feed = DriftFeed(urls, timeout=1.0)
    try:
        t0 = time.monotonic()
        asyncio.run(feed.poll())
        took = time.monotonic() - t0
    finally:
        live.shutdown()
        for s in silent:
            s.close()
    assert took < 1.8, f"{took:.2f} s: scraped one after another"
    assert feed.error.count("http://") == 10 and urls[-1] not in feed.error
    assert feed.first == {"flows": 50.0, "above": 0.0, "rules": 0.0}


def test_one_worker_missing_a_scrape_or_restarting_is_its_own_not_every_workers(monkeypatch):
    """helper-73: two workers scoring 100 flow-windows a poll, no rule fired; worker b misses
    one scrape (then restarts from 0). Summed first, the total fell and read as a restart of
    both: 4.4 million evidence rules an hour. Each worker's increase is its own now."""
    import asyncio

    from services.manager import drift_view

    pages = {"a": [10_000, 100], "b": [200_000, 20_000]}  # lifetime totals: flows, rules
    down = {"b": {3}}
    step = {"n": 0}

    async def scrape(self, url, pool):
        if step["n"] in down.get(url, ()):
            return f"{url}: 503"
        flows, rules = pages[url]
        return {"flows": flows + 100.0 * step["n"], "above": 2.0 * step["n"], "rules": rules}
    monkeypatch.setattr(drift_view.DriftFeed, "_scrape", scrape)
    clock = {"t": 0.0}
    monkeypatch.setattr(drift_view.time, "monotonic", lambda: clock["t"])
    feed = DriftFeed(["a", "b"])
    for n in range(6):
        step["n"], clock["t"] = n, 60.0 * n
        if n == 5:
            pages["b"] = [0, 0]  # b restarted: its counters from 0
        asyncio.run(feed.poll())
        d = drift_view.combined([h.figures() for h in feed.hourly.values()])
        if n >= 1:
            assert d.rules_per_hour == 0.0, (n, d)
            assert d.flows <= 100 * n * 2 + 100 * 5, (n, d)
    assert "0.0 evidence rules/h" in feed.line().plain and "OUTSIDE" not in feed.line().plain


def test_combined_drift_sums_the_workers():
    from services.detection.drift import Drift, combined

    d = combined([Drift(600, 1000, 0.01, 6.0), None, Drift(300, 3000, 0.03, 12.0)])
    # 1 rule in a's 600 s and 1 in b's 300 s: 2 over the longest span, 12 an hour
    got = (d.span_s, d.flows, round(d.share, 6), round(d.rules_per_hour, 6))
    assert got == (600, 4000, 0.025, 12.0)
    assert combined([None, None]) is None
    assert combined([Drift(10, 0, None, None)]).share is None


def test_a_worker_gone_or_new_weighs_what_it_did_in_the_hour(monkeypatch):
    """helper-74: worker b firing 5 rules a minute died at 10 min and still made 300 rules/h at
    2 h (its samples were never dropped); a worker first heard 2 s ago with one rule counted as
    1,800 rules/h (its increase scaled from its own span)."""
    import asyncio

    from services.detection.drift import Drift, combined
    from services.manager import drift_view

    state = {"n": 0, "b_up": True}

    async def scrape(self, url, pool):
        n = state["n"]
        if url == "b" and not state["b_up"]:
            return "b: 503"
        return {"flows": 100.0 * n, "above": 1.0 * n, "rules": 5.0 * n if url == "b" else 0.0}
    monkeypatch.setattr(drift_view.DriftFeed, "_scrape", scrape)
    clock = {"t": 0.0}
    monkeypatch.setattr(drift_view.time, "monotonic", lambda: clock["t"])
    feed = DriftFeed(["a", "b"])
    for n in range(0, 121):  # a poll a minute for 2 hours; b gone after 10 minutes
        state["n"], clock["t"], state["b_up"] = n, 60.0 * n, n <= 10
        asyncio.run(feed.poll())
    d = combined([h.figures() for h in feed.hourly.values()])
    assert d.rules_per_hour == 0.0 and d.flows == 6000, d  # a's last hour only
    late = combined([Drift(3600, 1000, 0.01, 10.0), Drift(2, 5, 0.0, 1800.0)])
    assert round(late.rules_per_hour, 6) == 11.0  # 10 + the 1 rule b fired
