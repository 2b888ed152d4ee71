"""The data plane as the enforcer sees it: two small typed protocols and the real implementation.

`RuleMaps` is one loaded program's maps, the part of services.dataplane.datapath.Datapath the
enforcer uses (Datapath satisfies it as is). `Dataplane` is where such maps come from: `open()`
opens the maps pinned now, `maps_id()` names them (a new id each time the program is loaded), so
the actuator notices a reload and opens the new maps. `PinnedDataplane` implements it over a pin
directory; unit tests pass tests/support/fake_dataplane.py instead. A unit test checks that
Datapath and the fake both match `RuleMaps` method by method.
"""
from __future__ import annotations

from typing import Callable, ContextManager, Protocol, Sequence

from services.dataplane.datapath import Datapath, RuleStats, pinned_maps_id
from services.dataplane.pinlock import PinDirClaim
from services.records.rules import Origin, Rule


class RuleMaps(Protocol):
    """The rule and allowlist maps of one loaded program. Every call may raise KernelError."""

    def add_rule(self, rule: Rule) -> None:
        """Insert or replace `rule`; MapFull when its map has no room."""

    def delete_rule(self, rule: Rule) -> bool:
        """Remove `rule` (by key); True if it was there."""

    def placement(self, rule: Rule) -> tuple[str, int]:
        """(map, slot or -1) where `rule` is written, from the rule alone (no map read): the
        policy groups model rules by it, so eviction asks frees_room only of rules there."""

    def frees_room(self, victim: Rule, rule: Rule) -> bool:
        """Whether deleting the installed `victim` makes room for `rule`, which add_rule refused
        with MapFull (the maps hold rules in several maps: a victim elsewhere frees nothing)."""

    def origin(self, rule: Rule) -> Origin | None:
        """Origin of the entry held under `rule`'s key (None: none), one lookup, no scan: read
        under locked() before a tracked model rule is deleted or overwritten (the CLI may have
        written a manual rule over its key since the last sweep)."""

    def rules(self) -> Sequence[RuleStats]:
        """Every rule in the maps (`.rule` of each), expiry in Unix epoch ns."""

    def allowlist(self) -> list[str]:
        """The kernel allowlist as CIDR texts."""

    def allow_add(self, cidr: str) -> None:
        """Add `cidr` to the kernel allowlist."""

    def occupancy(self) -> dict[str, tuple[int, int]]:
        """{map name: (entries, max entries)} for the rule maps."""

    def recount(self) -> dict[str, int]:
        """Rebuild the counts the program reads (rule counts, skip filters, the inline slots'
        directory) from the maps themselves; the n_* counts."""

    def locked(self) -> ContextManager:
        """`with maps.locked():` keeps other writers out across several calls (re-entrant)."""

    def close(self) -> None:
        """Release the maps (the rules stay in the kernel)."""


class Dataplane(Protocol):
    """Where the enforcer's maps come from."""

    def maps_id(self) -> int:
        """Id of the maps loaded now (changes when the program is loaded again), 0 if none."""

    def open(self) -> RuleMaps:
        """The maps loaded now. KernelError (NotLoaded, MapMismatch) if they cannot be used,
        e.g. in the middle of a load."""

    def claim(self) -> Callable[[], None]:
        """Claim these maps for this enforcer while it runs; returns what releases the claim.
        KernelError (PinDirClaimed) when another enforcer holds it."""


class PinnedDataplane:
    """The maps of the program pinned in `pin_dir` (XDPGUARD_PIN_DIR)."""

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir

    def maps_id(self) -> int:
        return pinned_maps_id(self.pin_dir)

    def open(self) -> RuleMaps:
        return Datapath.open(self.pin_dir)

    def claim(self) -> Callable[[], None]:
        """services.dataplane.pinlock.PinDirClaim on the pin directory, role "enforcer"."""
        return PinDirClaim(self.pin_dir, "enforcer").acquire().release
