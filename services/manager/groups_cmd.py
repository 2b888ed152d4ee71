"""`xdpguard groups [GROUP] [--all] [--json]`: consumer groups, their members, partitions and lag.

By default the groups of this deployment (names under XDPGUARD_TOPIC_PREFIX: the scorer's
`<prefix><app id>`, each enforcer's `<prefix>enforcer-<node id>`). Lag is shown per topic; the
topics a faust group keeps for itself (`<group>-...`: repartition topic, changelogs) are shown
apart and left out of the group's lag: their offsets move while the input is idle.
"""
from __future__ import annotations

import asyncio
import json

from services.common.settings import load_common

from . import kafka_inspect as ki


def register(sub) -> None:
    p = sub.add_parser("groups", help="consumer groups: members, assigned partitions, lag per topic")
    p.add_argument("group", nargs="?", help="only this group")
    p.add_argument("--all", action="store_true", help="every group of the cluster (default: those "
                   "under XDPGUARD_TOPIC_PREFIX)")
    p.add_argument("--json", action="store_true", help="one JSON object per group")
    p.set_defaults(func=cmd_groups)


def cmd_groups(args) -> int:
    common = load_common()
    groups = asyncio.run(ki.consumer_groups(common, args.group, everything=args.all))
    if args.json:
        for g in groups:
            by_topic = g.lag_by_topic()
            print(json.dumps({
                "group": g.group_id, "state": g.state, "protocol": g.protocol,
                "lag": g.total_lag,
                "lag_by_topic": {t: n for t, n in by_topic.items() if not g.internal(t)},
                "internal_lag_by_topic": {t: n for t, n in by_topic.items() if g.internal(t)},
                "members": [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                             "partitions": [f"{tp.topic}:{tp.partition}" for tp in m.partitions]}
                            for m in g.members],
                "partitions": [{"topic": tp.topic, "partition": tp.partition,
                                "committed": c, "end": e, "lag": max(e - c, 0)}
                               for tp, (c, e) in g.lag.items()],
            }))
        return 0
    for g in groups:
        print(f"{g.group_id}  state={g.state}  members={len(g.members)}  lag={g.total_lag}")
        for m in g.members:
            own = [tp for tp in m.partitions if not g.internal(tp.topic)]
            parts = ", ".join(f"{tp.topic}:{tp.partition}" for tp in own) or "-"
            internal = len(m.partitions) - len(own)
            print(f"  member {m.client_id} ({m.host})  {parts}"
                  + (f"  (+{internal} internal)" if internal else ""))
        by_topic = g.lag_by_topic()
        for topic, lag in by_topic.items():
            if not g.internal(topic):
                parts = ", ".join(f"p{tp.partition} {max(e - c, 0)}"
                                  for tp, (c, e) in g.lag.items() if tp.topic == topic)
                print(f"  lag {topic}: {lag}  ({parts})")
        for topic, lag in by_topic.items():
            if g.internal(topic):
                print(f"  lag {topic}: {lag}  (internal)")
    if not groups:
        where = "" if args.all or args.group else f" under {common.topic_prefix}"
        print(f"no consumer groups{where}")
    return 0
