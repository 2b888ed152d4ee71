"""The enforcer's seams (typing.Protocols): the data plane (services/enforcer/maps.py), the rules
topic (reconciler.py) and the actuator's journal (actuator.py). The real implementations and the
fakes the unit tests use match each protocol method by method (names, parameters, sync or
async), so a change to one that another does not follow fails here, not in production."""
from __future__ import annotations

import inspect

import pytest

from services.common.errors import NotLoaded
from services.dataplane.datapath import Datapath
from services.enforcer.actuator import RuleJournal
from services.enforcer.maps import Dataplane, PinnedDataplane, RuleMaps
from services.enforcer.reconciler import RulesReconciler, RulesTopic
from services.enforcer.ruleslog import RulesLog
from tests.support.fake_dataplane import FakeDataplane, FakeMaps
from tests.support.fake_rules_topic import FakeRulesTopic


def members(protocol) -> list[str]:
    return sorted(n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_"))


def params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("protocol,impl", [
    (RuleMaps, Datapath), (RuleMaps, FakeMaps), (Dataplane, PinnedDataplane),
    (Dataplane, FakeDataplane), (RulesTopic, RulesLog), (RulesTopic, FakeRulesTopic),
    (RuleJournal, RulesReconciler)], ids=lambda x: x.__name__)
def test_implementations_match_the_protocol(protocol, impl):
    assert members(protocol), protocol
    for name in members(protocol):
        want, got = getattr(protocol, name), getattr(impl, name, None)
        assert callable(got), f"{impl.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), name
        # the protocol's parameters first, as declared; any more must be optional
        assert params(got)[:len(params(want))] == params(want), name
        assert all(d is not inspect.Parameter.empty for _, d in params(got)[len(params(want)):])


def test_the_pinned_data_plane_without_a_program(tmp_path):
    dp = PinnedDataplane(str(tmp_path))
    assert dp.maps_id() == 0
    with pytest.raises(NotLoaded):
        dp.open()
