"""Feature extraction: ONE pure module for training, offline analysis, evaluation and the scorer.

Three kinds of state, all plain dicts/lists/numbers (JSON- and msgpack-serialisable), so a faust
table can hold them and a changelog can restore them:

    flow state  (key: directional 5-tuple, per window)  -> the seed's 22 features (`flow_features`)
    source agg  (key: source address, per window)       -> SRC_FEATURES (`agg_features`)
    dest agg    (key: destination address, per window)  -> DST_FEATURES (`agg_features`)

Every state is updated one packet at a time (`flow_update`, `src_update`, `dst_update`) and two
states of the same key and window can be merged (`flow_merge`, `agg_merge`), so per-partition
partial aggregates combine exactly.

Distinct counts (flows, peers, ports) use linear counting on a 4096-bit bitmap (64 words of 64
bits, hashed with blake2b so every process agrees): 512 bytes per key, mergeable by OR, exact
for a few dozen items, within a few % up to ~10k, saturating at ~34k (`SKETCH_MAX`). Exact sets would make one
spoofed-flood destination's state grow without bound.

The model row of a flow is `row(flow, src_agg, dst_agg)`, raw values in FEATURE_NAMES order;
any scaling (log1p) belongs to the model pipeline, not here.
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable

from .packet import (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH,
                     TCP_RST, TCP_SYN, TCP_URG, Packet)

SEED_FEATURES: tuple[str, ...] = (
    "duration", "packets", "bytes", "bps", "pps", "log_bytes", "log_packets", "tcp", "udp", "icmp",
    "fin", "syn", "rst", "psh", "ack", "urg", "src_port", "src_low", "src_high", "dst_port",
    "dst_low", "dst_high")
_AGG = ("flows", "packets", "bytes", "peers", "ports", "syn_noack_share", "icmp_share",
        "udp_share", "pkts_per_flow", "flows_per_peer")
SRC_FEATURES: tuple[str, ...] = tuple(f"src_{n}" for n in _AGG)   # peers = distinct destinations
DST_FEATURES: tuple[str, ...] = tuple(f"dst_{n}" for n in _AGG)   # peers = distinct sources
FEATURE_NAMES: tuple[str, ...] = SEED_FEATURES + SRC_FEATURES + DST_FEATURES

SKETCH_WORDS = 64
SKETCH_BITS = SKETCH_WORDS * 64
SKETCH_MAX = int(SKETCH_BITS * math.log(SKETCH_BITS))  # estimate reported when every bit is set
_MASK64 = (1 << 64) - 1

FlowKey = tuple  # (src, dst, sport, dport, proto)


# --- distinct-count sketch (linear counting) ---------------------------------------------------

def sketch_new() -> list[int]:
    return [0] * SKETCH_WORDS


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def sketch_add(sk: list[int], item: str) -> None:
    h = _hash(item) % SKETCH_BITS
    sk[h >> 6] |= 1 << (h & 63)


def sketch_merge(a: list[int], b: list[int]) -> list[int]:
    return [(x | y) & _MASK64 for x, y in zip(a, b)]


def sketch_count(sk: list[int]) -> float:
    ones = sum(map(int.bit_count, sk))
    zeros = SKETCH_BITS - ones
    if zeros == 0:
        return float(SKETCH_MAX)
    return -SKETCH_BITS * math.log(zeros / SKETCH_BITS)


# --- per-flow state and the seed's 22 features ---------------------------------------------------

def window_start(ts_ns: int, width_ns: int) -> int:
    """Start of the tumbling window (event time) that holds `ts_ns`."""
    return ts_ns - ts_ns % width_ns


def flow_new(pkt: Packet) -> dict:
    return {"first": pkt.ts_ns, "last": pkt.ts_ns, "packets": 0, "bytes": 0, "flags": 0,
            "proto": pkt.proto, "sport": pkt.sport, "dport": pkt.dport}


def flow_update(st: dict, pkt: Packet) -> dict:
    """Add one packet (counted `sample_rate` times) to a flow state; returns the state."""
    n = max(1, pkt.sample_rate)
    st["packets"] += n
    st["bytes"] += pkt.length * n
    if pkt.ts_ns > 0:  # the seed ignored timestamps <= 0 for duration
        st["first"] = pkt.ts_ns if st["first"] <= 0 else min(st["first"], pkt.ts_ns)
        st["last"] = max(st["last"], pkt.ts_ns)
    st["flags"] |= pkt.tcp_flags
    return st


def flow_merge(a: dict, b: dict) -> dict:
    firsts = [t for t in (a["first"], b["first"]) if t > 0]
    return {"first": min(firsts) if firsts else 0, "last": max(a["last"], b["last"]),
            "packets": a["packets"] + b["packets"], "bytes": a["bytes"] + b["bytes"],
            "flags": a["flags"] | b["flags"], "proto": a["proto"], "sport": a["sport"],
            "dport": a["dport"]}


def flow_duration(st: dict) -> float:
    """Seconds from first to last packet; 0 becomes 0.001 as in the seed."""
    d = max(0, st["last"] - st["first"]) / 1e9
    return d if d != 0 else 0.001


def flow_features(st: dict) -> list[float]:
    """The seed's 22 features in SEED_FEATURES order (DESIGN.md): bps = bytes/packet (as the seed
    trained), pps = packets/max(duration, 1e-3), log_* = log1p, flags only for TCP."""
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
    """The five values the seed's analyzer printed and wrote to ml_firewall_commands.json. Its
    `bps` there is bytes/duration (unlike the trained bytes/packet): kept for output parity only."""
    duration = flow_duration(st)
    return {"duration": duration, "packets": st["packets"], "bytes": st["bytes"],
            "bps": st["bytes"] / duration, "pps": st["packets"] / duration}


# --- per-source / per-destination window aggregates ----------------------------------------------

def agg_new() -> dict:
    return {"packets": 0, "bytes": 0, "syn_noack": 0, "icmp": 0, "udp": 0,
            "flows": sketch_new(), "peers": sketch_new(), "ports": sketch_new()}


def _agg_add(agg: dict, pkt: Packet, peer: str) -> dict:
    n = max(1, pkt.sample_rate)
    agg["packets"] += n
    agg["bytes"] += pkt.length * n
    if pkt.proto == PROTO_TCP and pkt.tcp_flags & TCP_SYN and not pkt.tcp_flags & TCP_ACK:
        agg["syn_noack"] += n
    if pkt.proto in (PROTO_ICMP, PROTO_ICMPV6):
        agg["icmp"] += n
    elif pkt.proto == PROTO_UDP:
        agg["udp"] += n
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


def agg_features(agg: dict) -> list[float]:
    """flows, packets, bytes, peers, ports, syn_noack_share, icmp_share, udp_share, pkts_per_flow,
    flows_per_peer (repeated connections to one peer: brute force)."""
    packets = max(agg["packets"], 1)
    flows = max(sketch_count(agg["flows"]), 1.0)
    peers = sketch_count(agg["peers"])
    return [flows, float(agg["packets"]), float(agg["bytes"]), peers,
            sketch_count(agg["ports"]), agg["syn_noack"] / packets, agg["icmp"] / packets,
            agg["udp"] / packets, agg["packets"] / flows, flows / max(peers, 1.0)]


# --- whole windows ---------------------------------------------------------------------------------

def flow_key_text(key: Iterable) -> str:
    return "|".join(str(p) for p in key)


def row(flow: dict, src_agg: dict, dst_agg: dict) -> list[float]:
    """One model row in FEATURE_NAMES order."""
    return flow_features(flow) + agg_features(src_agg) + agg_features(dst_agg)


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
        key = pkt.flow_key()
        st = self.flows.get(key)
        if st is None:
            st = self.flows[key] = flow_new(pkt)
        flow_update(st, pkt)
        src_update(self.srcs.get(pkt.src) or self.srcs.setdefault(pkt.src, agg_new()), pkt)
        dst_update(self.dsts.get(pkt.dst) or self.dsts.setdefault(pkt.dst, agg_new()), pkt)

    def rows(self) -> tuple[list[FlowKey], list[list[float]]]:
        """(flow keys, model rows) in insertion order; aggregate features computed once per host."""
        src_f = {s: agg_features(a) for s, a in self.srcs.items()}
        dst_f = {d: agg_features(a) for d, a in self.dsts.items()}
        keys = list(self.flows)
        return keys, [flow_features(self.flows[k]) + src_f[k[0]] + dst_f[k[1]] for k in keys]

    def to_dict(self) -> dict:
        return {"start_ns": self.start_ns, "flows": [[list(k), v] for k, v in self.flows.items()],
                "srcs": self.srcs, "dsts": self.dsts}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowState":
        w = cls(d["start_ns"])
        w.flows = {tuple(k): v for k, v in d["flows"]}
        w.srcs, w.dsts = dict(d["srcs"]), dict(d["dsts"])
        return w
