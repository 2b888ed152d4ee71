"""The outage memory (services/detection/outage.py): a probe target that answered a source within
the period counts as answered for its probe evidence after it left the horizon, and only such a
target; the memory's bounds (caps, period, bytes) hold."""
from __future__ import annotations

import tracemalloc

import pytest

from services.detection import evidence as E
from services.detection.outage import MAX_SOURCES, MAX_TARGETS, AnsweredMemory
from services.records.packet import PROTO_TCP, TCP_ACK, TCP_SYN

pytestmark = pytest.mark.unit
W = 10**9
T = 1_800_000_000 * W
UDP = lambda host: (f"10.0.2.{host}", 17, 161)


def test_a_target_counts_as_answered_for_the_period_then_not():
    m = AnsweredMemory(period_s=60)
    m.note("s", [UDP(1)], T)
    assert m.answered("s", UDP(1), T + 60 * W) and not m.answered("s", UDP(1), T + 61 * W)
    assert not m.answered("s", UDP(2), T) and not m.answered("other", UDP(1), T)
    m.note("s", [UDP(1)], T + 30 * W)  # answered again: the newest answer counts
    assert m.answered("s", UDP(1), T + 90 * W)
    m.expire(T + 91 * W)
    assert m.sources == {}


def test_period_zero_remembers_nothing():
    m = AnsweredMemory(period_s=0)
    m.note("s", [UDP(1)], T)
    assert not m.answered("s", UDP(1), T) and len(m) == 0
    with pytest.raises(ValueError):
        AnsweredMemory(period_s=-1)


def test_the_caps_drop_the_least_recently_answered_first():
    m = AnsweredMemory(max_sources=2, max_targets=3)
    m.note("a", [UDP(i) for i in range(1, 5)], T)
    assert len(m.sources["a"]) == 3 and not m.answered("a", UDP(1), T)
    assert all(m.answered("a", UDP(i), T) for i in (2, 3, 4))
    m.note("b", [UDP(1)], T + W)
    m.note("a", [UDP(2)], T + 2 * W)  # a answered again: b is now the least recent
    m.note("c", [UDP(1)], T + 3 * W)
    assert list(m.sources) == ["a", "c"]
    m.note("a", [UDP(9)], T + 4 * W)  # a's least recent target (3) goes, not the renewed 2
    assert m.answered("a", UDP(2), T + 4 * W) and not m.answered("a", UDP(3), T + 4 * W)


def test_the_worst_case_bytes_stay_as_documented():
    """~112 bytes per target (outage.py's docstring: 2048 x 256 targets, ~59 MB): a full
    memory of 32 sources with their own IPv6 addresses, every target answered in its own
    window (no shared time objects), costs at most 120 bytes per target."""
    sources, targets = 32, MAX_TARGETS
    tracemalloc.start()
    m = AnsweredMemory()
    for s in range(sources):
        src = f"2001:db8:{s:x}:{s:x}:{s:x}:{s:x}:{s:x}:1"
        for t in range(targets):
            m.note(src, [(f"2001:db8:ffff:{s:x}::{t:x}", 17, 40000 + t)], T + s * 1000 + t)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(m) == sources * targets
    assert used / (sources * targets) <= 120
    assert MAX_SOURCES * MAX_TARGETS * 120 <= 64 * 2**20


def test_probe_fates_count_a_remembered_target_as_answered_after_the_horizon():
    """A station's 12 targets answered in its first window; 10 windows later (past a 3-window
    horizon) 10 of them are silent: with the window decided given, only targets that never
    answered count (2 of 12 here: the two probed for the first time now)."""
    fates = E.ProbeFates(W, span=3, memory_s=3600)
    fates.add(T, {"s": {UDP(i): False for i in range(1, 11)}})
    late = T + 10 * W
    fates.add(late, {"s": {**{UDP(i): True for i in range(1, 11)}, UDP(11): True,
                           UDP(12): True}})
    assert fates.unanswered_share("s") == 1.0  # the horizon alone: every target silent
    assert fates.unanswered_share("s", late) == 2 / 12
    gone = E.ProbeFates(W, span=3, memory_s=5)  # a period shorter than the gap: forgotten
    gone.add(T, {"s": {UDP(1): False}})
    gone.add(late, {"s": {UDP(1): True}})
    assert gone.unanswered_share("s", late) == 1.0


def flow(dst: str, dport: int, flags: int, syn: int = 1) -> tuple:
    return ("203.0.113.5", dst, 40000, dport, PROTO_TCP), flags, syn


def watch_window(watch: E.SourceWatch, ws: int, flows: list) -> dict:
    """Count `flows` (flow()'s) into window `ws` as assess_window does; the source's measures."""
    entries, shakes = {}, {}
    for key, flags, syn in flows:
        E.SourceWatch.count(entries, key, 1 + bool(flags & TCP_ACK), flags, syn, True, shakes)
    watch.add_entries(ws, entries, {k for k, _, _ in flows}, shakes)
    return watch.measures(ws, ["203.0.113.5"])["203.0.113.5"]


def test_tcp_targets_that_completed_a_handshake_leave_the_half_open_probes():
    """Stage 1: 12 backends accepted the source (SYN then its ACK); 20 windows later 10 of
    them and 2 never seen before get SYNs with no answer: probe_tcp counts the 2 new ones."""
    watch = E.SourceWatch(W, span=3)
    assert watch_window(watch, T, [flow(f"10.0.3.{i}", 8080, TCP_SYN | TCP_ACK)
                                   for i in range(1, 13)])[1] == 0
    dead = [flow(f"10.0.3.{i}", 8080, TCP_SYN) for i in range(1, 11)]
    new = [flow(f"10.0.3.{i}", 8080, TCP_SYN) for i in (20, 21)]
    assert watch_window(watch, T + 20 * W, dead + new)[1] == 2
    off = E.SourceWatch(W, span=3, memory_s=0)
    watch_window(off, T, [flow(f"10.0.3.{i}", 8080, TCP_SYN | TCP_ACK) for i in range(1, 13)])
    assert watch_window(off, T + 20 * W, dead + new)[1] == 12
    # another port of a remembered host never accepted the source: it counts
    assert watch_window(watch, T + 21 * W, [flow("10.0.3.1", p, TCP_SYN)
                                            for p in range(22, 34)])[1] == 12


def test_a_station_is_not_forgotten_for_clients_that_each_answered_once():
    """A busy server's clients each complete a handshake with one target (the server's port):
    more of them than MAX_SOURCES between two of a health checker's rounds must not push the
    checker (12 backends) out; at the source cap a source with one target goes first. Only
    sources with 2 or more targets, as a station has, push each other out."""
    m = AnsweredMemory(max_sources=100)
    m.note("checker", [UDP(i) for i in range(1, 13)], T)
    for c in range(1000):
        m.note(f"client{c}", [("10.0.0.80", PROTO_TCP, 443)], T + W)
    assert all(m.answered("checker", UDP(i), T + 2 * W) for i in range(1, 13))
    assert len(m.sources) == 100 and m.answered("client999", ("10.0.0.80", PROTO_TCP, 443), T + W)
    for s in range(100):  # stations (2 targets each) do push it out, least recent first
        m.note(f"station{s}", [UDP(1), UDP(2)], T + 3 * W)
    assert "checker" not in m.sources and len(m.sources) == 100


def test_a_source_expired_down_to_one_target_goes_first_at_the_cap():
    """expire() trimming a source to one target makes it a single: at the source cap it goes
    before a station with 2 or more targets. It used to stay out of `singles`, so once the
    other singles were gone the station went before it."""
    m = AnsweredMemory(period_s=60, max_sources=3)
    m.note("old", [UDP(1)], T)                    # its first target expires at T + 61 s
    m.note("old", [UDP(2)], T + 30 * W)
    m.note("station", [UDP(3), UDP(4)], T + 40 * W)
    m.note("client", [UDP(5)], T + 50 * W)
    m.expire(T + 61 * W)                          # old keeps UDP(2) only: a single now
    assert len(m.sources["old"]) == 1
    assert list(m.singles) == ["old", "client"]
    m.note("new", [UDP(6)], T + 62 * W)           # the cap: the least recent single goes
    assert set(m.sources) == {"station", "client", "new"}
    m.note("new2", [UDP(7)], T + 63 * W)
    assert "station" in m.sources and "client" not in m.sources
