"""Events as numpy columns on the capture's hot path: stamping, partitioning, encoding.

The capture never builds a Packet per event: ring records (fastring.RECORD_DTYPE) become a CHUNK
array (epoch time, sequence number, sampling rate added), are split by partition with one stable
sort, and each chunk of up to `batch` events is encoded straight into the codec's columnar packet
record (services.wire.codec, schema v1: little-endian typed columns, raw 4/16-byte addresses).
tests/unit/test_capture_columns.py checks that codec.decode_packet_columns reads it back and that
partitions match services.wire.partition.source_partition.
"""
from __future__ import annotations

import msgpack
import numpy as np
from services.dataplane.structs import addr_bytes
from services.wire import codec
from services.wire.partition import key_partition
from services.records.packet import Packet

CHUNK = np.dtype([("ts", "<u8"), ("seq", "<u8"), ("sport", "<u2"), ("dport", "<u2"),
                  ("proto", "u1"), ("tcp_flags", "u1"), ("len", "<u4"), ("ifindex", "<u4"),
                  ("sr", "<u4"), ("saddr", "u1", (16,)), ("daddr", "u1", (16,)),
                  ("icmp_type", "u1")])
_V4_PREFIX = np.array([0] * 10 + [0xFF, 0xFF], dtype=np.uint8)
_COLUMNS = (("ts", "ts"), ("seq", "seq"), ("sp", "sport"), ("dp", "dport"), ("pr", "proto"),
            ("fl", "tcp_flags"), ("len", "len"), ("if", "ifindex"), ("sr", "sr"),
            ("it", "icmp_type"))
_V4_MAPPED = _V4_PREFIX.tobytes()


def from_records(rec: np.ndarray, offset_ns: int, first_seq: int, sample_rate: int) -> np.ndarray:
    """Ring records -> CHUNK rows numbered first_seq, first_seq+1, ..."""
    n = len(rec)
    c = np.empty(n, CHUNK)
    c["ts"] = rec["ts_ns"] + np.uint64(offset_ns)
    c["seq"] = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    for name in ("sport", "dport", "proto", "tcp_flags", "len", "ifindex", "saddr", "daddr",
                 "icmp_type"):
        c[name] = rec[name]
    c["sr"] = sample_rate
    return c


def from_packets(packets: list[Packet], first_seq: int, sample_rate: int | None) -> np.ndarray:
    """Packets (tests, replays) -> CHUNK rows; sample_rate None keeps each packet's own."""
    c = np.empty(len(packets), CHUNK)
    for i, p in enumerate(packets):
        c[i] = (p.ts_ns, first_seq + i, p.sport, p.dport, p.proto, p.tcp_flags, p.length,
                p.ifindex, p.sample_rate if sample_rate is None else sample_rate,
                np.frombuffer(addr_bytes(p.src), np.uint8),
                np.frombuffer(addr_bytes(p.dst), np.uint8), p.icmp_type)
    return c


def split_by_partition(c: np.ndarray, partitions: int) -> list[tuple[int, np.ndarray]]:
    """[(partition, rows)] with rows in their original (sequence) order."""
    keys = np.ascontiguousarray(c["saddr"]).view("V16").ravel()
    uniq, inverse = np.unique(keys, return_inverse=True)
    table = np.array([_partition(u.tobytes(), partitions) for u in uniq], dtype=np.int64)
    parts = table[inverse.ravel()]
    if len(uniq) == 1:
        return [(int(parts[0]), c)]
    order = np.argsort(parts, kind="stable")
    parts, c = parts[order], c[order]
    cuts = np.flatnonzero(np.diff(parts)) + 1
    starts = np.concatenate(([0], cuts))
    return [(int(parts[s]), chunk) for s, chunk in zip(starts, np.split(c, cuts))]


def _partition(addr16: bytes, partitions: int) -> int:
    """partition.source_partition of a source address given as 16 bytes (IPv4 mapped): the
    key is the packed address, 4 bytes for IPv4."""
    return key_partition(addr16[12:] if addr16[:12] == _V4_MAPPED else addr16, partitions)


def _addresses(a16: np.ndarray) -> list[bytes]:
    raw = a16.tobytes()
    n = len(a16)
    v4 = np.all(a16[:, :12] == _V4_PREFIX, axis=1)
    if v4.all():
        return [raw[i + 12:i + 16] for i in range(0, 16 * n, 16)]
    return [raw[16 * i + 12:16 * i + 16] if m else raw[16 * i:16 * i + 16]
            for i, m in enumerate(v4.tolist())]


def encode(c: np.ndarray, node: str) -> bytes:
    """One codec packet record (columnar form) carrying the rows of `c` (one partition)."""
    n = len(c)
    if not 0 < n <= codec.MAX_BATCH:
        raise ValueError(f"a packet record carries 1..{codec.MAX_BATCH} events, not {n}")
    rec = {"v": codec.SCHEMA_VERSION, "t": codec.T_PACKETS, "n": n}
    for key, name in _COLUMNS:
        rec[key] = c[name].tobytes()
    rec["src"] = _addresses(c["saddr"])
    rec["dst"] = _addresses(c["daddr"])
    rec["node"] = node
    return msgpack.packb(rec, use_bin_type=True)
