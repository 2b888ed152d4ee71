"""`xdpguard topics create|list|describe|tail|wait`."""
from __future__ import annotations

import asyncio
import json
import sys

from services.common.settings import load_common
from services.wire.topics import ensure_topics, topic_specs, wait_ready

from . import kafka_inspect as ki


def register(sub) -> None:
    p = sub.add_parser("topics", help="create and inspect the Kafka topics",
                       description="Topic names may be short (packets) or full (xdpguard.packets).")
    tsub = p.add_subparsers(dest="topics_verb", metavar="ACTION", parser_class=type(p))
    tsub.required = True
    tsub.add_parser("create", help="create missing topics (partition counts from XDPGUARD_*)"
                    ).set_defaults(func=cmd_create)
    tsub.add_parser("list", help="list topics with partitions and record counts"
                    ).set_defaults(func=cmd_list)
    d = tsub.add_parser("describe", help="partitions, leaders, offsets of topics")
    d.add_argument("topic", nargs="*", help="topics (default: the xdpguard topics)")
    d.set_defaults(func=cmd_describe)
    t = tsub.add_parser("tail", help="print records as JSON lines (msgpack decoded; use with jq)")
    t.add_argument("topic")
    t.add_argument("-n", type=int, default=None, metavar="N",
                   help="last N records per partition (default 10)")
    t.add_argument("--from-beginning", action="store_true", help="every record still retained")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    t.add_argument("--partition", "-p", type=int, default=None, help="only this partition")
    t.add_argument("--meta", action="store_true",
                   help="wrap each record with partition, offset, timestamp and key")
    t.set_defaults(func=cmd_tail)
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
    for info in asyncio.run(ki.describe_topics(load_common())):
        print(f"{info.name}\t{len(info.partitions)} partitions\t{info.records} records")
    return 0


def cmd_describe(args) -> int:
    common = load_common()
    names = [ki.resolve_topic(common, t) for t in args.topic] or [s.name for s in topic_specs(common)]
    for info in asyncio.run(ki.describe_topics(common, names)):
        print(f"{info.name}  partitions={len(info.partitions)}  records={info.records}")
        print("  PARTITION  LEADER  REPLICAS  ISR      START        END")
        for p in info.partitions:
            print(f"  {p.partition:>9}  {p.leader:>6}  {','.join(map(str, p.replicas)):>8}  "
                  f"{','.join(map(str, p.isr)):<5} {p.start:>8} {p.end:>10}")
    return 0


def cmd_tail(args) -> int:
    if args.n is not None and args.n < 0:
        raise SystemExit("xdpguard topics tail: error: -n must be 0 or more")
    common = load_common()
    topic = ki.resolve_topic(common, args.topic)
    kind = topic[len(common.topic_prefix):] if topic.startswith(common.topic_prefix) else topic
    out = sys.stdout

    async def go() -> None:
        async for rec in ki.tail(common, topic, last=args.n, from_beginning=args.from_beginning,
                                 follow=args.follow, partition=args.partition):
            for obj in ki.record_to_json(kind, rec.value):
                if args.meta:
                    obj = {"partition": rec.partition, "offset": rec.offset,
                           "timestamp_ms": rec.timestamp,
                           "key": rec.key.decode(errors="replace") if rec.key else None,
                           "value": obj}
                out.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
            out.flush()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_wait(args) -> int:
    common = load_common()
    took = asyncio.run(wait_ready(common, args.timeout))
    print(f"Kafka at {common.kafka_bootstrap} ready after {took:.1f} s")
    return 0
