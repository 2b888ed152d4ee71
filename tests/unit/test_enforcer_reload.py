"""A program loaded again under a running enforcer: the enforcer re-opens the maps and puts its
rules back, also when it looks in the middle of the load (config map pinned, program not yet),
which used to crash it (CI: "service failed: unhandled errors in a TaskGroup")."""
from __future__ import annotations

import asyncio
import logging

from services.common.errors import NotLoaded
from services.common.settings import CommonSettings
from services.enforcer.service import Enforcer
from services.enforcer.settings import load_enforcer


class _Maps:
    def __init__(self) -> None:
        self.rules, self.allowed, self.closed = [], [], False

    def allowlist(self):
        return []

    def allow_add(self, cidr):
        self.allowed.append(cidr)

    def add_rule(self, rule):
        self.rules.append(rule)

    def close(self):
        self.closed = True


class _Rule:
    def expired(self, now):
        return False


class _Policy:
    def __init__(self, rules) -> None:
        self.rules = rules

    def installed(self):
        return self.rules

    def allowlist(self):
        return ["127.0.0.0/8"]


def test_a_reload_seen_half_done_is_retried_not_a_crash(monkeypatch, caplog):
    opened, results = [], [NotLoaded("no xdpguard program pinned"), NotLoaded("still"), _Maps()]

    def open_datapath(pin_dir):
        opened.append(pin_dir)
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    enf = Enforcer(CommonSettings(), load_enforcer(), open_datapath=open_datapath)
    old = enf.datapath = _Maps()
    enf._map_id, rules = 10, [_Rule(), _Rule()]
    enf.policy = _Policy(rules)
    monkeypatch.setattr(enf, "_maps_id", lambda: 11)  # a new config map is pinned
    with caplog.at_level(logging.WARNING, logger="xdpguard.enforcer"):
        asyncio.run(enf._check_reload())  # program not pinned yet: keep the old, no crash
        asyncio.run(enf._check_reload())  # still loading: retried, not said again
        assert enf.datapath is old and enf._map_id == 10 and not old.closed
        assert sum("cannot be opened yet" in r.message for r in caplog.records) == 1
        asyncio.run(enf._check_reload())  # fully loaded: opened, every rule put back
    new = enf.datapath
    assert new is not old and old.closed and enf._map_id == 11
    assert new.rules == rules and new.allowed == ["127.0.0.0/8"]
    assert len(opened) == 3
    asyncio.run(enf._check_reload())  # same maps: nothing to do
    assert len(opened) == 3
