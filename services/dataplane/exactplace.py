"""Where an exact rule lives (a mixin of Datapath): exact4 for IPv4; for IPv6 exact6, keyed by
the folded 5-tuple (structs.Flow6Fold, value Rule6Val with the addresses' hi halves), unless
exact6 holds another rule under that key (a collision), when it goes to exact6x, keyed by the
whole 5-tuple (docs/dataplane.md, "Match"). A rule is in one of the two, never both."""
from __future__ import annotations

from services.records.rules import Rule

from .entries import flow6, flow_key


class ExactPlace:
    """Needs Datapath's _exists and _read_percpu."""

    def _exact_place(self, rule: Rule) -> tuple[str, object]:
        """(map, key) where exact rule `rule` is or would go: exact4 for IPv4; for IPv6 exact6x
        (by the whole 5-tuple) if it holds the rule or if exact6 holds another rule under the
        rule's folded key, else exact6 (by the folded key). Two lookups at most. exact6x is
        looked up first, so a rule held there is replaced there, not written a second time under
        an exact6 key freed since."""
        name, key = flow_key(rule)
        if name == "exact4":
            return name, key
        _, whole, shi, dhi = flow6(rule)
        if self._exists("exact6x", whole):
            return "exact6x", whole
        held = self._read_percpu("exact6", key)
        if held is not None and (held[0].shi, held[0].dhi) != (shi, dhi):
            return "exact6x", whole
        return "exact6", key

    def _frees_exact6(self, victim: Rule, rule: Rule) -> bool:
        """Whether deleting the installed IPv6 exact rule `victim` makes room for IPv6 exact
        rule `rule`: `victim` is held in the map `rule` goes to (exact6 or exact6x), or `rule`
        goes to exact6x only because `victim` holds its folded key in exact6 (`rule` takes
        that key then). Up to four lookups."""
        goes, _ = self._exact_place(rule)
        held, held_key = self._exact_place(victim)
        if held == goes:
            return True
        return goes == "exact6x" and held == "exact6" and \
            bytes(held_key) == bytes(flow_key(rule)[1])
