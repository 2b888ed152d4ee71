"""A verdict's reason as the scorer writes it (issue 14, item 5): the scorer's stage 2 window
carries flows and per-destination aggregates but no per-source ones, and a source block's
reason printed `3000 anomalous flows [] (score ...)`. A reason now states the evidence that made
the rule (the measure, its value and its bound) and the model's agreement, never empty
brackets; checked on windows closed by the scorer's two stages."""
import re

from services.records.rules import Scope
from services.scorer.scoring import VerdictPolicy, verdicts_for
from tests.support.scorer_stages import T0, run_stages
from tests.support.scorer_traffic import benign, syn_flood, udp_sweep, with_seq

SWEEPER = "10.66.0.1"
EVIDENCE = re.compile(r": \d+ [a-z -]+ \(bound \d+\).* score >= 0\.500 \(top 1\.000\)")


def verdicts(packets, hostile) -> list:
    """Every verdict of the closed windows, flows for which `hostile(key)` scoring 1, others 0."""
    out = []
    for w in run_stages(with_seq(packets)):
        scores = [1.0 if hostile(k) else 0.0 for k in w.keys]
        out += verdicts_for(w, scores, threshold=0.5, model_id="m", policy=VerdictPolicy())
    return out


def test_a_source_block_reason_names_its_evidence_and_no_empty_brackets():
    vs = verdicts(benign(T0, 3.0, clients=10) + udp_sweep(T0, 3.0, per_second=20, src=SWEEPER),
                  lambda k: k[0] == SWEEPER)
    blocks = [v for v in vs if v.rule.scope is Scope.SRC_PREFIX]
    assert blocks and all(v.rule.src == f"{SWEEPER}/32" for v in blocks), [v.reason for v in vs]
    for v in blocks:
        assert "[]" not in v.reason and EVIDENCE.search(v.reason), v.reason


def test_a_flood_limit_reason_names_its_sources_and_evidence():
    vs = verdicts(benign(T0, 1.0, clients=10) + syn_flood(T0, 0.9, pps=500),
                  lambda k: k[1] == "10.99.0.10")
    (v,) = [v for v in vs if v.rule.scope is Scope.DST_LIMIT]
    assert "[]" not in v.reason and EVIDENCE.search(v.reason), v.reason
    assert re.search(r"from \d+ sources", v.reason), v.reason
