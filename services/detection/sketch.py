"""Distinct counts: linear counting on a 4096-bit bitmap (64 words of 64 bits), hashed with
blake2b so every process agrees. Pure; `features` re-exports it.

512 bytes per key whatever the traffic, mergeable by OR, exact for a few dozen items, within a
few % up to ~10k, saturating at ~34k (`SKETCH_MAX`). `hash64` is the same hash for other uses
(the evidence module's probe codes and the scorer's record of what an address sent).
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable

SKETCH_WORDS = 64
SKETCH_BITS = SKETCH_WORDS * 64
SKETCH_MAX = int(SKETCH_BITS * math.log(SKETCH_BITS))  # estimate reported when every bit is set
_MASK64 = (1 << 64) - 1

def sketch_new() -> list[int]:
    return [0] * SKETCH_WORDS


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def hash64(item: str | tuple) -> int:
    """64-bit blake2b of an item's text (a tuple's parts joined by "|"): every process agrees."""
    if isinstance(item, str):
        return _hash(item)
    if len(item) == 5:  # a 5-tuple, the common case: the f-string is twice as fast as join
        return _hash(f"{item[0]}|{item[1]}|{item[2]}|{item[3]}|{item[4]}")
    if len(item) == 4:  # a sender key (evidence.sent_from_key)
        return _hash(f"{item[0]}|{item[1]}|{item[2]}|{item[3]}")
    return _hash("|".join(str(p) for p in item))


def hash64_keys(keys: Iterable[tuple]) -> list[int]:
    """hash64 of each 5-tuple of `keys` (one comprehension: a window's flows at once)."""
    b2 = hashlib.blake2b
    return [int.from_bytes(b2(f"{a}|{b}|{c}|{d}|{e}".encode(), digest_size=8).digest(), "little")
            for a, b, c, d, e in keys]


def sketch_pos(item: str) -> int:
    """The sketch bit an item sets."""
    return _hash(item) % SKETCH_BITS


_POS_CACHE: dict[str, int] = {}


def _cached_pos(item: str) -> int:
    """`sketch_pos` of an item that recurs (addresses, ports), remembered (bounded)."""
    pos = _POS_CACHE.get(item)
    if pos is None:
        if len(_POS_CACHE) >= 1 << 16:
            _POS_CACHE.clear()
        pos = _POS_CACHE[item] = sketch_pos(item)
    return pos


def sketch_add(sk: list[int], item: str) -> int:
    """Add an item; returns its position (`sketch_pos`)."""
    h = sketch_pos(item)
    sk[h >> 6] |= 1 << (h & 63)
    return h


def sketch_merge(a: list[int], b: list[int]) -> list[int]:
    return [(x | y) & _MASK64 for x, y in zip(a, b)]


def sketch_count(sk: list[int]) -> float:
    return _linear_count(sum(map(int.bit_count, sk)))


def _linear_count(ones: int) -> float:
    zeros = SKETCH_BITS - ones
    if zeros == 0:
        return float(SKETCH_MAX)
    return -SKETCH_BITS * math.log(zeros / SKETCH_BITS)
