"""The enforcer service loop: verdicts from Kafka -> policy -> pinned XDP maps and `rules` topic.

start(): create or check the topics it uses (verdicts, rules, deadletter: a `rules` topic the
broker auto-created is not compacted and is refused), open the maps (services/enforcer/maps.py),
gather the host facts (hostfacts.py: the allowlist and the local addresses) into the policy
(policy.py), install the allowlist, in learning mode check that the `packets` topic keeps
records until the period ends (a warning if not), restore this node's rules from the `rules` topic
(reconciler.py), then join the consumer group on `verdicts` (`<topic prefix>enforcer-<node id>`,
so deployments sharing a cluster never share it). A cluster that cannot be reached is one
KafkaUnavailable naming the bootstrap. run(): consume verdicts, each decided by the policy and carried out by the map
actuator (actuator.py), or, in learning mode (ENFORCER_LEARN_UNTIL, learning.py), only logged
and counted; and sweep: program reloads, manual-rule mirroring, expiry. Verdict offsets
are committed before the verdicts are acted on, and ids are remembered, so a verdict is applied
at most once. stop() (SIGTERM, via services.common.lifecycle.serve): a last manual-rule mirror,
then the consumer, the producer and the maps are closed; the rules stay in the kernel.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from services.common.errors import DecodeError, KafkaUnavailable, XdpguardError
from services.common.settings import CommonSettings
from services.records.verdict import Verdict
from services.wire import codec
from services.wire.kafka import client_options
from services.common.checks import instant_ns
from services.wire.topics import (DEADLETTER, PACKETS, RULES, VERDICTS, ensure_topics,
                                  specs_named, topic_config)

from .actuator import MapActuator
from .hostfacts import policy_config
from .learning import LearningPeriod, WouldApplyLedger, retention_shortfall
from .maps import Dataplane, PinnedDataplane
from .metrics import EnforcerMetrics
from .policy import Decision, Order, Outcome, RulePolicy
from .reconciler import RulesReconciler
from .ruleslog import RulesLog
from .settings import EnforcerSettings

log = logging.getLogger("xdpguard.enforcer")


class Enforcer:
    """One node's enforcer. `dataplane` defaults to the maps pinned in XDPGUARD_PIN_DIR; `clock`
    gives Unix epoch ns (the policy's and the expiry's time)."""

    def __init__(self, common: CommonSettings, settings: EnforcerSettings, *,
                 dataplane: Dataplane | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.common, self.settings, self.clock = common, settings, clock
        self.dataplane = dataplane or PinnedDataplane(common.pin_dir)
        self.metrics = EnforcerMetrics()
        self.rules_log = RulesLog(common)
        self.policy: RulePolicy | None = None
        self.actuator: MapActuator | None = None
        self.reconciler: RulesReconciler | None = None
        self.consumer: AIOKafkaConsumer | None = None
        until = instant_ns(settings.learn_until) if settings.learn_until.strip() else 0
        self.learning = WouldApplyLedger(LearningPeriod(until), settings.max_model_rules) \
            if until else None
        self.ready = False
        self._beat = time.monotonic()
        self._release: Callable[[], None] | None = None  # the dataplane claim's release

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        """The verdicts consumer group: ENFORCER_GROUP_ID, else `<prefix>enforcer-<node id>`."""
        return self.settings.group_id or self.common.topic(f"enforcer-{self.common.node_id}")

    async def start(self) -> None:
        if not self.settings.dry_run:  # one enforcer writes a node's maps (PinDirClaim)
            self._release = self.dataplane.claim()
        await ensure_topics(self.common, specs_named(self.common, VERDICTS, RULES, DEADLETTER))
        maps_id = self.dataplane.maps_id()
        maps = self.dataplane.open()
        try:
            self.policy = RulePolicy(policy_config(self.common, self.settings, maps), maps.placement)
        except BaseException:
            maps.close()
            raise
        self.reconciler = RulesReconciler(
            self.policy, self.rules_log, self.metrics, dry_run=self.settings.dry_run,
            restore=self.settings.restore, deadletter=self._deadletter, clock=self.clock)
        self.actuator = MapActuator(
            self.dataplane, maps, maps_id, self.policy, self.reconciler, self.metrics,
            dry_run=self.settings.dry_run, clock=self.clock, learning=self.learning)
        self.actuator.recount()
        self.actuator.install_allowlist()
        try:
            await self._check_packets_retention()
            await self.rules_log.start()
            await self.reconciler.restore(self.actuator.maps)
            self.consumer = AIOKafkaConsumer(
                self.common.topic(VERDICTS), **client_options(self.common),
                group_id=self.group_id, enable_auto_commit=False, fetch_max_wait_ms=100,
                client_id=f"xdpguard-enforcer-{self.common.node_id}",
                auto_offset_reset="earliest" if self.settings.from_beginning else "latest")
            await self.consumer.start()
            await self._wait_assigned()
        except (KafkaConnectionError, OSError) as exc:
            raise KafkaUnavailable(f"cannot reach Kafka at {self.common.kafka_bootstrap}: "
                                   f"{exc}") from None
        except TimeoutError:
            raise KafkaUnavailable(f"no partition of {self.common.topic(VERDICTS)} assigned to "
                                   f"group {self.group_id} within 60 s") from None
        log.info("enforcer %s ready: %d rules installed, allowlist %s%s%s", self.common.node_id,
                 len(self.policy.installed()), ", ".join(self.policy.allowlist()),
                 " (DRY RUN)" if self.settings.dry_run else "", self._learning_note())
        self.ready = True

    def _learning_note(self) -> str:
        if self.learning is None:
            return ""
        now = self.clock()
        if not self.learning.holds_back(now):
            return f" (learning period ended at {self.settings.learn_until}: enforcing)"
        return (f" (LEARNING until {self.settings.learn_until}, "
                f"{self.learning.period.remaining_s(now) / 3600:.1f} h left: model rules are only "
                "logged)")

    async def _check_packets_retention(self) -> None:
        """Learning mode: one warning when the `packets` topic would not keep what is published
        now until the period ends (a topic not created yet is judged by the retention it will
        be created with)."""
        if self.learning is None or not self.learning.holds_back(self.clock()):
            return
        topic = self.common.topic(PACKETS)
        value = await topic_config(self.common, topic, "retention.ms")
        if value is None:
            value = specs_named(self.common, PACKETS)[0].config["retention.ms"]
        problem = retention_shortfall(topic, int(value), self.learning.period, self.clock())
        if problem:
            log.warning("learning mode: %s", problem)

    async def _wait_assigned(self, timeout: float = 60) -> None:
        """Ready means partitions assigned and positions resolved: no verdict published after
        this point is missed (with auto_offset_reset=latest a later resolution would skip it)."""
        async with asyncio.timeout(timeout):
            while not self.consumer.assignment():
                await asyncio.sleep(0.1)
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)

    async def stop(self) -> None:
        """Idempotent; safe after a start() that failed half way."""
        was_ready, self.ready = self.ready, False
        try:
            if was_ready:
                try:  # an `xdpguard add` just before stopping survives
                    await self.reconciler.sync_manual(self.actuator.maps)
                except Exception as exc:  # stopping must go on; say what was not mirrored
                    log.error("manual rules not mirrored to the rules topic: %s", exc)
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            self.consumer = None
            try:
                await self.rules_log.stop()
            finally:
                if self.actuator is not None:
                    self.actuator.close()
                    self.actuator = None
                release, self._release = self._release, None
                if release is not None:
                    release()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume(), name="enforcer-consume")
            tg.create_task(self._sweep(), name="enforcer-sweep")

    def healthy(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "starting"
        age = time.monotonic() - self._beat
        if age >= 10:
            return False, f"last loop {age:.1f} s ago"
        try:  # as the capture's: rules have nowhere to go while nothing is loaded
            pinned = self.dataplane.maps_id() != 0
        except XdpguardError as exc:
            return False, f"the pinned maps cannot be read: {exc}"
        if not pinned:
            return False, f"no XDP program pinned in {self.common.pin_dir}"
        return True, f"last loop {age:.1f} s ago"

    # -- verdicts ------------------------------------------------------------------------------
    async def _consume(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            self._beat = time.monotonic()
            if not batch:
                continue
            await self.consumer.commit()  # before acting: at most once
            self.actuator.refresh_allowlist()
            for tp, records in batch.items():
                for r in records:
                    try:
                        verdict = codec.decode_verdict(r.value)
                    except DecodeError as exc:
                        await self._deadletter(tp.topic, tp.partition, r.offset, str(exc), r.value)
                        continue
                    try:
                        await self.handle(verdict)
                    except XdpguardError as exc:  # this verdict could not be carried out:
                        # say why and go on with the next (one record must not stop the service)
                        await self._deadletter(tp.topic, tp.partition, r.offset,
                                               f"not applied: {type(exc).__name__}: {exc}", r.value)

    async def handle(self, verdict: Verdict) -> Decision:
        """Decide on one verdict, count the outcome and carry it out; the decision made."""
        rule = verdict.rule
        ttl = (rule.expires_ns - rule.created_ns) / 1e9 if rule.expires_ns > rule.created_ns \
            else 0.0
        order = Order(id=verdict.verdict_id, node=verdict.node, rule=rule, ttl_s=ttl,
                      reason=verdict.reason)
        now = self.clock()
        d = self.policy.decide(order, now)
        self.metrics.verdicts.labels(d.outcome.value).inc()
        if d.outcome is Outcome.REFUSE:
            self.metrics.refused.labels(d.code or "other").inc()
            log.warning("refused %s: %s", rule.key(), d.reason)
        elif d.outcome in (Outcome.APPLY, Outcome.REFRESH):
            await self.actuator.apply(d, verdict, now)
        return d

    async def _deadletter(self, topic: str, partition: int, offset: int, reason: str,
                          raw: bytes | None) -> None:
        self.metrics.deadletters.inc()
        log.warning("dead letter: %s[%d]@%d: %s", topic, partition, offset, reason)
        value = codec.encode_deadletter(topic, partition, offset, reason, raw, "enforcer")
        await self.rules_log.send(self.common.topic(DEADLETTER), None, value)

    # -- the sweep -----------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_ms / 1000)
            self._beat = time.monotonic()
            self.actuator.check_reload()
            await self.reconciler.sync_manual(self.actuator.maps)
            await self.actuator.expire(self.clock())
            self.actuator.gauges()
