"""Aggregates and stage 2's window rows computed per flow, as services/scorer/windows.py and
dst_windows.py computed them before they became columns (services/scorer/rows.py): the
reference the property tests (tests/unit/test_scorer_rows.py, test_scorer_fold.py) compare
with, to the bit."""
from __future__ import annotations

from services.detection.evidence import Answers, assess
from services.detection.features import (SKETCH_BITS, _cached_pos, agg_features, agg_new,
                                         flow_features)
from services.records.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP
from services.scorer.chunks import HASH_AT, OWN_AT, SRC_AT, FlowChunk
from services.scorer.windows import flow_dict


def agg_add_flow(agg: dict, key: tuple, st: list, peer: str, flow_hash: int) -> int:
    """Add a flow (5-tuple, stage flow state, its hash64) to an aggregate (features.agg_new
    form) with `peer` as the other end; returns the peer's sketch position."""
    packets, proto = st[2], key[4]
    agg["packets"] += packets
    agg["bytes"] += st[3]
    agg["syn_noack"] += st[5]
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        agg["icmp"] += packets
    elif proto == PROTO_UDP:
        agg["udp"] += packets
    pos = flow_hash % SKETCH_BITS
    agg["flows"][pos >> 6] |= 1 << (pos & 63)
    for name, pos in (("ports", _cached_pos(f"{proto}/{key[3]}")), ("peers", _cached_pos(peer))):
        agg[name][pos >> 6] |= 1 << (pos & 63)
    return pos


def reference_rows(chunks: list[FlowChunk], end_ns: int) -> tuple[list[tuple], list[list]]:
    """(flow keys, model rows) of one stage 2 window holding `chunks` (no window before it),
    a list per flow."""
    flows, src_feats, dsts, own, nflows = {}, {}, {}, {}, {}
    sent_flows, senders, addresses = [], [], []
    for chunk in chunks:
        for f in chunk.flows:
            key, st = tuple(f[:5]), f[5:12]
            flows[key] = flow_dict(key, st)
            src_feats[key] = f[SRC_AT:OWN_AT]
            own.setdefault(key[0], f[OWN_AT:HASH_AT])
            agg = dsts.get(key[1])
            if agg is None:
                agg = dsts[key[1]] = agg_new()
                nflows[key[1]] = 0
            nflows[key[1]] += 1
            agg_add_flow(agg, key, st, key[0], f[HASH_AT])
        for h_flow, h_sender in chunk.sent:
            sent_flows.append(h_flow)
            if h_sender:  # a request's sender key, or a tunnel flow's (answers.tunnel_key)
                senders.append(h_sender)
                sent_flows.append(h_sender)
        addresses += chunk.senders
    keys = list(flows)
    ev = assess(keys, flows, Answers(addresses, sent_flows, senders, None, hashed=True), end_ns,
                own)
    src_ev, dst_ev = ev.model_inputs()
    dst_feats = {d: agg_features(a, nflows[d] == 1) + dst_ev[d] for d, a in dsts.items()}
    return keys, [flow_features(flows[k]) + src_feats[k] + src_ev[k[0]] + dst_feats[k[1]]
                  for k in keys]
