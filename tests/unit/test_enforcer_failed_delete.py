"""A rule the actuator fails to delete stays tracked (helper-51's review, finding 1).

The actuator untracked a rule before deleting it from the maps: when the delete raised (a
KernelError: BpfErrno, or PinDirBusy), the rule stayed in the maps and in the `rules` topic while
the policy had forgotten it, so it was never expired, never tombstoned and never again a victim
for a full map (its room lost until a restart). The delete now comes first: a rule is untracked
only once it is out of the maps."""
from __future__ import annotations

import asyncio

import pytest

from services.common.errors import KernelError
from services.records.verdict import Verdict
from tests.support.enforcer_parts import S, T0, Parts, prefix
from tests.support.fake_dataplane import FakeMaps


class FailingDelete(FakeMaps):
    """FakeMaps whose delete_rule raises KernelError for the keys in `fail` (nothing deleted)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.fail: set[str] = set()

    def delete_rule(self, rule):
        if rule.key() in self.fail:
            raise KernelError(f"delete of {rule.key()} failed")
        return super().delete_rule(rule)


def test_a_victim_whose_eviction_fails_stays_tracked():
    """Map full (capacity 1): the eviction of the oldest rule fails; it is still in the maps, so
    the policy still tracks it (it expires and is tombstoned later) and nothing is journaled."""
    p = Parts(FailingDelete(capacity=1))
    p.verdict(prefix(1))
    p.maps.fail.add(prefix(1).key())
    with pytest.raises(KernelError):
        p.verdict(prefix(2), now=T0 + S)
    assert set(p.maps.installed) == {prefix(1).key()}
    assert {r.key() for r in p.policy.installed()} == {prefix(1).key()}
    assert [k for what, k in p.topic.log if what == "tombstone"] == []
    # the delete works again: the rule expires as any other
    p.maps.fail.clear()
    asyncio.run(p.act.expire(T0 + 700 * S))
    assert p.maps.installed == {}
    assert [k for what, k in p.topic.log if what == "tombstone"] == [prefix(1).key()]


def test_a_bound_eviction_whose_delete_fails_stays_tracked():
    """The model-rule bound (2) names the oldest rule for eviction (Decision.evict); its delete
    fails: it stays tracked, as it stays in the maps."""
    p = Parts(FailingDelete(), max_model_rules=2)
    p.verdict(prefix(1))
    p.verdict(prefix(2), now=T0 + S)
    p.maps.fail.add(prefix(1).key())
    with pytest.raises(KernelError):
        p.verdict(prefix(3), now=T0 + 2 * S)
    assert prefix(1).key() in p.maps.installed
    assert prefix(1).key() in {r.key() for r in p.policy.installed()}

