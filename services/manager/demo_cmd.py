"""`xdpguard demo`: the end-to-end demonstration run by scripts/demo."""
from __future__ import annotations

import asyncio

from services.common.settings import load_common
from services.common.topics import ensure_topics, topic_specs


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo (broker must be up; see scripts/demo)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    common = load_common()
    created = asyncio.run(ensure_topics(common))
    for spec in topic_specs(common):
        print(f"topic {spec.name}: {spec.partitions} partitions"
              f"{' (created)' if spec.name in created else ''}")
    print(f"Kafka is up at {common.kafka_bootstrap}; the pipeline demo is not built yet.")
    return 0
