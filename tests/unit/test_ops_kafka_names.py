"""Names an operator sees in `xdpguard groups` (issue 14, items 3 and 6): the enforcer's consumer
group is under the topic prefix (`<prefix>enforcer-<node id>`, so two deployments sharing a
cluster never share it), and each scorer worker's Kafka client id names the app, the host and
the worker process (`<app id>-<node id>-<pid>`), not faust's `faust-<version>`."""
from __future__ import annotations

import os

import faust

from services.common.settings import load_common
from services.enforcer.service import Enforcer
from services.enforcer.settings import load_enforcer
from services.scorer.app import create_app, faust_settings
from services.scorer.scoring import VerdictPolicy
from services.scorer.settings import ScorerSettings
from tests.support.fake_dataplane import FakeDataplane, FakeMaps


class _Detector:
    threshold, wide_threshold, model_id = 0.5, 0.5, "t"


def test_the_enforcer_group_is_under_the_topic_prefix_and_names_the_node():
    maps = FakeMaps()
    for prefix in ("xdpguard.", "site-b."):
        common = load_common(topic_prefix=prefix, node_id="edge-7")
        e = Enforcer(common, load_enforcer(), dataplane=FakeDataplane(maps))
        assert e.group_id == f"{prefix}enforcer-edge-7"
    # ENFORCER_GROUP_ID, when set, is taken as it is
    e = Enforcer(load_common(topic_prefix="a."), load_enforcer(group_id="mine"),
                 dataplane=FakeDataplane(maps))
    assert e.group_id == "mine"


def test_the_scorer_worker_client_id_names_app_node_and_process():
    common = load_common(topic_prefix="p.", node_id="edge-7")
    s = ScorerSettings(app_id="scorer-x")
    want = f"scorer-x-edge-7-{os.getpid()}"
    assert faust_settings(s, common)["broker_client_id"] == want
    app, _scorer = create_app(s, common, _Detector(), VerdictPolicy())
    assert isinstance(app, faust.App)
    assert app.conf.broker_client_id == want
    assert not app.conf.broker_client_id.startswith("faust-")
