"""Feature extraction: ONE pure module for training, offline analysis, evaluation and the scorer.

Four kinds of state; the per-window ones are plain dicts/lists/numbers (JSON- and
msgpack-serialisable), so a faust table can hold them and a changelog can restore them:

    flow state  (key: directional 5-tuple, per window)  -> the original tool's 22 features
                                                           (`flow_features`, docs/origins.md)
    source agg  (key: source address, per window)       -> SRC_AGG_FEATURES (`agg_features`)
    dest agg    (key: destination address, per window)  -> DST_FEATURES (`agg_features`)
    horizon     (key: source address, last 10 windows)  -> HORIZON_FEATURES (`SourceHorizon`,
                 built from closed windows' flows; in memory only)

Every state is updated one packet at a time (`flow_update`, `src_update`, `dst_update`) and two
states of the same key and window can be merged (`flow_merge`, `agg_merge`), so per-partition
partial aggregates combine exactly.

Distinct counts (flows, peers, ports) use the linear-counting bitmaps of `sketch` (512 bytes
per key, mergeable by OR). Exact sets would make one spoofed-flood destination's state grow
without bound.

The model row of a flow is `row(flow, src_agg, horizon, dst_agg)`, raw values in FEATURE_NAMES order;
any scaling (log1p) belongs to the model pipeline, not here.
"""
from __future__ import annotations

import math
from typing import Iterable

from services.records.packet import (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH,
                     TCP_RST, TCP_SYN, TCP_URG, Packet)

SEED_FEATURES: tuple[str, ...] = (
    "duration", "packets", "bytes", "bps", "pps", "log_bytes", "log_packets", "tcp", "udp", "icmp",
    "fin", "syn", "rst", "psh", "ack", "urg", "src_port", "src_low", "src_high", "dst_port",
    "dst_low", "dst_high")
_AGG = ("flows", "packets", "bytes", "peers", "ports", "syn_noack_share", "icmp_share",
        "udp_share", "pkts_per_flow", "flows_per_peer")
SRC_AGG_FEATURES: tuple[str, ...] = tuple(f"src_{n}" for n in _AGG)   # peers = distinct dsts
# The source over the last HORIZON_WINDOWS windows: distinct peers, and peers divided by
# packets per peer ("sparse peers": many peers that each got a packet or two, a sweep).
HORIZON_FEATURES: tuple[str, ...] = ("src_h_peers", "src_h_sparse_peers")
# The evidence module's measures of the source and of the destination (evidence.SRC_MEASURES,
# DST_MEASURES but packets), seen by the model as well: the concentration of a
# source's probes on one host or one /24 and the destination's one-sided traffic are what
# no other feature describes.
SRC_EVIDENCE_FEATURES: tuple[str, ...] = ("src_half_open", "src_h_probe_tcp", "src_h_probe_other",
                                          "src_login")
SRC_FEATURES: tuple[str, ...] = SRC_AGG_FEATURES + HORIZON_FEATURES + SRC_EVIDENCE_FEATURES  # stage 1
DST_FEATURES: tuple[str, ...] = tuple(f"dst_{n}" for n in _AGG)   # peers = distinct sources
DST_EVIDENCE_FEATURES: tuple[str, ...] = ("dst_half_open_srcs", "dst_synack_srcs", "dst_rst_srcs",
                                          "dst_reflector_srcs", "dst_fragments", "dst_dhcp",
                                          "dst_unsolicited_srcs")
FEATURE_NAMES: tuple[str, ...] = SEED_FEATURES + SRC_FEATURES + DST_FEATURES + DST_EVIDENCE_FEATURES
_NO_SRC_EV = [0.0] * len(SRC_EVIDENCE_FEATURES)
_NO_DST_EV = [0.0] * len(DST_EVIDENCE_FEATURES)

from .sketch import (SKETCH_BITS, SKETCH_MAX, SKETCH_WORDS, _cached_pos, _hash,  # noqa: F401
                     _linear_count, hash64, hash64_keys, sketch_add, sketch_count, sketch_merge,
                     sketch_new, sketch_pos)

FlowKey = tuple  # (src, dst, sport, dport, proto)


# --- per-flow state and the original tool's 22 features ---------------------------------------------------

def window_start(ts_ns: int, width_ns: int) -> int:
    """Start of the tumbling window (event time) that holds `ts_ns`."""
    return ts_ns - ts_ns % width_ns


def flow_new(pkt: Packet) -> dict:
    """An empty flow state; `syn` counts SYN-without-ACK packets (a TCP initiation: evidence
    module), the rest feeds `flow_features`."""
    return {"first": pkt.ts_ns, "last": pkt.ts_ns, "packets": 0, "bytes": 0, "flags": 0,
            "syn": 0, "proto": pkt.proto, "sport": pkt.sport, "dport": pkt.dport}


def flow_update(st: dict, pkt: Packet) -> dict:
    """Add one packet (counted `sample_rate` times) to a flow state; returns the state."""
    n = max(1, pkt.sample_rate)
    st["packets"] += n
    st["bytes"] += pkt.length * n
    if pkt.ts_ns > 0:  # the original tool ignored timestamps <= 0 for duration
        st["first"] = pkt.ts_ns if st["first"] <= 0 else min(st["first"], pkt.ts_ns)
        st["last"] = max(st["last"], pkt.ts_ns)
    st["flags"] |= pkt.tcp_flags
    if pkt.proto == PROTO_TCP and pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
        st["syn"] += n
    return st


def flow_merge(a: dict, b: dict) -> dict:
    firsts = [t for t in (a["first"], b["first"]) if t > 0]
    return {"first": min(firsts) if firsts else 0, "last": max(a["last"], b["last"]),
            "packets": a["packets"] + b["packets"], "bytes": a["bytes"] + b["bytes"],
            "flags": a["flags"] | b["flags"], "syn": a.get("syn", 0) + b.get("syn", 0),
            "proto": a["proto"], "sport": a["sport"], "dport": a["dport"]}


def flow_duration(st: dict) -> float:
    """Seconds from first to last packet; 0 becomes 0.001 as in the original tool."""
    d = max(0, st["last"] - st["first"]) / 1e9
    return d if d != 0 else 0.001


def flow_features(st: dict) -> list[float]:
    """The original tool's 22 features in SEED_FEATURES order (docs/origins.md): bps =
    bytes/packet (as it trained), pps = packets/max(duration, 1e-3), log_* = log1p, flags only
    for TCP."""
    duration = flow_duration(st)
    packets, nbytes, proto = st["packets"], st["bytes"], st["proto"]
    flags = st["flags"] if proto == PROTO_TCP else 0
    sport, dport = st["sport"], st["dport"]
    return [
        duration, float(packets), float(nbytes), nbytes / max(packets, 1),
        packets / max(duration, 1e-3), math.log1p(nbytes), math.log1p(packets),
        float(proto == PROTO_TCP), float(proto == PROTO_UDP), float(proto == PROTO_ICMP),
        float(flags & TCP_FIN > 0), float(flags & TCP_SYN > 0), float(flags & TCP_RST > 0),
        float(flags & TCP_PSH > 0), float(flags & TCP_ACK > 0), float(flags & TCP_URG > 0),
        float(sport), float(sport < 1024), float(sport > 49151),
        float(dport), float(dport < 1024), float(dport > 49151)]


def seed_display_features(st: dict) -> dict:
    """The five values the original tool's analyzer printed and wrote to ml_firewall_commands.json. Its
    `bps` there is bytes/duration (unlike the trained bytes/packet): kept for output parity only."""
    duration = flow_duration(st)
    return {"duration": duration, "packets": st["packets"], "bytes": st["bytes"],
            "bps": st["bytes"] / duration, "pps": st["packets"] / duration}


# --- per-source / per-destination window aggregates ----------------------------------------------

def agg_new() -> dict:
    return {"packets": 0, "bytes": 0, "syn_noack": 0, "icmp": 0, "udp": 0,
            "flows": sketch_new(), "peers": sketch_new(), "ports": sketch_new()}


def _agg_count(agg: dict, pkt: Packet) -> None:
    """The counters of an aggregate (the sketches apart)."""
    n = max(1, pkt.sample_rate)
    agg["packets"] += n
    agg["bytes"] += pkt.length * n
    if pkt.proto == PROTO_TCP and pkt.tcp_flags & TCP_SYN and not pkt.tcp_flags & TCP_ACK:
        agg["syn_noack"] += n
    if pkt.proto in (PROTO_ICMP, PROTO_ICMPV6):
        agg["icmp"] += n
    elif pkt.proto == PROTO_UDP:
        agg["udp"] += n


def _agg_add(agg: dict, pkt: Packet, peer: str) -> dict:
    _agg_count(agg, pkt)
    sketch_add(agg["flows"], flow_key_text(pkt.flow_key()))
    sketch_add(agg["peers"], peer)
    sketch_add(agg["ports"], f"{pkt.proto}/{pkt.dport}")
    return agg


def src_update(agg: dict, pkt: Packet) -> dict:
    """Add a packet to its SOURCE's aggregate (peers = destinations, ports = destination ports)."""
    return _agg_add(agg, pkt, pkt.dst)


def dst_update(agg: dict, pkt: Packet) -> dict:
    """Add a packet to its DESTINATION's aggregate (peers = sources, ports = destination ports)."""
    return _agg_add(agg, pkt, pkt.src)


def agg_merge(a: dict, b: dict) -> dict:
    out = {k: a[k] + b[k] for k in ("packets", "bytes", "syn_noack", "icmp", "udp")}
    for k in ("flows", "peers", "ports"):
        out[k] = sketch_merge(a[k], b[k])
    return out


_ONE = _linear_count(1)


def agg_features(agg: dict, single: bool = False) -> list[float]:
    """flows, packets, bytes, peers, ports, syn_noack_share, icmp_share, udp_share, pkts_per_flow,
    flows_per_peer (repeated connections to one peer: brute force). `single`: the caller knows
    the aggregate holds one flow, so each sketch has one bit set (a spoofed source; the same
    numbers without counting 3 x 64 words)."""
    if single:
        flows = peers = ports = _ONE
    else:
        flows = max(sketch_count(agg["flows"]), 1.0)
        peers, ports = sketch_count(agg["peers"]), sketch_count(agg["ports"])
    return agg_values(agg["packets"], agg["bytes"], agg["syn_noack"], agg["icmp"], agg["udp"],
                      flows, peers, ports)


def agg_values(packets: int, nbytes: int, syn_noack: int, icmp: int, udp: int, flows: float,
               peers: float, ports: float) -> list[float]:
    """`agg_features` from an aggregate's counters and its distinct counts (`flows` at least
    1.0)."""
    p = max(packets, 1)
    return [flows, float(packets), float(nbytes), peers, ports, syn_noack / p, icmp / p,
            udp / p, packets / flows, flows / max(peers, 1.0)]


# --- per-source horizon ---------------------------------------------------------------------------

HORIZON_WINDOWS = 10


class WindowedSources:
    """Per-source entries kept per window over the last `span` windows (the current one
    included): `windows` maps window start (ns) -> source -> entry, `seen` counts the windows
    kept that hold each source. Subclasses (SourceHorizon, watch.SourceWatch) settle a window's
    entries and count them in `seen`, between `_forget` (an earlier copy of the window) and
    `_keep` (store it, drop windows older than the span). Windows are added oldest first."""

    __slots__ = ("width_ns", "span", "windows", "seen")

    def __init__(self, width_ns: int, span: int = HORIZON_WINDOWS) -> None:
        self.width_ns, self.span = width_ns, span
        self.windows: dict[int, dict[str, list]] = {}
        self.seen: dict[str, int] = {}  # source -> windows kept that hold it

    def _forget(self, ws: int) -> None:
        """Drop window `ws` if kept (it is being added again)."""
        if ws in self.windows:
            self._drop(ws)

    def _keep(self, ws: int, entries: dict[str, list]) -> None:
        """Store window `ws` (its sources already counted in `seen`); drop windows older than
        the span."""
        self.windows[ws] = entries
        oldest = ws - (self.span - 1) * self.width_ns
        for w in [w for w in self.windows if w < oldest]:
            self._drop(w)

    def _drop(self, ws: int) -> None:
        seen = self.seen
        for src in self.windows.pop(ws):
            n = seen[src] - 1
            if n:
                seen[src] = n
            else:
                del seen[src]


class SourceHorizon(WindowedSources):
    """Every source's activity over the last `span` windows, the current one included. A slow
    sweep (ten one-packet probes a second) looks like any client within one window; over ten
    it has reached far more peers than a client, each with a packet or two.

    Kept per window, so expiry drops whole windows: window start -> source -> [packets, peer
    positions], the positions being the sketch bits (`sketch_pos`) of the window's peers, so
    the distinct count is the sketches' estimate. A set with one member is stored as that int:
    most sources of a spoofed flood appear once, with one peer, and must stay small. Windows
    are added oldest first (aligned to the width, as `window_start` gives them)."""

    __slots__ = ()

    def add(self, ws: int, flows: Iterable[tuple[FlowKey, int]]) -> None:
        """Window `ws`'s flows as (5-tuple, packets)."""
        entries: dict[str, list] = {}
        for key, packets in flows:
            horizon_count(entries, key[0], packets, sketch_pos(key[1]))
        self.add_entries(ws, entries)

    def add_entries(self, ws: int, entries: dict[str, list]) -> None:
        """Window `ws` as `horizon_count` built it (replacing an earlier copy of it); drops
        windows older than the span."""
        self._forget(ws)
        seen = self.seen
        for src, e in entries.items():
            if len(e[1]) == 1:
                e[1] = e[1].pop()
            seen[src] = seen.get(src, 0) + 1
        self._keep(ws, entries)

    def features_of(self, ws: int, srcs: Iterable[str]) -> dict[str, list[float]]:
        """HORIZON_FEATURES of each source over the span ending with window `ws`."""
        span = [d for w in range(ws - (self.span - 1) * self.width_ns, ws + 1, self.width_ns)
                if (d := self.windows.get(w)) is not None]
        current, seen, out = self.windows.get(ws, {}), self.seen, {}
        for src in srcs:
            if seen.get(src) == 1 and src in current:  # most sources: in this window only
                packets, pos = current[src]
                n = 1 if type(pos) is int else len(pos)
            else:
                packets, peers = 0, set()
                for e in (d[src] for d in span if src in d):
                    packets += e[0]
                    if type(e[1]) is int:
                        peers.add(e[1])
                    else:
                        peers |= e[1]
                n = len(peers)
            n_peers = _linear_count(n)
            out[src] = [n_peers, n_peers * n_peers / max(packets, 1)]
        return out

    def features(self, ws: int, src: str) -> list[float]:
        return self.features_of(ws, (src,))[src]


def horizon_count(entries: dict[str, list], src: str, packets: int, peer_pos: int) -> None:
    """Count one flow of `src` (its packets, its peer's `sketch_pos`) into a window's entries."""
    e = entries.get(src)
    if e is None:
        e = entries[src] = [0, set()]
    e[0] += packets
    e[1].add(peer_pos)


# --- whole windows ---------------------------------------------------------------------------------

def flow_key_text(key: Iterable) -> str:
    return "|".join(str(p) for p in key)


def row(flow: dict, src_agg: dict, horizon: list[float], dst_agg: dict,
        src_ev: list[float] = _NO_SRC_EV, dst_ev: list[float] = _NO_DST_EV) -> list[float]:
    """One model row in FEATURE_NAMES order (`horizon`: SourceHorizon.features of the source;
    `src_ev` / `dst_ev`: its evidence values, SRC_ / DST_EVIDENCE_FEATURES order)."""
    return (flow_features(flow) + agg_features(src_agg) + horizon + list(src_ev)
            + agg_features(dst_agg) + list(dst_ev))


class WindowState:
    """All state of one window: flows by 5-tuple, aggregates by source and by destination.
    `to_dict()`/`from_dict()` give the plain form; the scorer may instead keep the three maps in
    three tables keyed by flow, source and destination and call the functions above."""

    __slots__ = ("start_ns", "flows", "srcs", "dsts")

    def __init__(self, start_ns: int = 0) -> None:
        self.start_ns = start_ns
        self.flows: dict[FlowKey, dict] = {}
        self.srcs: dict[str, dict] = {}
        self.dsts: dict[str, dict] = {}

    def add(self, pkt: Packet) -> None:
        """`src_update` + `dst_update` + `flow_update`, hashing only for a flow's first packet:
        a later packet of the flow would set the same sketch bits again."""
        key = pkt.flow_key()
        st = self.flows.get(key)
        new = st is None
        if new:
            st = self.flows[key] = flow_new(pkt)
        flow_update(st, pkt)
        sa = self.srcs.get(pkt.src) or self.srcs.setdefault(pkt.src, agg_new())
        da = self.dsts.get(pkt.dst) or self.dsts.setdefault(pkt.dst, agg_new())
        _agg_count(sa, pkt)
        _agg_count(da, pkt)
        if new:
            f, port = sketch_pos(flow_key_text(key)), _cached_pos(f"{pkt.proto}/{pkt.dport}")
            for agg, peer in ((sa, pkt.dst), (da, pkt.src)):
                for name, pos in (("flows", f), ("peers", _cached_pos(peer)), ("ports", port)):
                    agg[name][pos >> 6] |= 1 << (pos & 63)

    def rows(self, horizon: SourceHorizon | None = None, src_ev: dict | None = None,
             dst_ev: dict | None = None) -> tuple[list[FlowKey], list[list[float]]]:
        """(flow keys, model rows) in insertion order; aggregate features computed once per host.
        `horizon` must already hold this window (`add_to`); without one, the horizon features
        cover this window alone. `src_ev` / `dst_ev`: evidence values by source / destination
        (SRC_ / DST_EVIDENCE_FEATURES order; absent: zeros)."""
        if horizon is None:
            horizon = SourceHorizon(1, span=1)
            self.add_to(horizon)
        hz = horizon.features_of(self.start_ns, self.srcs)
        src_ev, dst_ev = src_ev or {}, dst_ev or {}
        src_f = {s: agg_features(a) + hz[s] + list(src_ev.get(s, _NO_SRC_EV))
                 for s, a in self.srcs.items()}
        dst_f = {d: agg_features(a) + list(dst_ev.get(d, _NO_DST_EV)) for d, a in self.dsts.items()}
        keys = list(self.flows)
        return keys, [flow_features(self.flows[k]) + src_f[k[0]] + dst_f[k[1]] for k in keys]

    def add_to(self, horizon: SourceHorizon) -> None:
        horizon.add(self.start_ns, ((k, st["packets"]) for k, st in self.flows.items()))

    def to_dict(self) -> dict:
        return {"start_ns": self.start_ns, "flows": [[list(k), v] for k, v in self.flows.items()],
                "srcs": self.srcs, "dsts": self.dsts}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowState":
        w = cls(d["start_ns"])
        w.flows = {tuple(k): v for k, v in d["flows"]}
        w.srcs, w.dsts = dict(d["srcs"]), dict(d["dsts"])
        return w
