"""Learning mode (ENFORCER_LEARN_UNTIL, issue 18) with the enforcer as a real process, real pinned
maps and the real broker: while learning, a drop verdict writes nothing into the maps or the
`rules` topic (it is logged and counted) while a manual rule is kept and mirrored as always; once
the period is over the same verdict is applied without a restart; and a learning period longer
than the `packets` topic's retention is one warning line at start."""
import asyncio
import time

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.enforcer.ruleslog import read_rules
from services.records.rules import Action, Origin, Rule, Scope
from services.wire.topics import ensure_topics
from tests.support.enforcer_proc import NODE, installed, start_enforcer, verdict
from tests.support.kafka_io import publish
from tests.support.services import http_get, metric, wait_until

LEARN_S = 25  # the period: long enough for a start and one verdict, short enough to wait out


def test_learning_mode_writes_no_model_rule_and_enforces_once_the_period_is_over(
        broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    model = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24")
    manual = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.0/15", origin=Origin.MANUAL)
    until = time.time() + LEARN_S
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_LEARN_UNTIL=f"{until:.3f}")
        assert "LEARNING until" in enf.log(), enf.log()
        asyncio.run(publish(broker, [verdict(model, window=time.time_ns())]))
        wait_until(lambda: metric(http_get(port, "/metrics")[1],
                                  "xdpguard_enforcer_learning_would_apply_total") == 1,
                   what="the verdict held back as would-apply")
        assert time.time() < until, "the period ended before the verdict was handled"
        with Datapath.open(pin_dir) as dp:  # `xdpguard add` while learning
            dp.add_rule(manual)
        wait_until(lambda: manual.key() in asyncio.run(read_rules(broker, node=NODE))[0],
                   what="the manual rule mirrored into the rules topic")
        assert set(installed(pin_dir)) == {manual.key()}
        assert model.key() not in asyncio.run(read_rules(broker))[0]
        line = next(x for x in enf.log().splitlines() if "learning: would apply" in x)
        assert model.key() in line and "(score" in line and "test" in line
        page = http_get(port, "/metrics")[1]
        assert metric(page, "xdpguard_enforcer_learning_active") == 1
        assert metric(page, "xdpguard_enforcer_rules_applied_total") == 0
        assert "learning mode: topic" not in enf.log()  # 6 h retention covers 25 s

        wait_until(lambda: "learning period ended" in enf.log(), timeout=LEARN_S + 10,
                   what="the end of the learning period")
        asyncio.run(publish(broker, [verdict(model, window=time.time_ns())]))  # asked again
        wait_until(lambda: model.key() in installed(pin_dir), what="the model rule installed")
        assert manual.key() in installed(pin_dir)
        wait_until(lambda: model.key() in asyncio.run(read_rules(broker, node=NODE))[0],
                   what="the model rule recorded in the rules topic")
        page = http_get(port, "/metrics")[1]
        assert metric(page, "xdpguard_enforcer_learning_active") == 0
        assert metric(page, "xdpguard_enforcer_rules_applied_total") == 1
        assert metric(page, "xdpguard_enforcer_learning_would_apply_seconds_total") > 0
        assert enf.stop() == 0, enf.log()

        # A period far longer than the packets topic keeps records: one warning line at start.
        enf, port = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_GROUP_ID="second",
                                   ENFORCER_LEARN_UNTIL=f"{time.time() + 30 * 86400:.0f}")
        warning = [x for x in enf.log().splitlines() if "learning mode: topic" in x]
        assert len(warning) == 1, enf.log()
        assert broker.topic("packets") in warning[0] and "retention.ms=21600000" in warning[0]
        assert "720.0 h left" in warning[0] or "719.9 h left" in warning[0]
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)
