"""`xdpguard topics create|list|wait`."""
from __future__ import annotations

import asyncio

from services.common.settings import load_common
from services.common.topics import ensure_topics, list_topics, topic_specs, wait_ready


def register(sub) -> None:
    p = sub.add_parser("topics", help="create and inspect the Kafka topics")
    tsub = p.add_subparsers(dest="topics_verb", metavar="ACTION", parser_class=type(p))
    tsub.required = True
    c = tsub.add_parser("create", help="create missing topics (partition counts from XDPGUARD_*)")
    c.set_defaults(func=cmd_create)
    ls = tsub.add_parser("list", help="list topics on the cluster")
    ls.set_defaults(func=cmd_list)
    w = tsub.add_parser("wait", help="wait until the cluster answers")
    w.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    w.set_defaults(func=cmd_wait)


def cmd_create(args) -> int:
    common = load_common()
    created = asyncio.run(ensure_topics(common))
    for spec in topic_specs(common):
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name}\t{spec.partitions} partitions\t{state}")
    return 0


def cmd_list(args) -> int:
    for name in asyncio.run(list_topics(load_common())):
        print(name)
    return 0


def cmd_wait(args) -> int:
    common = load_common()
    took = asyncio.run(wait_ready(common, args.timeout))
    print(f"Kafka at {common.kafka_bootstrap} ready after {took:.1f} s")
    return 0
