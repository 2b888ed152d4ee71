"""`xdpguard groups [GROUP] [--json]`: consumer groups, their members, partitions and lag."""
from __future__ import annotations

import asyncio
import json

from services.common.settings import load_common

from . import kafka_inspect as ki


def register(sub) -> None:
    p = sub.add_parser("groups", help="consumer groups: members, assigned partitions, lag")
    p.add_argument("group", nargs="?", help="only this group")
    p.add_argument("--json", action="store_true", help="one JSON object per group")
    p.set_defaults(func=cmd_groups)


def cmd_groups(args) -> int:
    groups = asyncio.run(ki.consumer_groups(load_common(), args.group))
    if args.json:
        for g in groups:
            print(json.dumps({
                "group": g.group_id, "state": g.state, "protocol": g.protocol,
                "lag": g.total_lag,
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
            parts = ", ".join(f"{tp.topic}:{tp.partition}" for tp in m.partitions) or "-"
            print(f"  member {m.client_id} ({m.host})  {parts}")
        for tp, (c, e) in g.lag.items():
            print(f"  {tp.topic}:{tp.partition}  committed={c}  end={e}  lag={max(e - c, 0)}")
    if not groups:
        print("no consumer groups")
    return 0
