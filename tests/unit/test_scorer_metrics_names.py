"""Every scorer metric is named xdpguard_scorer_* like xdpguard_capture_* / xdpguard_enforcer_*."""
from prometheus_client import generate_latest

from services.scorer.metrics import ScorerMetrics


def test_every_scorer_metric_has_the_project_prefix():
    m = ScorerMetrics()
    names = {metric.name for metric in m.registry.collect()}
    assert names and all(n.startswith("xdpguard_scorer_") for n in names), sorted(names)
    text = generate_latest(m.registry).decode()
    assert "xdpguard_scorer_records_total" in text and "\nscorer_" not in text
