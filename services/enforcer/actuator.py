"""The map actuator: carries the policy's decisions out on the maps of the loaded program.

`apply(decision, verdict, now)` evicts what the decision names, installs its rule (evicting the
oldest model rule and retrying while the kernel map is full), tells the policy and records the
rule through the journal (the reconciler, which writes the `rules` topic). `expire(now)` removes
and tombstones the rules whose TTL ran out. `check_reload()` notices that the program was loaded
again (the maps' id changed), opens the new maps and re-installs the allowlist and every tracked
rule. In dry run nothing is written: what would be done is logged and counted, and the policy
still learns it. In learning mode (learning.py) no model decision is carried out either: the rule
goes into the would-apply ledger, is logged and counted, and the policy does not track it, so the
same rule asked for after the period is applied as any new one. The maps come through the `Dataplane` protocol (services/enforcer/maps.py).
"""
from __future__ import annotations

import ipaddress
import logging
import time
from datetime import datetime, timezone
from typing import Callable, Protocol

from services.common.errors import ConfigError, KernelError, MapFull
from services.records.rules import Origin, Rule
from services.records.verdict import Verdict

from .learning import Closed, WouldApplyLedger
from .maps import Dataplane, RuleMaps
from .metrics import EnforcerMetrics
from .policy import Decision, Outcome, RulePolicy

log = logging.getLogger("xdpguard.enforcer")


class RuleJournal(Protocol):
    """Where the actuator records what it did to the maps (the reconciler)."""

    async def applied(self, rule: Rule, verdict_id: str = "") -> None:
        """`rule` is installed (for verdict `verdict_id`, "" if none)."""

    async def removed(self, rule: Rule) -> None:
        """`rule` was deleted from the maps."""


class MapActuator:
    """Owns the open maps (`self.maps`) from start to close. `maps_id` is the id they were
    opened under (Dataplane.maps_id()); `clock` gives Unix epoch ns; `learning`, when given,
    holds model decisions back while its period is active."""

    def __init__(self, dataplane: Dataplane, maps: RuleMaps, maps_id: int, policy: RulePolicy,
                 journal: RuleJournal, metrics: EnforcerMetrics, *, dry_run: bool,
                 clock: Callable[[], int], learning: WouldApplyLedger | None = None) -> None:
        self.dataplane, self.maps, self.maps_id = dataplane, maps, maps_id
        self.policy, self.journal, self.metrics = policy, journal, metrics
        self.dry_run, self.clock, self.learning = dry_run, clock, learning
        self._learned_labels: set[tuple[str, str]] = set()
        if learning is not None:
            self._learning_gauges(clock())
        self._unopened = 0  # maps id of a reload not opened yet (said once, retried each sweep)

    def close(self) -> None:
        """Close the maps; the rules stay in the kernel and keep expiring there."""
        self.maps.close()

    def recount(self) -> None:
        """At start: rebuild the maps' counts and the inline slots' directory (RuleMaps.recount),
        so a write interrupted in another process (a slot left holding a rule with its bit
        cleared, skipped by the program and never expired) is whole again. Not in dry run; a
        failure is logged and the enforcer goes on with the counts as they are."""
        if self.dry_run:
            return
        try:
            counts = self.maps.recount()
        except KernelError as exc:
            log.warning("cannot recount the maps at start: %s", exc)
            return
        log.info("maps recounted: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))

    # -- the allowlist -------------------------------------------------------------------------
    def install_allowlist(self) -> None:
        """Write every network of the policy's allowlist missing from the kernel allowlist."""
        if self.dry_run:
            return
        have = {str(ipaddress.ip_network(str(c), strict=False)) for c in self.maps.allowlist()}
        for cidr in self.policy.allowlist():
            if cidr not in have:
                self.maps.allow_add(cidr)

    def refresh_allowlist(self) -> None:
        """`xdpguard allow add` while we run: the policy sees it before the next decision."""
        try:
            self.policy.set_kernel_allowlist([str(c) for c in self.maps.allowlist()])
        except Exception as exc:  # keep the allowlist we have; say why it may be stale
            log.warning("cannot re-read the kernel allowlist: %s", exc)

    # -- decisions -----------------------------------------------------------------------------
    async def apply(self, d: Decision, verdict: Verdict, now: int) -> None:
        """Carry out an APPLY or REFRESH decision for `verdict` at `now` (epoch ns)."""
        rule = d.rule
        if self.learning is not None and self.learning.holds_back(now):
            self._write_down(d, verdict, now)
            return
        if self.dry_run:
            for old in d.evict:
                log.warning("dry run: would evict %s (oldest model rule, bound reached)", old.key())
            log.info("dry run: would %s %s %s for %.0f s (%s)", d.outcome.value, rule.action.value,
                     rule.key(), (rule.expires_ns - now) / 1e9, verdict.reason)
            self.policy.commit(d, now)
            self.metrics.dry_run.inc()
            return
        for old in d.evict:
            if await self.remove(old, "evicted: model rule bound reached"):
                self.metrics.evicted.inc()
        if not await self._install_making_room(rule):
            return
        self.policy.commit(d, now)
        await self.journal.applied(rule, verdict.verdict_id)
        if d.outcome is Outcome.APPLY:
            self.metrics.applied.inc()
            if verdict.created_ns:
                latency_ns = max(0, time.time_ns() - verdict.created_ns)
                self.metrics.verdict_to_rule.observe(latency_ns / 1e9)
            log.info("applied %s %s for %.0f s (score %.3f, %s; window end -> verdict %.0f ms, "
                     "verdict -> rule %.0f ms)", rule.action.value, rule.key(),
                     (rule.expires_ns - now) / 1e9, verdict.score, verdict.reason,
                     (verdict.created_ns - verdict.window_end_ns) / 1e6,
                     (time.time_ns() - verdict.created_ns) / 1e6)
        else:
            self.metrics.refreshed.inc()
        self.gauges()

    async def _install_making_room(self, rule: Rule) -> bool:
        """Add `rule`; while its map is full, evict the oldest model rule whose deletion makes
        room for it (RuleMaps.frees_room: one in the map `rule` goes to) and retry. False (the
        rule refused as map_full) when no such model rule is left, or (refused as `map`)
        when the maps cannot hold it at all (ConfigError: e.g. a fifth TCP-flag mask for one
        destination). The pin lock is held from the first write to the last retry, so another
        writer (the CLI) cannot take the room an eviction made; the evictions are journaled
        after it is released. Under the lock the origin of `rule`'s key and of each victim is
        read (RuleMaps.origin): a manual rule written there by `xdpguard add` since the last
        sweep is never overwritten (`rule` refused as manual) nor evicted; the model rule the
        policy tracked under that key is untracked and tombstoned (_replaced) instead."""
        evicted: list[tuple[Rule, MapFull]] = []
        replaced: list[Rule] = []
        try:
            with self.maps.locked():
                if self.maps.origin(rule) is Origin.MANUAL:
                    tracked = self.policy.tracked(rule.key())
                    if tracked is not None and tracked.origin is Origin.MODEL:
                        self.policy.untrack(tracked)
                        replaced.append(tracked)
                    self.metrics.refused.labels("manual").inc()
                    log.warning("refused %s: a manual rule holds its key now (xdpguard add)",
                                rule.key())
                    return False
                while True:
                    try:
                        self.maps.add_rule(rule)
                        return True
                    except ConfigError as exc:
                        self.metrics.refused.labels("map").inc()
                        log.error("refused %s: the maps cannot hold it: %s", rule.key(), exc)
                        return False
                    except MapFull as exc:
                        victim = self.policy.evict_for_full_map(
                            rule, lambda v: self.maps.frees_room(v, rule))
                        if victim is None:
                            self.metrics.refused.labels("map_full").inc()
                            log.error("refused %s: %s and no model rule whose eviction makes "
                                      "room for it", rule.key(), exc)
                            return False
                        if self.maps.origin(victim) is Origin.MANUAL:
                            self.policy.untrack(victim)  # the operator's now: not a victim
                            replaced.append(victim)
                            continue
                        self.maps.delete_rule(victim)  # first: a failed delete keeps it tracked
                        self.policy.untrack(victim)
                        evicted.append((victim, exc))
        finally:
            for old in replaced:
                await self._replaced(old)
            for victim, exc in evicted:
                await self.journal.removed(victim)
                self.metrics.evicted.inc()
                log.warning("removed %s (evicted: %s)", victim.key(), exc)

    async def remove(self, rule: Rule, why: str) -> bool:
        """Delete `rule` from the maps and tombstone it; `why` is logged (a warning for
        evictions, whose `why` starts with "evicted"). The maps first: a delete that raises
        leaves the rule tracked, as it is still in the maps (expired or evicted later). If a
        model rule's key holds a manual rule now (`xdpguard add` since the last sweep; read
        under the lock with the delete), that rule is left alone and `rule` only untracked and
        tombstoned (_replaced): False. True when the rule was deleted (or would be, in dry run)."""
        if self.dry_run:
            self.policy.untrack(rule)
            log.info("dry run: would remove %s (%s)", rule.key(), why)
            return True
        with self.maps.locked():
            manual = rule.origin is Origin.MODEL and self.maps.origin(rule) is Origin.MANUAL
            if not manual:
                self.maps.delete_rule(rule)
        if manual:
            self.policy.untrack(rule)
            await self._replaced(rule)
            return False
        self.policy.untrack(rule)
        await self.journal.removed(rule)
        level = logging.WARNING if why.startswith("evicted") else logging.INFO
        log.log(level, "removed %s (%s)", rule.key(), why)
        return True

    async def _replaced(self, rule: Rule) -> None:
        """Model rule `rule`, untracked, was found replaced by a manual rule under its key:
        its record is tombstoned (the model rule is in no map); the next sweep's sync_manual
        mirrors the manual rule into the topic and the policy."""
        await self.journal.removed(rule)
        self.metrics.kept_manual.inc()
        log.warning("kept the manual rule written over model rule %s (xdpguard add): not "
                    "evicted, expired or overwritten as the model rule", rule.key())

    async def expire(self, now: int) -> None:
        """Remove (and tombstone) every rule whose expiry is before `now` (epoch ns)."""
        for rule in self.policy.expire(now):
            if await self.remove(rule, "expired"):
                self.metrics.expired.inc()
        if self.learning is not None:
            closed, ended = self.learning.expire(now)
            self._closed(closed)
            if ended:
                log.warning("learning period ended (%s): model rules are installed from now on; "
                            "%d would-apply rules closed", _when(self.learning.period.until_ns),
                            sum(1 for c in closed if c.why == "period ended"))
            self._learning_gauges(now)

    # -- learning mode ---------------------------------------------------------------------------
    def _write_down(self, d: Decision, verdict: Verdict, now: int) -> None:
        """Learning: `d`'s rule goes into the ledger, logged (once per rule) and counted; nothing
        is written and the policy does not track it (evictions are not made either)."""
        rule = d.rule
        labels = (rule.action.value, rule.scope.value)
        entry, new, closed = self.learning.record(rule, verdict.reason, now)
        self.metrics.learning_verdicts.labels(*labels).inc()
        self._closed(closed)
        if new:
            self.metrics.would_apply.labels(*labels).inc()
            log.info("learning: would apply %s %s for %.0f s (score %.3f, threshold %.3f, model "
                     "%s: %s); not written", rule.action.value, rule.key(),
                     (rule.expires_ns - now) / 1e9, verdict.score, verdict.threshold,
                     verdict.model_id, verdict.reason)
        else:
            log.debug("learning: %s asked for again (%d verdicts)", rule.key(), entry.verdicts)
        self._learning_gauges(now)

    def _closed(self, closed: list[Closed]) -> None:
        """Log and count would-apply entries that ended: how long their rule would have held."""
        for c in closed:
            rule = c.entry.rule
            self.metrics.would_apply_seconds.labels(rule.action.value, rule.scope.value).inc(
                c.seconds)
            log.info("learning: would have applied %s %s from %s for %.0f s (%d verdicts; %s); "
                     "ended: %s", rule.action.value, rule.key(), _when(c.entry.first_ns),
                     c.seconds, c.entry.verdicts, c.entry.reason, c.why)

    def _learning_gauges(self, now: int) -> None:
        """Would-apply rules held now by action and scope (0 for labels seen before), whether
        learning is active at `now`, and the period's end."""
        counts: dict[tuple[str, str], int] = {}
        for e in self.learning.entries():
            labels = (e.rule.action.value, e.rule.scope.value)
            counts[labels] = counts.get(labels, 0) + 1
        self._learned_labels |= set(counts)
        for labels in self._learned_labels:
            self.metrics.would_apply_rules.labels(*labels).set(counts.get(labels, 0))
        self.metrics.learning_active.set(1 if self.learning.holds_back(now) else 0)
        self.metrics.learning_ends.set(self.learning.period.until_ns / 1e9)

    # -- program reloads -----------------------------------------------------------------------
    def check_reload(self) -> None:
        """A program loaded again under us: open the new maps and put every rule back."""
        current = self.dataplane.maps_id()
        if current == 0 or current == self.maps_id:
            return
        try:
            new = self.dataplane.open()
        except KernelError as exc:
            # A load in progress pins the config map before the program (pinned last: "fully
            # loaded"); opening in between crashed the enforcer (CI). Try again next sweep; a
            # program of another layout stays refused, said once.
            if self._unopened != current:
                self._unopened = current
                log.warning("the XDP program was loaded again (maps %d -> %d) but its maps "
                            "cannot be opened yet: %s; retrying", self.maps_id, current, exc)
            return
        log.warning("the XDP program was loaded again (maps %d -> %d): re-installing %d rules",
                    self.maps_id, current, len(self.policy.installed()))
        old, self.maps, self.maps_id = self.maps, new, current
        old.close()
        if self.dry_run:
            return
        self.install_allowlist()
        now = self.clock()
        for rule in self.policy.installed():
            if not rule.expired(now):
                try:
                    with self.maps.locked():  # a manual rule written there since: the sweep's
                        if self.maps.origin(rule) is Origin.MANUAL:  # sync_manual tracks it
                            continue
                        self.maps.add_rule(rule)
                except KernelError as exc:  # one rule the new maps refuse must not stop the rest
                    self.metrics.refused.labels("map").inc()
                    log.error("not re-installed after the reload: %s: %s", rule.key(), exc)
        self.metrics.restored.inc(len(self.policy.installed()))

    # -- gauges --------------------------------------------------------------------------------
    def gauges(self) -> None:
        """Model rules tracked, and each rule map's entries and capacity (not in dry run)."""
        self.metrics.model_rules.set(self.policy.model_count())
        if self.dry_run:
            return
        try:
            occupancy = self.maps.occupancy()
        except Exception as exc:  # a gauge must not stop enforcement; say why it is stale
            log.debug("occupancy unavailable: %s", exc)
            return
        for name, (used, capacity) in occupancy.items():
            self.metrics.occupancy.labels(name).set(used)
            self.metrics.capacity.labels(name).set(capacity)


def _when(epoch_ns: int) -> str:
    """`epoch_ns` as UTC ISO 8601 to the second."""
    return datetime.fromtimestamp(epoch_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
