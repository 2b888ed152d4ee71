"""The rules-topic reconciler: keeps the compacted `rules` topic and the maps telling one story.

- `applied(rule, verdict_id)` / `removed(rule)`: the record of every rule the actuator installs
  (state applied) or removes (a tombstone); the actuator calls them (it is its RuleJournal).
- `restore(maps)`: at start, deletes model rules the topic no longer holds, tombstones the
  expired ones (deleting a model rule that expired in the maps meanwhile), then installs again
  this node's unexpired rules from the topic (with their original times), in the room the
  deletions made; unexpired manual rules in the maps are tracked and never touched, not even
  by a model rule of the same key in the topic (its record is tombstoned instead: `xdpguard
  add` wrote over it while the enforcer was away) nor by an older manual record of that key
  (the maps' version is mirrored by the next sync_manual). Undecodable records are skipped,
  counted and dead-lettered; so is a decoded rule the maps can never hold (ConfigError: e.g. a
  fifth TCP-flag mask for one destination), which is also tombstoned, so that no record can
  stop a start, once or at every restart; one that does not fit a full map is counted and kept.
- `sync_manual(maps)`: mirrors the operator's manual rules (`xdpguard add` writes only the maps)
  into the topic and tombstones deleted ones, so a reload or reboot restores them too.

The topic itself is behind the small `RulesTopic` protocol (services/enforcer/ruleslog.py's
RulesLog in the service; an in-memory fake in unit tests).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Awaitable, Callable, Protocol

from services.common.errors import ConfigError, MapFull
from services.records.rules import Origin, Rule
from services.wire.codec import RuleRecord

from .maps import RuleMaps
from .metrics import EnforcerMetrics
from .policy import RulePolicy

log = logging.getLogger("xdpguard.enforcer")

# (topic, partition, offset, reason, raw value) of a record that could not be decoded
Deadletter = Callable[[str, int, int, str, "bytes | None"], Awaitable[None]]


class RulesTopic(Protocol):
    """The compacted `rules` topic, as the reconciler uses it."""

    topic: str

    async def write(self, rule: Rule, verdict_id: str = "") -> None:
        """Record `rule` as applied by this node (acknowledged before returning)."""

    async def remove(self, rule: Rule) -> None:
        """Tombstone `rule`'s key."""

    async def read(self) -> tuple[dict[str, RuleRecord], list[tuple]]:
        """This node's latest record per rule key, and the undecodable records met as
        (partition, offset, reason, key, value)."""


class RulesReconciler:
    """Writes and reads the `rules` topic for one enforcer. `dry_run`: restore and mirroring
    touch neither the maps nor the topic (the policy still learns what is there)."""

    def __init__(self, policy: RulePolicy, topic: RulesTopic, metrics: EnforcerMetrics, *,
                 dry_run: bool, restore: bool, deadletter: Deadletter,
                 clock: Callable[[], int]) -> None:
        self.policy, self.topic, self.metrics = policy, topic, metrics
        self.dry_run, self.restore_enabled = dry_run, restore
        self._deadletter, self._clock = deadletter, clock
        self._manual: dict[str, Rule] = {}  # manual rules as last mirrored to the topic

    # -- the record of what the actuator did (RuleJournal) -------------------------------------
    async def applied(self, rule: Rule, verdict_id: str = "") -> None:
        await self.topic.write(rule, verdict_id)

    async def removed(self, rule: Rule) -> None:
        await self.topic.remove(rule)

    # -- start-up --------------------------------------------------------------------------------
    async def restore(self, maps: RuleMaps) -> None:
        """Bring `maps` and the policy to this node's rule set in the topic (see the module
        docstring); with ENFORCER_RESTORE=0 only track what the maps hold."""
        in_maps = {s.rule.key(): s.rule for s in maps.rules()}
        for rule in in_maps.values():
            if rule.origin is Origin.MANUAL:
                self.policy.track(rule)  # manual rules are the operator's: known, never evicted
        if not self.restore_enabled:
            for rule in in_maps.values():
                if rule.origin is Origin.MODEL:
                    self.policy.track(rule)
            return
        records, bad_records = await self.topic.read()
        for partition, offset, reason, _key, value in bad_records:
            await self._deadletter(self.topic.topic, partition, offset, reason, value)
        now = self._clock()
        # What leaves the maps goes first, so the rules restored next have its room (a full map
        # refused them, and nothing tried them again, while a stale rule held it: helper-51).
        stale = [r for k, r in in_maps.items() if r.origin is Origin.MODEL and k not in records]
        for rule in stale:  # a model rule the topic no longer holds was removed while we were away
            if not self.dry_run:
                maps.delete_rule(rule)
        for key, rec in records.items():
            rule = rec.rule
            if rule.expired(now) and not self.dry_run:
                await self.removed(rule)
                held = in_maps.get(key)
                if held is not None and held.origin is Origin.MODEL and held.expired(now):
                    maps.delete_rule(held)  # expired while we were away: nobody else will
        restored = 0
        for key, rec in records.items():
            rule = rec.rule
            if rule.expired(now):
                continue
            rule = self._capped(rule, rec.updated_ns, now)
            held = in_maps.get(key)
            if held is not None and held.origin is Origin.MANUAL and not held.expired(now):
                if rule.origin is Origin.MODEL:
                    await self._kept_manual(rule)
                    continue
                if not same_in_maps(held, rule):  # the operator rewrote it while we were away:
                    log.info("kept manual rule %s as the maps hold it (changed since it was "
                             "recorded); the next sweep records it", key)
                    continue  # tracked above; not in _manual, so sync_manual mirrors it
            if not self.dry_run and not same_in_maps(held, rule):
                try:
                    maps.add_rule(rule)  # only if needed: a replace costs writes (counters kept)
                except ConfigError as exc:  # this program can never hold it
                    await self._refused(rec, exc)
                    continue
                except MapFull as exc:  # it may fit maps loaded larger: keep it in the topic
                    self.metrics.refused.labels("map_full").inc()
                    log.error("%s not restored: %s", key, exc)
                    continue
            self.policy.track(rule)
            if rule.origin is Origin.MANUAL:
                self._manual[key] = rule  # already in the topic: no rewrite
            restored += 1
        self.metrics.restored.inc(restored)
        log.info("restored %d rules from %s (%d undecodable, %d stale model rules removed)",
                 restored, self.topic.topic, len(bad_records), len(stale))

    def _capped(self, rule: Rule, written_ns: int, now: int) -> Rule:
        """A model rule as restored: expiring at most ENFORCER_MAX_TTL_S after its record was
        written (`written_ns`, the record's `updated`: a refresh rewrites it with a new expiry
        and the original creation time; its creation time when the record has none; never later
        than now). The enforcer writes every model rule with a TTL within that bound, so a record
        without an expiry or beyond it was not its own (forged or corrupted), and was installed
        for good (helper-72)."""
        if rule.origin is not Origin.MODEL:
            return rule
        cap = min(written_ns or rule.created_ns, now) + int(self.policy.config.max_ttl_s * 1e9)
        if rule.expires_ns and rule.expires_ns <= cap:
            return rule
        log.warning("model rule %s restored with an expiry %s: capped to ENFORCER_MAX_TTL_S "
                    "(%g s) after its record was written", rule.key(),
                    "of never" if not rule.expires_ns else "beyond ENFORCER_MAX_TTL_S",
                    self.policy.config.max_ttl_s)
        return dataclasses.replace(rule, expires_ns=cap)

    async def _kept_manual(self, rule: Rule) -> None:
        """Model rule `rule` (unexpired, in the topic) finds a manual rule under its key in the
        maps at start: `xdpguard add` wrote it while the enforcer was away, or after its last
        sweep. The operator's rule stays (tracked above, mirrored by the next sync_manual); the
        model record is tombstoned, not written over it (not in dry run: nothing is written)."""
        self.metrics.kept_manual.inc()
        log.warning("kept the manual rule written over model rule %s (xdpguard add) while the "
                    "enforcer was away: not restored as the model rule", rule.key())
        if not self.dry_run:
            await self.removed(rule)

    async def _refused(self, rec: RuleRecord, exc: Exception) -> None:
        """A restored rule the maps can never hold: counted, dead-lettered with the reason and
        tombstoned (the topic must not say it is applied)."""
        reason = f"rule not restored: {type(exc).__name__}: {exc}"
        log.error("%s: %s", rec.key.decode(errors="replace"), reason)
        self.metrics.refused.labels("restore").inc()
        await self._deadletter(self.topic.topic, rec.partition, rec.offset, reason, rec.raw)
        await self.removed(rec.rule)

    # -- while running ---------------------------------------------------------------------------
    async def sync_manual(self, maps: RuleMaps) -> None:
        """Mirror the manual rules in `maps` into the topic (changed ones rewritten) and
        tombstone those gone since the last call; the policy tracks the same set."""
        if self.dry_run:
            return
        in_maps = {s.rule.key(): s.rule for s in maps.rules() if s.rule.origin is Origin.MANUAL}
        for key, rule in in_maps.items():
            if not same_in_maps(self._manual.get(key), rule):
                self.policy.track(rule)
                await self.applied(rule)
        for key, rule in list(self._manual.items()):
            if key not in in_maps:
                self.policy.untrack(rule)
                await self.removed(rule)
        self._manual = in_maps


def same_in_maps(a: Rule | None, b: Rule) -> bool:
    """Equal as far as the maps can tell (expiry goes through the monotonic clock: jitter of
    less than 50 ms is the same expiry)."""
    return a is not None and a.key() == b.key() and a.action is b.action and \
        a.rate_pps == b.rate_pps and abs(a.expires_ns - b.expires_ns) < 50_000_000
