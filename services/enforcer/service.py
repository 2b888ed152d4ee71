"""The enforcer service: verdicts from Kafka -> policy -> pinned XDP maps and the `rules` topic.

start(): open the pinned maps, build the allowlist (loopback, Kafka bootstrap addresses,
ENFORCER_ALLOWLIST, the kernel's own allowlist) and the local addresses, restore this node's
rules from the `rules` topic, then join its consumer group on `verdicts`. run(): consume verdicts
and sweep expired rules. Verdict offsets are committed before the verdicts are acted on, and ids
are remembered, so a verdict is applied at most once. The policy is services/enforcer/policy.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import subprocess
import time
from typing import Callable

from aiokafka import AIOKafkaConsumer

from services.wire import codec
from services.common.errors import DecodeError, KernelError, MapFull
from services.wire.kafka import bootstrap_hosts, client_options
from services.records.rules import Origin, Rule
from services.common.settings import CommonSettings
from services.records.verdict import Verdict

from .metrics import EnforcerMetrics
from .policy import Decision, Order, Outcome, RulePolicy, RulePolicyConfig
from .ruleslog import RulesLog, read_rules
from .settings import EnforcerSettings

log = logging.getLogger("xdpguard.enforcer")


def _open_datapath(pin_dir: str):
    from services.dataplane.datapath import Datapath
    return Datapath.open(pin_dir)


class Enforcer:
    def __init__(self, common: CommonSettings, settings: EnforcerSettings, *,
                 open_datapath: Callable = _open_datapath, clock: Callable[[], int] = time.time_ns):
        self.common, self.settings, self.clock = common, settings, clock
        self._open_datapath = open_datapath
        self.metrics = EnforcerMetrics()
        self.datapath = None
        self.policy: RulePolicy | None = None
        self.rules_log = RulesLog(common)
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = False
        self._beat = time.monotonic()
        self._map_id = 0
        self._unopened = 0  # maps id of a reload not opened yet (said once, retried each sweep)
        self._manual: dict[str, Rule] = {}  # manual rules as last mirrored to the topic

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._map_id = self._maps_id()
        self.datapath = self._open_datapath(self.common.pin_dir)
        self.policy = RulePolicy(RulePolicyConfig(
            node_id=self.common.node_id, allowlist=tuple(self._allowlist()),
            local_addresses=tuple(local_addresses()) + tuple(self.settings.protect),
            ttl_s=self.settings.ttl_s, max_ttl_s=self.settings.max_ttl_s,
            max_per_second=self.settings.max_per_second, max_per_minute=self.settings.max_per_minute,
            max_per_source=self.settings.max_per_source,
            max_model_rules=self.settings.max_model_rules))
        self._install_allowlist()
        await self.rules_log.start()
        await self._restore()
        group = self.settings.group_id or f"xdpguard-enforcer-{self.common.node_id}"
        self.consumer = AIOKafkaConsumer(
            self.common.topic("verdicts"), **client_options(self.common), group_id=group,
            enable_auto_commit=False, fetch_max_wait_ms=100,
            auto_offset_reset="earliest" if self.settings.from_beginning else "latest")
        await self.consumer.start()
        await self._wait_assigned()
        self.ready = True
        log.info("enforcer %s ready: %d rules installed, allowlist %s%s", self.common.node_id,
                 len(self.policy.installed()), ", ".join(self.policy.allowlist()),
                 " (DRY RUN)" if self.settings.dry_run else "")

    async def _wait_assigned(self, timeout: float = 60) -> None:
        """Ready means partitions assigned and positions resolved: no verdict published after
        this point is missed (with auto_offset_reset=latest a later resolution would skip it)."""
        async with asyncio.timeout(timeout):
            while not self.consumer.assignment():
                await asyncio.sleep(0.1)
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)

    async def stop(self) -> None:
        was_ready, self.ready = self.ready, False
        try:
            if was_ready:
                try:
                    await self._sync_manual()  # an `xdpguard add` just before stopping survives
                except Exception as exc:  # stopping must go on; say what was not mirrored
                    log.error("manual rules not mirrored to the rules topic: %s", exc)
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            self.consumer = None
            try:
                await self.rules_log.stop()
            finally:
                if self.datapath is not None:
                    self.datapath.close()
                    self.datapath = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume(), name="enforcer-consume")
            tg.create_task(self._sweep(), name="enforcer-sweep")

    def healthy(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "starting"
        age = time.monotonic() - self._beat
        return (age < 10, f"last loop {age:.1f} s ago")

    # -- verdicts ------------------------------------------------------------------------------
    async def _consume(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            self._beat = time.monotonic()
            if not batch:
                continue
            await self.consumer.commit()  # before acting: at most once
            self._refresh_allowlist()
            for tp, records in batch.items():
                for r in records:
                    try:
                        verdict = codec.decode_verdict(r.value)
                    except DecodeError as exc:
                        await self._deadletter(tp.topic, tp.partition, r.offset, str(exc), r.value)
                        continue
                    await self.handle(verdict)

    async def handle(self, verdict: Verdict) -> Decision:
        rule = verdict.rule
        ttl = (rule.expires_ns - rule.created_ns) / 1e9 if rule.expires_ns > rule.created_ns else 0.0
        order = Order(id=verdict.verdict_id, node=verdict.node, rule=rule, ttl_s=ttl,
                      reason=verdict.reason)
        now = self.clock()
        d = self.policy.decide(order, now)
        self.metrics.verdicts.labels(d.outcome.value).inc()
        if d.outcome is Outcome.REFUSE:
            self.metrics.refused.labels(d.code or "other").inc()
            log.warning("refused %s: %s", rule.key(), d.reason)
        elif d.outcome in (Outcome.APPLY, Outcome.REFRESH):
            await self._apply(d, verdict, now)
        return d

    async def _apply(self, d: Decision, verdict: Verdict, now: int) -> None:
        rule = d.rule
        if self.settings.dry_run:
            for old in d.evict:
                log.warning("dry run: would evict %s (oldest model rule, bound reached)", old.key())
            log.info("dry run: would %s %s %s for %.0f s (%s)", d.outcome.value, rule.action.value,
                     rule.key(), (rule.expires_ns - now) / 1e9, verdict.reason)
            self.policy.commit(d, now)
            self.metrics.dry_run.inc()
            return
        for old in d.evict:
            await self._remove(old, "evicted: model rule bound reached")
            self.metrics.evicted.inc()
        while True:
            try:
                self.datapath.add_rule(rule)
                break
            except MapFull as exc:
                victim = self.policy.evict_for_full_map()
                if victim is None:
                    self.metrics.refused.labels("map_full").inc()
                    log.error("refused %s: %s and no model rule left to evict", rule.key(), exc)
                    return
                await self._remove(victim, f"evicted: {exc}")
                self.metrics.evicted.inc()
        self.policy.commit(d, now)
        await self.rules_log.write(rule, verdict.verdict_id)
        if d.outcome is Outcome.APPLY:
            self.metrics.applied.inc()
            if verdict.created_ns:
                self.metrics.verdict_to_rule.observe(max(0, time.time_ns() - verdict.created_ns) / 1e9)
            log.info("applied %s %s for %.0f s (score %.3f, %s; window end -> verdict %.0f ms, "
                     "verdict -> rule %.0f ms)", rule.action.value, rule.key(),
                     (rule.expires_ns - now) / 1e9, verdict.score, verdict.reason,
                     (verdict.created_ns - verdict.window_end_ns) / 1e6,
                     (time.time_ns() - verdict.created_ns) / 1e6)
        else:
            self.metrics.refreshed.inc()
        self._gauges()

    async def _remove(self, rule: Rule, why: str) -> None:
        self.policy.untrack(rule)
        if self.settings.dry_run:
            log.info("dry run: would remove %s (%s)", rule.key(), why)
            return
        self.datapath.delete_rule(rule)
        await self.rules_log.remove(rule)
        log.warning("removed %s (%s)", rule.key(), why) if why.startswith("evicted") else \
            log.info("removed %s (%s)", rule.key(), why)

    async def _deadletter(self, topic: str, partition: int, offset: int, reason: str,
                          raw: bytes | None) -> None:
        self.metrics.deadletters.inc()
        log.warning("undecodable verdict at %s[%d]@%d: %s", topic, partition, offset, reason)
        value = codec.encode_deadletter(topic, partition, offset, reason, raw, "enforcer")
        await self.rules_log.send(self.common.topic("deadletter"), None, value)

    def _refresh_allowlist(self) -> None:
        """`xdpguard allow add` while we run: the policy sees it before the next decision."""
        try:
            self.policy.set_kernel_allowlist([str(c) for c in self.datapath.allowlist()])
        except Exception as exc:  # keep the allowlist we have; say why it may be stale
            log.warning("cannot re-read the kernel allowlist: %s", exc)

    # -- program reloads and manual rules ------------------------------------------------------
    def _maps_id(self) -> int:
        """Id of the pinned config map (changes when the program is loaded again), 0 if none."""
        import os

        from services.dataplane import bpfsys
        path = os.path.join(self.common.pin_dir, "config")
        try:
            fd = bpfsys.obj_get(path)
        except Exception:
            return 0
        try:
            return bpfsys.map_info(fd).id
        finally:
            os.close(fd)

    async def _check_reload(self) -> None:
        """A program loaded again under us: open the new maps and put every rule back."""
        current = self._maps_id()
        if current == 0 or current == self._map_id:
            return
        try:
            new = self._open_datapath(self.common.pin_dir)
        except KernelError as exc:
            # A load in progress pins the config map before the program (pinned last: "fully
            # loaded"); opening in between crashed the enforcer (CI). Try again next sweep; a
            # program of another layout stays refused, said once.
            if self._unopened != current:
                self._unopened = current
                log.warning("the XDP program was loaded again (maps %d -> %d) but its maps "
                            "cannot be opened yet: %s; retrying", self._map_id, current, exc)
            return
        log.warning("the XDP program was loaded again (maps %d -> %d): re-installing %d rules",
                    self._map_id, current, len(self.policy.installed()))
        old, self.datapath = self.datapath, new
        self._map_id = current
        if old is not None:
            old.close()
        if self.settings.dry_run:
            return
        self._install_allowlist()
        now = self.clock()
        for rule in self.policy.installed():
            if not rule.expired(now):
                self.datapath.add_rule(rule)
        self.metrics.restored.inc(len(self.policy.installed()))

    async def _sync_manual(self) -> None:
        """Mirror the operator's manual rules (written by `xdpguard add` to the maps only) into
        the rules topic, so a reload or reboot restores them too; tombstone deleted ones."""
        if self.settings.dry_run:
            return
        in_maps = {s.rule.key(): s.rule for s in self.datapath.rules()
                   if s.rule.origin is Origin.MANUAL}
        for key, rule in in_maps.items():
            if not _same(self._manual.get(key), rule):
                self.policy.track(rule)
                await self.rules_log.write(rule)
        for key, rule in list(self._manual.items()):
            if key not in in_maps:
                self.policy.untrack(rule)
                await self.rules_log.remove(rule)
        self._manual = in_maps

    # -- expiry --------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_ms / 1000)
            self._beat = time.monotonic()
            await self._check_reload()
            await self._sync_manual()
            for rule in self.policy.expire(self.clock()):
                await self._remove(rule, "expired")
                self.metrics.expired.inc()
            self._gauges()

    def _gauges(self) -> None:
        self.metrics.model_rules.set(self.policy.model_count())
        if self.datapath is not None and not self.settings.dry_run:
            try:
                occ = self.datapath.occupancy()
            except Exception as exc:  # a gauge must not stop enforcement; say why it is stale
                log.debug("occupancy unavailable: %s", exc)
                return
            for name, value in (occ.items() if isinstance(occ, dict) else [("rules", occ)]):
                if isinstance(value, (tuple, list)):  # (used, capacity)
                    self.metrics.occupancy.labels(name).set(value[0])
                    self.metrics.capacity.labels(name).set(value[1])
                elif isinstance(value, (int, float)):
                    self.metrics.occupancy.labels(name).set(value)

    # -- start-up helpers ----------------------------------------------------------------------
    def _allowlist(self) -> list[str]:
        cidrs = ["127.0.0.0/8", "::1/128"]
        for host in bootstrap_hosts(self.common):
            for info in _resolve(host):
                cidrs.append(f"{info}/{32 if ':' not in info else 128}")
        cidrs.extend(self.settings.allowlist)
        try:
            cidrs.extend(str(c) for c in self.datapath.allowlist())
        except Exception as exc:  # an unreadable kernel allowlist must not hide the others
            log.warning("cannot read the kernel allowlist: %s", exc)
        return list(dict.fromkeys(str(ipaddress.ip_network(c, strict=False)) for c in cidrs))

    def _install_allowlist(self) -> None:
        if self.settings.dry_run:
            return
        have = {str(ipaddress.ip_network(str(c), strict=False)) for c in self.datapath.allowlist()}
        for cidr in self.policy.allowlist():
            if cidr not in have:
                self.datapath.allow_add(cidr)

    async def _restore(self) -> None:
        in_maps = {s.rule.key(): s.rule for s in self.datapath.rules()}
        for rule in in_maps.values():
            if rule.origin is Origin.MANUAL:
                self.policy.track(rule)  # manual rules are the operator's: known, never evicted
        if not self.settings.restore:
            for rule in in_maps.values():
                if rule.origin is Origin.MODEL:
                    self.policy.track(rule)
            return
        bad_records: list = []
        records, bad = await read_rules(self.common, node=self.common.node_id,
                                        bad_records=bad_records)
        for partition, offset, reason, _key, value in bad_records:
            await self._deadletter(self.rules_log.topic, partition, offset, reason, value)
        now = self.clock()
        restored = 0
        for key, rec in records.items():
            rule = rec.rule
            if rule.expired(now):
                if not self.settings.dry_run:
                    await self.rules_log.remove(rule)
                continue
            if not self.settings.dry_run:
                self.datapath.add_rule(rule)
            self.policy.track(rule)
            if rule.origin is Origin.MANUAL:
                self._manual[key] = rule  # already in the topic: no rewrite
            restored += 1
        stale = [r for k, r in in_maps.items() if r.origin is Origin.MODEL and k not in records]
        for rule in stale:  # a model rule the topic no longer holds was removed while we were away
            if not self.settings.dry_run:
                self.datapath.delete_rule(rule)
        self.metrics.restored.inc(restored)
        log.info("restored %d rules from %s (%d undecodable, %d stale model rules removed)",
                 restored, self.rules_log.topic, bad, len(stale))


def _same(a: Rule | None, b: Rule) -> bool:
    """Equal as far as the maps can tell (expiry goes through the monotonic clock: jitter)."""
    return a is not None and a.key() == b.key() and a.action is b.action and \
        a.rate_pps == b.rate_pps and abs(a.expires_ns - b.expires_ns) < 50_000_000


def _resolve(host: str) -> list[str]:
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except socket.gaierror:
        log.warning("cannot resolve Kafka bootstrap host %s for the allowlist", host)
        return []


def local_addresses() -> list[str]:
    """This network namespace's own addresses (never a verdict's target)."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                             check=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot list local addresses (%s); only loopback protected", exc)
        return []
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])
            if a.get("local")]
