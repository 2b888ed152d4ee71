"""msgpack codecs for every record xdpguard puts on Kafka (schemas in docs/events.md).

Every record is a msgpack map with `v` (schema version) and `t` (record type). Readers ignore
keys they do not know, so fields can be added without a version bump; `v` changes only when a
field's meaning changes, and a reader refuses versions it does not know. Every decoder raises
DecodeError (with the reason) and nothing else on malformed, truncated, oversized, wrong-type or
wrong-version input; encoders raise ValueError/TypeError on bad arguments (a caller's bug).

Packet events are columnar: one record carries 1..MAX_BATCH events bound for one partition,
numeric columns are little-endian typed arrays (compact, and validated by their width) and
addresses are raw 4- or 16-byte strings; a record of one event may instead carry it as one row
`e` (faster to decode). This module reads packet records; the capture writes them
(services/capture/columns.py). Records are partitioned by SOURCE address, so every
event of a flow and every per-source aggregate stays on one partition (services/wire/partition.py).
"""
from __future__ import annotations

import array
import math
import sys
import time
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import contains
from typing import Any

import msgpack

from services.common.errors import DecodeError
from services.records.packet import ICMP_TYPE_UNKNOWN, Packet
from services.records.rules import Rule
from services.records.verdict import Verdict

from .addresses import address_from_packed, addresses

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 4 * 1024 * 1024   # far above any sane batch; bounds memory on hostile input
MAX_BATCH = 65536                     # events per packet record
MAX_DEADLETTER_RAW = 256 * 1024       # dead letters keep at most this much of the bad record

T_PACKETS, T_VERDICT, T_RULE, T_DEADLETTER = "pk", "verdict", "rule", "deadletter"
RULE_STATES = ("applied", "removed", "desired")

# The integer columns of a packet record: (wire name, array typecode, Packet attribute), in the
# order of a one-event row (`e`, then src, dst, node); all little-endian on the wire. Writers:
# the capture (services/capture/columns.py) and the tests' reference encoder
# (tests/support/packet_records.py).
PACKET_COLUMNS = (
    ("ts", "Q", "ts_ns"), ("seq", "Q", "seq"), ("sp", "H", "sport"), ("dp", "H", "dport"),
    ("pr", "B", "proto"), ("fl", "B", "tcp_flags"), ("len", "I", "length"),
    ("if", "I", "ifindex"), ("sr", "I", "sample_rate"),
)
# Integer columns added since (wire name, typecode, Packet attribute, value when absent): a
# record written before one existed still decodes, the column read as that value throughout.
# A one-event row carries them after its twelfth element, in this order.
PACKET_COLUMNS_ADDED = (("it", "B", "icmp_type", ICMP_TYPE_UNKNOWN),)
_SWAP = sys.byteorder != "little"


# --- envelope -------------------------------------------------------------------------------

def _pack(record: dict) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def _unpack(data: Any, kind: str) -> dict:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{kind}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_RECORD_BYTES:
        raise DecodeError(f"{kind}: record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        rec = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types for bad input; all mean "malformed"
        raise DecodeError(f"{kind}: not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(rec, dict):
        raise DecodeError(f"{kind}: expected a map, got {type(rec).__name__}")
    version = rec.get("v")
    if version != SCHEMA_VERSION or type(version) is not int:
        raise DecodeError(f"{kind}: unsupported schema version {version!r} (reader knows {SCHEMA_VERSION})")
    if rec.get("t") != kind:
        raise DecodeError(f"expected a {kind!r} record, got type {rec.get('t')!r}")
    return rec


def _field(rec: dict, name: str, types: type | tuple, kind: str, default: Any = ...) -> Any:
    if name not in rec:
        if default is ...:
            raise DecodeError(f"{kind}: missing field {name!r}")
        return default
    value = rec[name]
    if not isinstance(value, types) or (isinstance(value, bool) and types in (int, (int, float))):
        raise DecodeError(f"{kind}: field {name!r} has type {type(value).__name__}")
    return value


# --- packet events --------------------------------------------------------------------------

# a one-event row's integers: PACKET_COLUMNS (elements 0..8), then PACKET_COLUMNS_ADDED (12..)
_ROW_INTS = tuple((attr, 1 << (8 * array.array(code).itemsize))
                  for _, code, attr, *_ in (*PACKET_COLUMNS, *PACKET_COLUMNS_ADDED))
_ADDED_ABSENT = [c[3] for c in PACKET_COLUMNS_ADDED]
# a columns record's: (wire name, typecode, attribute, value when absent: None if required)
_DECODE_COLUMNS = (*((*c, None) for c in PACKET_COLUMNS), *PACKET_COLUMNS_ADDED)


def _decode_row(row: Any) -> dict[str, Any]:
    if type(row) is not list or len(row) < 12:
        raise DecodeError(f"{T_PACKETS}: field 'e' must be a list of at least 12 values")
    cols: dict[str, Any] = {"n": 1}
    ints = chain(row[:9], row[12:], _ADDED_ABSENT[len(row) - 12:])
    for (attr, limit), value in zip(_ROW_INTS, ints):
        if type(value) is not int or not 0 <= value < limit:
            raise DecodeError(f"{T_PACKETS}: {attr} {value!r:.40} is not an integer in range")
        cols[attr] = [value]
    _one_in_n(cols["sample_rate"])
    cols["src"], cols["dst"] = [address_from_packed(row[9])], [address_from_packed(row[10])]
    _same_families(cols["src"], cols["dst"])
    if type(row[11]) is not str:
        raise DecodeError(f"{T_PACKETS}: node must be a string")
    cols["node"] = [row[11]]
    return cols


def _one_in_n(rates: list[int] | array.array) -> None:
    """DecodeError if an event's sample rate is 0: `rates` is a row's [rate], or a columns
    record's uint32 column, scanned by numpy (`0 in` an array.array made a Python int per
    event: 5 us a 500-event record, 3% of its decode; imported here so that the enforcer and
    the CLI, which decode verdicts, load no numpy)."""
    if type(rates) is list:
        bad = 0 in rates
    else:
        import numpy as np
        bad = not np.frombuffer(rates, dtype=np.uint32).all()
    if bad:
        raise DecodeError(f"{T_PACKETS}: sample rate 0 (an event stands for 1 in N packets, N >= 1)")


def _same_families(src: list[str], dst: list[str]) -> None:
    """One IP header holds both addresses: an event whose two are of different families is no
    packet (and no flow rule could name it)."""
    if list(map(contains, src, repeat(":"))) != list(map(contains, dst, repeat(":"))):
        raise DecodeError(f"{T_PACKETS}: an event's source and destination are of different "
                          f"IP families")


@dataclass(frozen=True, slots=True)
class PacketColumns:
    """A decoded packet record as columns (the scorer's fast path: no Packet per event).
    `arrays`: the integer columns as decoded (Packet attribute -> array.array of the wire
    type, native byte order; None for a one-event record), for numpy without a copy per
    element (np.frombuffer): the scorer's vectorised fold (services/scorer/fold.py)."""
    n: int
    ts_ns: list[int]
    seq: list[int]
    src: list[str]
    dst: list[str]
    sport: list[int]
    dport: list[int]
    proto: list[int]
    tcp_flags: list[int]
    length: list[int]
    ifindex: list[int]
    sample_rate: list[int]
    node: list[str]
    icmp_type: list[int]  # ICMP_TYPE_UNKNOWN throughout for a record written without it
    arrays: dict[str, array.array] | None = field(default=None, compare=False, repr=False)

    def packets(self) -> list[Packet]:
        return [Packet(*row) for row in zip(
            self.ts_ns, self.src, self.dst, self.sport, self.dport, self.proto, self.tcp_flags,
            self.length, self.ifindex, self.sample_rate, self.node, self.seq, self.icmp_type)]


def decode_packet_columns(data: bytes) -> PacketColumns:
    rec = _unpack(data, T_PACKETS)
    n = _field(rec, "n", int, T_PACKETS)
    if not 0 < n <= MAX_BATCH:
        raise DecodeError(f"{T_PACKETS}: event count {n} outside 1..{MAX_BATCH}")
    if n == 1 and "e" in rec:
        return PacketColumns(**_decode_row(rec["e"]))
    cols: dict[str, Any] = {"n": n, "arrays": {}}
    for key, code, attr, absent in _DECODE_COLUMNS:
        if absent is not None and key not in rec:
            col = array.array(code, [absent]) * n
            cols[attr], cols["arrays"][attr] = col.tolist(), col
            continue
        raw = _field(rec, key, bytes, T_PACKETS)
        col = array.array(code)
        if len(raw) != n * col.itemsize:
            raise DecodeError(f"{T_PACKETS}: column {key!r} has {len(raw)} bytes, expected {n * col.itemsize}")
        col.frombytes(raw)
        if _SWAP:
            col.byteswap()
        cols[attr] = col.tolist()
        cols["arrays"][attr] = col
    for key in ("src", "dst"):
        raw = _field(rec, key, list, T_PACKETS)
        if len(raw) != n:
            raise DecodeError(f"{T_PACKETS}: column {key!r} has {len(raw)} entries, expected {n}")
        cols[key] = addresses(raw)
    _same_families(cols["src"], cols["dst"])
    _one_in_n(cols["arrays"]["sample_rate"])
    node = _field(rec, "node", (str, list), T_PACKETS)
    if isinstance(node, str):
        cols["node"] = [node] * n
    elif len(node) != n or not all(type(x) is str for x in node):
        raise DecodeError(f"{T_PACKETS}: column 'node' must hold {n} strings")
    else:
        cols["node"] = node
    return PacketColumns(**cols)


def decode_packets(data: bytes) -> list[Packet]:
    return decode_packet_columns(data).packets()


# --- verdicts -------------------------------------------------------------------------------

def encode_verdict(verdict: Verdict) -> bytes:
    return _pack({
        "v": SCHEMA_VERSION, "t": T_VERDICT, "id": verdict.verdict_id, "rule": verdict.rule.to_dict(),
        "score": float(verdict.score), "threshold": float(verdict.threshold),
        "model": verdict.model_id, "ws": verdict.window_start_ns, "we": verdict.window_end_ns,
        "node": verdict.node, "reason": verdict.reason, "created": verdict.created_ns,
    })


_RULE_FIELD_TYPES = {name: (str if name in ("scope", "action", "origin", "src", "dst") else int)
                     for name in Rule.__dataclass_fields__}


def _decode_rule(d: Any, kind: str) -> Rule:
    if not isinstance(d, dict):
        raise DecodeError(f"{kind}: rule must be a map, got {type(d).__name__}")
    for name, value in d.items():
        want = _RULE_FIELD_TYPES.get(name)
        if want is not None and (type(value) is not want):
            raise DecodeError(f"{kind}: rule field {name!r} has type {type(value).__name__}")
    try:
        return Rule.from_dict(d)
    except (ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"{kind}: invalid rule ({exc})") from None


def decode_verdict(data: bytes) -> Verdict:
    rec = _unpack(data, T_VERDICT)
    k = T_VERDICT
    return Verdict(
        rule=_decode_rule(_field(rec, "rule", dict, k), k),
        score=_finite(_field(rec, "score", (int, float), k), "score", k),
        threshold=_finite(_field(rec, "threshold", (int, float), k), "threshold", k),
        model_id=_field(rec, "model", str, k),
        window_start_ns=_field(rec, "ws", int, k),
        window_end_ns=_field(rec, "we", int, k),
        node=_field(rec, "node", str, k),
        reason=_field(rec, "reason", str, k, ""),
        created_ns=_field(rec, "created", int, k, 0),
        verdict_id=_nonempty(_field(rec, "id", str, k), "id", k),
    )


def _finite(value: int | float, name: str, kind: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise DecodeError(f"{kind}: {name} {value} is not a finite number")
    return value


def _nonempty(value: str, name: str, kind: str) -> str:
    if not value:
        raise DecodeError(f"{kind}: field {name!r} is empty")
    return value


# --- rule records (compacted `rules` topic) -------------------------------------------------

@dataclass(frozen=True)
class RuleRecord:
    key: bytes
    rule: Rule | None          # None: a tombstone (the rule was deleted)
    state: str = "removed"     # applied | removed | desired
    node: str = ""
    updated_ns: int = 0
    verdict_id: str = ""       # the verdict that caused it, if any
    partition: int = -1        # where the reader found it (-1: not read from Kafka) ...
    offset: int = -1
    raw: bytes | None = None   # ... and its value as read (for a dead letter)

    @property
    def deleted(self) -> bool:
        return self.rule is None


def rule_record_key(rule: Rule) -> bytes:
    return rule.key().encode()


def encode_rule_record(rule: Rule, state: str, node: str, updated_ns: int | None = None,
                       verdict_id: str = "") -> tuple[bytes, bytes]:
    """(key, value) for the compacted rules topic."""
    if state not in RULE_STATES:
        raise ValueError(f"rule state must be one of {RULE_STATES}, not {state!r}")
    value = _pack({
        "v": SCHEMA_VERSION, "t": T_RULE, "rule": rule.to_dict(), "state": state, "node": node,
        "updated": time.time_ns() if updated_ns is None else updated_ns, "verdict": verdict_id,
    })
    return rule_record_key(rule), value


def rule_tombstone(rule: Rule) -> tuple[bytes, None]:
    """(key, None): compaction then forgets the rule."""
    return rule_record_key(rule), None


def decode_rule_record(key: bytes | None, value: bytes | None) -> RuleRecord:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise DecodeError(f"{T_RULE}: record without a key")
    key = bytes(key)
    if value is None:
        return RuleRecord(key=key, rule=None)
    rec = _unpack(value, T_RULE)
    rule = _decode_rule(_field(rec, "rule", dict, T_RULE), T_RULE)
    if rule_record_key(rule) != key:
        raise DecodeError(f"{T_RULE}: key {key!r:.80} does not match rule key {rule.key()!r:.80}")
    state = _field(rec, "state", str, T_RULE)
    if state not in RULE_STATES:
        raise DecodeError(f"{T_RULE}: unknown state {state!r}")
    return RuleRecord(key=key, rule=rule, state=state, node=_field(rec, "node", str, T_RULE),
                      updated_ns=_field(rec, "updated", int, T_RULE, 0),
                      verdict_id=_field(rec, "verdict", str, T_RULE, ""))


# --- dead letters ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: bytes               # the bad record, cut to MAX_DEADLETTER_RAW
    service: str
    raw_len: int             # its original length
    ts_ns: int = 0


def encode_deadletter(source_topic: str, partition: int, offset: int, reason: str,
                      raw_bytes: bytes | None, service: str, ts_ns: int | None = None) -> bytes:
    raw = bytes(raw_bytes or b"")
    return _pack({
        "v": SCHEMA_VERSION, "t": T_DEADLETTER, "topic": source_topic, "partition": partition,
        "offset": offset, "reason": reason, "raw": raw[:MAX_DEADLETTER_RAW], "raw_len": len(raw),
        "service": service, "ts": time.time_ns() if ts_ns is None else ts_ns,
    })


def decode_deadletter(data: bytes) -> DeadLetter:
    rec = _unpack(data, T_DEADLETTER)
    k = T_DEADLETTER
    raw = _field(rec, "raw", bytes, k)
    return DeadLetter(
        source_topic=_field(rec, "topic", str, k), partition=_field(rec, "partition", int, k),
        offset=_field(rec, "offset", int, k), reason=_field(rec, "reason", str, k), raw=raw,
        service=_field(rec, "service", str, k), raw_len=_field(rec, "raw_len", int, k, len(raw)),
        ts_ns=_field(rec, "ts", int, k, 0))
