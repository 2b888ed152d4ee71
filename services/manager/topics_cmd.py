"""`xdpguard topics create|list|describe|tail|delete|wait`.

Topic names may be short (`packets`) or full (`xdpguard.packets`); `list` shows this deployment's
topics (XDPGUARD_TOPIC_PREFIX) unless `--all`; `delete` only ever deletes topics under it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from services.common.errors import ConfigError
from services.common.settings import load_common
from services.wire.topics import delete_prefixed, topic_specs, topic_states, wait_ready

from . import kafka_inspect as ki

EPILOG = """examples:
  xdpguard topics create                      create missing topics, check existing ones
  xdpguard topics list                        this deployment's topics (--all: the cluster's)
  xdpguard topics tail packets --follow | jq 'select(.dport == 22)'
  xdpguard topics delete --yes                delete every topic under XDPGUARD_TOPIC_PREFIX
"""


def register(sub) -> None:
    p = sub.add_parser("topics", help="create, check, inspect and delete the Kafka topics",
                       description="Topic names may be short (packets) or full (xdpguard.packets).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="topics_verb", metavar="ACTION", parser_class=type(p))
    tsub.required = True
    tsub.add_parser("create", help="create missing topics and check existing ones (partition "
                    "counts from XDPGUARD_*); a mismatch is reported and exits 1"
                    ).set_defaults(func=cmd_create)
    ls = tsub.add_parser("list", help="topics under XDPGUARD_TOPIC_PREFIX with partitions and "
                         "record counts")
    ls.add_argument("--all", action="store_true", help="every topic of the cluster")
    ls.set_defaults(func=cmd_list)
    d = tsub.add_parser("describe", help="partitions, leaders, offsets of topics")
    d.add_argument("topic", nargs="*", help="topics (default: the xdpguard topics)")
    d.set_defaults(func=cmd_describe)
    t = tsub.add_parser("tail", help="print records as JSON lines, decoded as the services do "
                        "(one object per packet event; use with jq)")
    t.add_argument("topic")
    t.add_argument("-n", type=int, default=None, metavar="N",
                   help="last N records per partition (default 10)")
    t.add_argument("--from-beginning", action="store_true", help="every record still retained")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    t.add_argument("--partition", "-p", type=int, default=None, help="only this partition")
    t.add_argument("--meta", action="store_true",
                   help="wrap each record with partition, offset, timestamp and key")
    t.set_defaults(func=cmd_tail)
    rm = tsub.add_parser("delete", help="delete this deployment's topics (every topic under "
                         "XDPGUARD_TOPIC_PREFIX, or those named): stop the services first")
    rm.add_argument("topic", nargs="*", help="only these (short or full names)")
    rm.add_argument("--yes", action="store_true", help="really delete (without it: list only)")
    rm.set_defaults(func=cmd_delete)
    w = tsub.add_parser("wait", help="wait until the cluster answers")
    w.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    w.set_defaults(func=cmd_wait)


def cmd_create(args) -> int:
    common = load_common()
    states = asyncio.run(topic_states(common))
    for st in states:
        detail = f"MISMATCH: {st.problem}" if st.problem else st.state
        print(f"{st.spec.name}\t{st.spec.partitions} partitions\t{detail}")
    wrong = [st for st in states if st.state == "mismatch"]
    if wrong:
        raise ConfigError(f"{len(wrong)} topic(s) differ from the settings and would not work; "
                          f"recover with `xdpguard topics delete --yes` (every "
                          f"{common.topic_prefix}* topic; stop the services first) and create "
                          "again, or change the setting")
    return 0


def cmd_list(args) -> int:
    common = load_common()
    infos = asyncio.run(ki.describe_topics(common, everything=args.all))
    for info in infos:
        print(f"{info.name}\t{len(info.partitions)} partitions\t{info.records} records")
    if not infos:
        print(f"no topics{'' if args.all else f' under {common.topic_prefix}'} "
              f"(xdpguard topics create)", file=sys.stderr)
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
        raise ConfigError("-n must be 0 or more")
    common = load_common()
    topic = ki.resolve_topic(common, args.topic)
    kind = topic[len(common.topic_prefix):] if topic.startswith(common.topic_prefix) else topic
    out = sys.stdout

    async def go() -> None:
        async for rec in ki.tail(common, topic, last=args.n, from_beginning=args.from_beginning,
                                 follow=args.follow, partition=args.partition):
            for obj in ki.record_to_json(kind, rec.value, rec.key):
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


def cmd_delete(args) -> int:
    common = load_common()
    if not args.yes:
        names = [ki.resolve_topic(common, t) for t in args.topic] or \
            [i.name for i in asyncio.run(ki.describe_topics(common))]
        for name in names:
            print(name)
        raise ConfigError(f"would delete the {len(names)} topic(s) above: add --yes")
    names = [ki.resolve_topic(common, t) for t in args.topic] or None
    deleted = asyncio.run(delete_prefixed(common, names))
    for name in deleted:
        print(f"deleted {name}")
    if not deleted:
        print(f"no topics under {common.topic_prefix}")
    return 0


def cmd_wait(args) -> int:
    common = load_common()
    took = asyncio.run(wait_ready(common, args.timeout))
    print(f"Kafka at {common.kafka_bootstrap} ready after {took:.1f} s")
    return 0
