"""A scorer worker's faust app and Scorer built without a broker (faust objects only: nothing
is started), for unit tests of the wiring, the tables and the faust internals."""
from __future__ import annotations

from services.common.settings import CommonSettings
from services.scorer.app import create_app
from services.scorer.scoring import VerdictPolicy
from services.scorer.service import Scorer
from services.scorer.settings import ScorerSettings


class StubDetector:
    """The detector attributes the wiring reads (no model: nothing gets scored)."""
    threshold, wide_threshold, model_id, horizon_windows = 0.5, 0.5, "test", 10


def scorer_without_broker() -> Scorer:
    """A Scorer with default settings; its app is `.app`, its topics and tables `.topics`."""
    _, scorer = create_app(ScorerSettings(), CommonSettings(), StubDetector(), VerdictPolicy())
    return scorer
