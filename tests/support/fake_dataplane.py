"""An in-memory data plane for unit tests of the enforcer, in place of the pinned BPF maps.

`FakeMaps` satisfies services.enforcer.maps.RuleMaps (tests/unit/test_enforcer_protocols.py checks
it against the protocol, as it checks Datapath): rules by key, an allowlist, one capacity for all
rules (MapFull beyond it, as a full kernel map) or, with `pool`, that capacity for each pool
of rules (`pool(rule)` names the map a rule goes to: frees_room says whether a victim is in the
full one), at most XG_LIMIT_MASKS TCP-flag masks per limited
destination (ConfigError beyond, as Datapath), and the order of writes. `FakeDataplane`
satisfies Dataplane: the test loads a "program" again with `reload()` (new maps id, new empty
maps) and can make the next `open()` calls fail, as in the middle of a load.
"""
from __future__ import annotations

import contextlib
from typing import Callable

from services.common.errors import ConfigError, KernelError, MapFull
from services.dataplane.datapath import RuleStats
from services.dataplane.structs import XG_LIMIT_MASKS
from services.records.rules import Origin, Rule, Scope


class FakeMaps:
    """Rule and allowlist maps in memory. `writes` lists ("add" | "delete", rule key) in order."""

    def __init__(self, capacity: int = 1000, allowlist: tuple[str, ...] = (),
                 pool: Callable[[Rule], str] = lambda rule: "rules") -> None:
        self.installed: dict[str, Rule] = {}
        self.allowed: list[str] = list(allowlist)
        self.capacity, self.pool = capacity, pool
        self.writes: list[tuple[str, str]] = []
        self.closed = False
        self.frees_asked = 0  # frees_room calls
        self.origins_locked: list[bool] = []  # per origin() call: made while locked() was held
        self.lock_depth = 0  # locked() entered and not left
        self.recounts = 0  # recount() calls
        self.writes_locked: list[bool] = []  # per write: made while locked() was held

    def recount(self) -> dict[str, int]:
        self._open()
        self.recounts += 1
        return {"rules": len(self.installed)}

    @contextlib.contextmanager
    def locked(self):
        self.lock_depth += 1
        try:
            yield self
        finally:
            self.lock_depth -= 1

    def _open(self) -> None:
        if self.closed:
            raise KernelError("fake maps used after close()")

    def add_rule(self, rule: Rule) -> None:
        self._open()
        same = [r for r in self.installed.values() if self.pool(r) == self.pool(rule)]
        if rule.key() not in self.installed and len(same) >= self.capacity:
            raise MapFull(f"{self.pool(rule)} map is full ({self.capacity} entries)")
        if rule.scope is Scope.DST_LIMIT:
            masks = {r.tcp_flags for r in self.installed.values()
                     if r.scope is Scope.DST_LIMIT and r.dst == rule.dst} | {rule.tcp_flags}
            if len(masks) > XG_LIMIT_MASKS:
                raise ConfigError(f"at most {XG_LIMIT_MASKS} distinct TCP-flag masks per destination")
        self.installed[rule.key()] = rule
        self.writes.append(("add", rule.key()))
        self.writes_locked.append(self.lock_depth > 0)

    def delete_rule(self, rule: Rule) -> bool:
        self._open()
        self.writes.append(("delete", rule.key()))
        self.writes_locked.append(self.lock_depth > 0)
        return self.installed.pop(rule.key(), None) is not None

    def placement(self, rule: Rule) -> tuple[str, int]:
        return self.pool(rule), -1

    def frees_room(self, victim: Rule, rule: Rule) -> bool:
        self._open()
        self.frees_asked += 1
        return victim.key() in self.installed and self.pool(victim) == self.pool(rule)

    def origin(self, rule: Rule) -> Origin | None:
        self._open()
        self.origins_locked.append(self.lock_depth > 0)
        held = self.installed.get(rule.key())
        return None if held is None else held.origin

    def rules(self) -> list[RuleStats]:
        self._open()
        return [RuleStats(rule, 0, 0) for rule in self.installed.values()]

    def allowlist(self) -> list[str]:
        self._open()
        return list(self.allowed)

    def allow_add(self, cidr: str) -> None:
        self._open()
        self.allowed.append(cidr)

    def occupancy(self) -> dict[str, tuple[int, int]]:
        self._open()
        return {"rules": (len(self.installed), self.capacity)}

    def close(self) -> None:
        self.closed = True


class FakeDataplane:
    """The program "loaded" now: `maps` with id `current_id`. `open_errors` are raised, one per
    call, by the next open() calls; `opened` counts the calls."""

    def __init__(self, maps: FakeMaps | None = None, maps_id: int = 1) -> None:
        self.maps = maps if maps is not None else FakeMaps()
        self.current_id = maps_id
        self.open_errors: list[Exception] = []
        self.opened = 0
        self.claimed = 0  # claims held (an enforcer's while it runs; not in a dry run)

    def maps_id(self) -> int:
        return self.current_id

    def claim(self):
        self.claimed += 1

        def release() -> None:
            self.claimed -= 1
        return release

    def open(self) -> FakeMaps:
        self.opened += 1
        if self.open_errors:
            raise self.open_errors.pop(0)
        return self.maps

    def reload(self, maps: FakeMaps | None = None) -> FakeMaps:
        """Load the program again: a new maps id and new (empty unless given) maps."""
        self.current_id += 1
        self.maps = maps if maps is not None else FakeMaps()
        return self.maps
