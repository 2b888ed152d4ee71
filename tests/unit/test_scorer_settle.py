"""Stage 2 settles a closed window only with every partition's probe tally (dst_windows
DstPartition.peer / settle; collect.CollectStage sends the tally marks): a source's probes are
spread over the partitions by destination and each knows the answers to its own only."""
from __future__ import annotations

import asyncio
import time

import msgpack
import numpy as np
import pytest

from services.common.errors import DecodeError
from services.detection.evidence import WindowEvidence
from services.detection.features import FEATURE_NAMES
from services.scorer.dst_windows import ClosedWindow, DstPartition
from services.scorer.tables import decode_tallies, encode_tallies, is_tally, tally_key
from tests.support.scorer_app import collect_stage
from tests.support.scorer_stages import Clock

W = 10**9
T = 1_800_000_000 * W
S = "10.0.0.50"


def partition(n=3, q=0, wait=12.0):
    clock = Clock()
    part = DstPartition(q, W, n, wait, clock)
    for p in range(n):
        part.mark(p, T + 5 * W)
    return part, clock


PROBES = {S: [1, 1, {("10.0.1.1", 1, 0): True}]}  # a candidate's probe: the window waits


def closed(part, ws, src=None, tally=None, groups=None):
    """A window closed at `part` with the given source measures and probe tally (default: a
    candidate source's one probe)."""
    tally = PROBES if tally is None else tally
    ev = WindowEvidence({}, src or {}, {}, tally=tally)
    w = ClosedWindow(ws, ws + W, part.partition, [], {}, {},
                     np.empty((0, len(FEATURE_NAMES))), [], ev, part.memory,
                     groups=groups or {})
    return part._pending(w)


def test_a_closed_window_settles_once_every_partition_has_closed_past_it():
    part, _ = partition()
    closed(part, T)
    assert part.settle() == []
    part.peer(0, T, {})
    part.peer(1, T, {})
    assert part.settle() == []          # partition 2 has not told yet
    part.peer(2, T - W, {})
    assert part.settle() == []          # ... and is not past T yet
    part.peer(2, T, {})
    assert [w.window_ns for w in part.settle()] == [T] and part.settled_upto == T


def test_a_silent_partition_is_not_waited_for_but_a_live_one_is():
    part, clock = partition(wait=12.0)
    closed(part, T)
    clock.t += 5.0
    part.peer(0, T, {})
    part.peer(1, T, {})
    assert part.settle() == []          # partition 2 was heard (at start) within 12 s
    clock.t += 8.0                      # 13 s since partition 2 was heard, 8 s since the others
    part.peer(0, T, {})
    part.peer(1, T, {})
    assert [w.window_ns for w in part.settle()] == [T]


def test_a_window_waits_at_most_max_wait_for_a_partition_that_stopped_closing():
    part, clock = partition(wait=12.0)
    closed(part, T)
    for t in range(12):
        for q in range(3):
            part.peer(q, T - W if q == 2 else T, {})  # partition 2 alive but stuck
        assert part.settle() == []
        clock.t += 1.0
    assert [w.window_ns for w in part.settle()] == [T]


def test_probe_other_is_held_to_the_share_over_every_partitions_tally():
    """A monitor's group of 20: this partition holds 2 of its targets, both dead; the others
    hold 18, answered. Alone the window reads 2 of 2 unanswered; settled, 2 of 20, in the
    evidence the model and the decision read (nothing left to hold lower: the horizon is this
    window)."""
    part, _ = partition(n=2)
    dead = {(f"10.0.1.{i}", 1, 0): True for i in range(2)}
    alive = {(f"10.0.1.{i}", 1, 0): False for i in range(2, 20)}
    closed(part, T, src={S: [0, 0, 20.0, 0, 2]}, tally={S: [2, 2, dead]}, groups={S: 20})
    part.peer(0, T, {T: {S: [2, 2, dead]}})
    part.peer(1, T, {T: {S: [18, 0, alive]}})
    [w] = part.settle()
    assert w.evidence.src[S][2] == 20 * 2 / 20 and w.evidence.held == {}
    assert w.evidence.src_for_decision(S)[2] == 2.0


def test_a_window_settled_without_every_tally_holds_no_probe_evidence():
    """Settled without the other partition's tally (it stopped closing), the 2 dead targets
    here could be a monitor's 2 of 20 or a sweep's: probe_other is held to 0 for decisions."""
    part, clock = partition(n=2, wait=1.0)
    dead = {(f"10.0.1.{i}", 1, 0): True for i in range(2)}
    closed(part, T, src={S: [0, 0, 20.0, 0, 2]}, tally={S: [2, 2, dead]}, groups={S: 20})
    part.peer(0, T, {T: {S: [2, 2, dead]}})
    part.peer(1, T - W, {})
    clock.t += 1.0
    part.peer(1, T - W, {})
    [w] = part.settle()
    assert w.evidence.held == {S: 0.0} and part.fates.unanswered_share(S) == 1.0


def test_tallies_of_windows_without_flows_here_count_over_the_horizon():
    part, _ = partition(n=2)
    answered = {(f"10.0.1.{i}", 17, 161): False for i in range(3)}
    part.peer(1, T, {T: {S: [3, 0, answered]}})
    part.peer(0, T, {})
    assert part.settle() == [] and part.settled_upto == T
    dead = {("10.0.1.9", 17, 161): True}
    closed(part, T + W, src={S: [0, 0, 4.0, 0, 1]}, tally={S: [1, 1, dead]}, groups={S: 4})
    part.peer(0, T + W, {T + W: {S: [1, 1, dead]}})
    part.peer(1, T + W, {})
    [w] = part.settle()
    assert w.evidence.held == {S: 4 * 1 / 4}  # 1 of the 4 distinct targets unanswered


def test_a_window_without_candidate_probes_here_does_not_wait_for_the_others():
    """Nothing of it depends on the others' tallies (a SYN flood's window, say): it goes at
    once, unless an earlier window with a tally still waits: then it waits behind that one
    (windows are scored in order: escalation memory; the marker stays below both)."""
    part, _ = partition()
    closed(part, T, tally={})
    closed(part, T + W)
    closed(part, T + 2 * W, tally={})
    assert [w.window_ns for w in part.settle()] == [T]
    part.closed_upto = T + 2 * W
    assert part.decided_upto() == T + W - 1
    for q in range(3):
        part.peer(q, T + 2 * W, {})
    assert [w.window_ns for w in part.settle()] == [T + W, T + 2 * W]
    assert part.decided_upto() == T + 2 * W


def test_tally_marks_round_trip_and_bad_ones_are_refused():
    tallies = {T: {S: [3, 1, {("10.0.1.1", 17, 161): True, ("2001:db8::1", 58, 0): False}]}}
    [mark] = encode_tallies(4, T, tallies)
    assert decode_tallies(mark) == (4, T, tallies)
    assert is_tally(tally_key(4)) and not is_tally(b"mark/4")
    bad = [b"\xc1", msgpack.packb([1, T]), msgpack.packb([-1, T, []]),
           msgpack.packb([1, T, [[T, [[S, 1, 2, []]]]]]),         # more unanswered than probes
           msgpack.packb([1, T, [[T, [[S, 0, 0, []]]]]]),         # no probes
           msgpack.packb([1, T, [[T, [[S, 1, 1, [["d", 1, 70000, True]]]]]]]),
           msgpack.packb([1, T, [[T, [[S, 1, 1, [["d", 1, 0, 1]]]]]]]),  # not a bool
           msgpack.packb([1, T, [[T, [[S, 1]]]]])]
    for raw in bad:
        with pytest.raises(DecodeError):
            decode_tallies(raw)


@pytest.fixture
def collect(monkeypatch):
    return collect_stage(monkeypatch)


def test_the_collect_stage_tells_every_other_partition_and_dead_letters_bad_marks(collect):
    n, now = collect.n, time.time_ns() // W * W - 5 * W
    assert n > 1
    part = collect.partition(1)
    for p in range(n):
        part.mark(p, now)
    asyncio.run(collect.close())
    marks = [(k, q) for k, q, _ in collect.sent if is_tally(k)]
    assert sorted(q for _, q in marks) == [q for q in range(n) if q != 1]
    assert {k for k, _ in marks} == {tally_key(1)} and part.peers_upto[1] == now
    asyncio.run(collect.on_chunk(1, 7, tally_key(2), encode_tallies(2, now, {})[0]))
    assert part.peers_upto[2] == now
    for bad in (b"\xc1 not msgpack", encode_tallies(2, now + 3600 * W, {})[0]):
        asyncio.run(collect.on_chunk(1, 8, tally_key(2), bad))
    assert len(collect.dead_sent) == 2 and part.peers_upto[2] == now


@pytest.mark.parametrize("heard_before, held", [(True, 20 * 2 / 2), (False, 0.0)])
def test_a_restored_partition_cannot_tell_an_empty_tally_from_a_missed_one(heard_before, held):
    """Partition 1 sent no tally of T (nothing of the source there). Heard below T before, that
    means none; first heard already past T (this partition restored meanwhile), its tally may
    have been sent before this one listened: no probe evidence from that window."""
    part, _ = partition(n=2)
    dead = {(f"10.0.1.{i}", 1, 0): True for i in range(2)}
    closed(part, T, src={S: [0, 0, 20.0, 0, 2]}, tally={S: [2, 2, dead]}, groups={S: 20})
    part.peer(0, T, {T: {S: [2, 2, dead]}})
    if heard_before:
        part.peer(1, T - W, {})
    part.peer(1, T, {})
    [w] = part.settle()
    assert w.evidence.held.get(S, 20.0) == held


def test_tallies_of_a_window_nobody_here_holds_do_not_pile_up_behind_a_stuck_partition():
    part, clock = partition(n=3, wait=2.0)
    for q in range(3):
        part.peer(q, T - W, {})
    part.peer(1, T, {T: {S: [1, 1, {("10.0.1.1", 1, 0): True}]}})
    assert part.settle() == [] and T in part.tallies
    clock.t += 2.0
    for q in range(3):
        part.peer(q, T if q == 1 else T - W, {})  # all alive, partitions 0 and 2 stuck
    part.settle()
    assert part.tallies == {} and part.settled_upto == T


def test_a_partition_tells_the_others_only_what_someone_waits_for(collect):
    """Tally marks go out with tallies, when `through` passes a window some partition sent a
    tally of, and every TALLY_REPEAT_S: not on every window (a flood's windows, which nobody
    waits for, doubled the marks on the flows topic)."""
    n, now = collect.n, time.time_ns() // W * W - 10 * W
    part = collect.partition(1)

    def tell(upto):
        collect.sent.clear()
        for p in range(n):
            part.mark(p, upto)
        asyncio.run(collect.close())
        return {q for k, q, _ in collect.sent if is_tally(k)}
    assert tell(now) == set(range(n)) - {1}       # the first mark
    assert tell(now + W) == set()                 # nobody waits for a window
    part.peer(2, now + 2 * W, {now + 2 * W: PROBES})  # partition 2 waits for now + 2W
    assert tell(now + W + W // 2) == set()        # not past it yet
    assert tell(now + 2 * W) == set(range(n)) - {1}
    assert tell(now + 3 * W) == set()
    collect.announced[1] = (collect.announced[1][0], 0.0)  # TALLY_REPEAT_S passed
    assert tell(now + 3 * W) == set(range(n)) - {1}
