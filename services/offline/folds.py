"""Splitting captures by FILE into fixed folds, and stretching attacks in time. Pure.

Folds: every capture belongs to exactly one of `k` folds, decided by its GROUP (the file name's
stem, lower-cased: `synscan.pcap` and `synscan.pcapng` are one capture in two formats and must
not end up on both sides of a split). Groups are ordered by the sha256 of their name and dealt
round-robin, benign and attack groups separately, so every fold gets a fair share of both and
the assignment never depends on the data or on the order of the manifests. Evaluating fold f
uses a model (forest, threshold, evidence bounds) trained on the benign captures of the other
folds only: no figure comes from a file the model saw.

Sustain: an attack capture repeated back to back, each copy shifted by the capture's span plus
one mean packet gap, until it spans the requested seconds (a capture already that long is kept
whole): "an attack that goes on" at the rate the capture shows.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterator, Sequence

from services.records.packet import Packet

from .training import LabelledCapture


def group_of(name: str) -> str:
    """The fold group of a capture file: its base name without extension, lower-cased."""
    base = os.path.basename(name).lower()
    for ext in (".pcapng", ".pcap", ".cap", ".jsonl", ".json"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def assign_folds(captures: Sequence[LabelledCapture], k: int) -> dict[str, int]:
    """Capture name -> fold (0..k-1), see module doc."""
    if k < 2:
        raise ValueError("need at least 2 folds")
    out: dict[str, int] = {}
    for label in ("benign", "attack"):
        groups = sorted({group_of(c.name) for c in captures if c.label == label},
                        key=lambda g: hashlib.sha256(g.encode()).hexdigest())
        fold = {g: i % k for i, g in enumerate(groups)}
        for c in captures:
            if c.label == label:
                out[c.name] = fold[group_of(c.name)]
    return out


def sustained(packets: Sequence[Packet], seconds: float) -> Iterator[Packet]:
    """`packets` (time-ordered) repeated until they span `seconds` (module doc), lazily: copies
    keep the packets' order, addresses and ports. Packets already spanning that long come as
    they are."""
    if len(packets) < 2 or seconds <= 0:
        yield from packets
        return
    first = packets[0].ts_ns
    span, target = packets[-1].ts_ns - first, int(seconds * 1e9)
    period = span + max(span // (len(packets) - 1), 1)
    shift = 0
    while shift == 0 or shift < target:
        for p in packets:
            ts = p.ts_ns + shift
            if shift and ts - first >= target:
                return
            yield p if not shift else p.replayed(ts_ns=ts)
        shift += period


def sustain(capture: LabelledCapture, seconds: float) -> LabelledCapture:
    """`capture` with its packets `sustained`."""
    return LabelledCapture(capture.name, capture.label, capture.kind,
                   list(sustained(capture.packets, seconds)))


def rate_pps(capture: LabelledCapture) -> float:
    """Packets per second over the capture's span (0 for fewer than 2 packets)."""
    pk = capture.packets
    if len(pk) < 2:
        return 0.0
    return (len(pk) - 1) / max((pk[-1].ts_ns - pk[0].ts_ns) / 1e9, 1e-9)
