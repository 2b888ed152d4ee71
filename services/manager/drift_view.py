"""The drift line of `xdpguard top`: the scorer workers' counters scraped from their metrics
endpoints (`--scorer-metrics URL`, repeatable), summed, fed to services.detection.drift and
shown against its band. A worker that cannot be scraped is named in the line, never fatal."""
from __future__ import annotations

import asyncio
import http.client
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from rich.text import Text

from services.detection.drift import DEFAULT_BAND, DriftBand, HourlyDrift, Sample, combined

COUNTERS = {"xdpguard_scorer_flows_scored_total": "flows",
            "xdpguard_scorer_anomalies_total": "above",
            "xdpguard_scorer_verdicts_total": "rules"}
FLOWS = "xdpguard_scorer_flows_scored_total"


def parse_counters(text: str) -> dict[str, float]:
    """{"flows", "above", "rules"}: the drift counters of one Prometheus text exposition
    (labels summed); ValueError when it is not one, or not a scorer's (no flows-scored
    counter, which a scorer exposes from its start: another exporter's page would read as 0)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = dict.fromkeys(COUNTERS.values(), 0.0)
    seen = set()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in COUNTERS:
                out[COUNTERS[s.name]] += s.value
                seen.add(s.name)
    if FLOWS not in seen:
        raise ValueError(f"no {FLOWS} (not a scorer's metrics endpoint)")
    return out


def _fetch(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator's URL
        return resp.read().decode("utf-8", "replace")


class DriftFeed:
    """Samples of each endpoint's counters, one per `poll` per endpoint that answered (`hourly`,
    by URL), combined into one line (drift.combined: a worker's missed scrape or restart is its
    own); `error` names the endpoints that failed at the last poll ("" when all answered)."""

    def __init__(self, urls: list[str], band: DriftBand = DEFAULT_BAND, timeout: float = 2.0) -> None:
        self.urls, self.band, self.timeout = urls, band, timeout
        self.hourly = {url: HourlyDrift() for url in urls}
        self.first: dict[str, float] | None = None
        self.error = ""

    async def _scrape(self, url: str, pool: ThreadPoolExecutor) -> dict[str, float] | str:
        """One endpoint's drift counters, or why it could not be read ("url: reason")."""
        try:
            text = await asyncio.get_running_loop().run_in_executor(pool, _fetch, url,
                                                                     self.timeout)
            return parse_counters(text)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # no HTTP answer
            return f"{url}: {getattr(exc, 'reason', None) or exc}"

    async def poll(self) -> None:
        """Scrape every endpoint at once, a thread each (a silent worker costs one `timeout`
        seconds per poll, not one per silent worker, however many there are) and add their
        sum as a sample."""
        total = dict.fromkeys(COUNTERS.values(), 0.0)
        failed = []
        with ThreadPoolExecutor(max_workers=max(1, len(self.urls))) as pool:
            results = await asyncio.gather(*(self._scrape(url, pool) for url in self.urls))
        now = time.monotonic()
        for url, got in zip(self.urls, results):
            if isinstance(got, str):
                failed.append(got)
                self.hourly[url].forget_before(now - self.hourly[url].window_s)
                continue
            for k, v in got.items():
                total[k] += v
            self.hourly[url].add(Sample(now, got["flows"], got["above"], got["rules"]))
        self.error = "; ".join(failed)
        if failed and len(failed) == len(self.urls):
            return
        if self.first is None:
            self.first = total

    def line(self) -> Text:
        """One line: the figures over the last hour (or since top started, up to an hour), or
        since the workers started before a second sample; outside the band in red."""
        d = combined([h.figures() for h in self.hourly.values()])
        if d is not None:
            share, rules = d.share, d.rules_per_hour
            when = f"last {d.span_s / 60:,.0f} min" if d.span_s < 3540 else "last hour"
            scored = d.flows
        elif self.first is not None:
            scored, rules, when = self.first["flows"], None, "since the workers started"
            share = self.first["above"] / scored if scored else None
        else:
            return Text(f"drift: unavailable ({self.error})", style="bold yellow")
        txt = (f"drift ({when}): {'-' if share is None else f'{share * 100:.2f}%'} of "
               f"{scored:,.0f} flow-windows above threshold, "
               f"{'-' if rules is None else f'{rules:,.1f}'} evidence rules/h "
               f"(band {self.band.share_low * 100:.2f}%-{self.band.share_high * 100:.2f}%, "
               f"<= {self.band.rules_high:,.0f}/h)")
        why = self.band.outside(share, rules, scored)
        if self.error:
            txt += f"  [not scraped: {self.error}]"
        return Text(txt + ("  OUTSIDE BAND" if why else ""), style="bold red" if why else "")
