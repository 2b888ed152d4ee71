"""Every topic a scorer worker needs, created BEFORE it joins its group.

The shared ones (packets, verdicts, deadletter) and faust's internal ones with the partition
counts and configs faust would give them: `<app id>-scorer-flows`, both tables' changelogs and
the leader assignor's topic. When faust created `<app id>-scorer-flows` itself while joining,
the first assignment could miss it ("Ignoring missing topic") and stage 2 never saw a flow.
"""
from __future__ import annotations

import asyncio
import logging
import time

import faust

from services.common.errors import ConfigError
from services.common.settings import CommonSettings
from services.wire.topics import TopicSpec, ensure_topics, topic_specs

from . import faust_internals
from .service import Scorer

log = logging.getLogger("xdpguard.scorer")


def internal_topic_specs(app: faust.App, scorer: Scorer) -> list[TopicSpec]:
    """Every topic faust would create for itself while starting (the `scorer-flows`
    repartition topic, both tables' changelogs, the leader assignor's topic), with the
    partition counts and configs faust would give them."""
    t = scorer.topics
    leader = app.topic(faust_internals.leader_topic_name(app), partitions=1, internal=True)
    out: list[TopicSpec] = []
    for topic in (t.flows, faust_internals.changelog_topic(t.src_table),
                  faust_internals.changelog_topic(t.dst_table), leader):
        out += faust_internals.declared_specs(topic, app.conf)
    return out


async def ensure_scorer_topics(common: CommonSettings, app: faust.App, scorer: Scorer
                               ) -> list[str]:
    """Create the shared and internal topics (see the module docstring); the names created.
    Raises ConfigError when an internal topic exists with another partition count."""
    internal = internal_topic_specs(app, scorer)
    created = await ensure_topics(common, topic_specs(common) + internal)
    counts = await _partition_counts(common, [t.name for t in internal])
    wrong = [f"topic {t.name} has {counts[t.name]} partitions, needs {t.partitions}"
             for t in internal if counts.get(t.name) not in (None, t.partitions)]
    if wrong:  # faust would route windows to partitions nobody reads (same words as ensure_topics)
        raise ConfigError("; ".join(wrong) + " (a scorer internal topic: `xdpguard topics delete`"
                          " it, or set XDPGUARD_PACKETS_PARTITIONS to its count)")
    return created


async def _partition_counts(common: CommonSettings, names: list[str],
                            wait_s: float = 15.0) -> dict[str, int]:
    """Partition count of each topic. A topic created a moment ago can still describe with an
    error (no leader yet): asked again until it answers, so a wrong count is not passed over
    as "unknown" (CI: the stale-topic check once let a 1-partition topic through)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from services.wire.kafka import client_options
    admin = AIOKafkaAdminClient(**client_options(common))
    await admin.start()
    try:
        counts: dict[str, int] = {}
        deadline = time.monotonic() + wait_s
        while True:
            pending = [n for n in names if n not in counts]
            for d in await admin.describe_topics(pending):
                if not d.get("error_code") and d["partitions"]:
                    counts[d["topic"]] = len(d["partitions"])
            if len(counts) == len(names) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        missing = [n for n in names if n not in counts]
        if missing:
            log.warning("cannot check the partition count of %s (no answer within %.0f s)",
                        ", ".join(missing), wait_s)
        return counts
    finally:
        await admin.close()
