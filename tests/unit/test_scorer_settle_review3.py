"""A third review of stage 2's settling, after the model rows got the merged probe_other
(dst_windows._merged_inputs): a window settled "complete" now READS the merged tally (before,
it could only hold probe_other lower), so a window must not count as complete on part of a
peer's tally. Each test says what it read before the fix; the last ones hold the scorer over
2, 3 and 8 partitions to the replay (never higher for a candidate source, no rule the replay
does not have)."""
from __future__ import annotations

import numpy as np
import pytest

from services.detection.evidence import SRC_MEASURES, WindowEvidence
from services.detection.features import FEATURE_NAMES
from services.offline.replay import Pipeline
from services.records.packet import PROTO_UDP
from services.scorer.dst_windows import ClosedWindow, DstPartition
from services.scorer.tables import decode_tallies, encode_tallies
from tests.support import synthetic_traffic as G
from tests.support.scorer_stages import (Clock, run_stages, run_stages_restoring,
                                         scorer_rules)

W = 10**9
T = 1_800_000_000 * W
T0 = T + 300_000_000
S = "10.0.0.50"                 # an SNMP station polling 20 devices, 2 of them down
X = "203.0.113.9"               # another candidate source of partition 2's window
AT = SRC_MEASURES.index("probe_other")
COL = FEATURE_NAMES.index("src_h_probe_other")


def _targets(lo: int, hi: int, dead: bool) -> dict:
    return {(f"10.0.1.{i}", PROTO_UDP, 161): dead for i in range(lo, hi)}


def _closed(part: DstPartition, ws: int, src: dict, tally: dict, groups: dict) -> ClosedWindow:
    """A window closed on `part` with this evidence and one model row per source (what
    DstPartition.close leaves pending)."""
    keys = [(s, "10.0.1.250", 50161, 161, PROTO_UDP) for s in src]
    matrix = np.zeros((len(keys), len(FEATURE_NAMES)))
    matrix[:, COL] = [v[AT] for v in src.values()]
    ev = WindowEvidence({}, src, {}, tally=tally)
    part.closed_upto = max(part.closed_upto, ws)
    return part._pending(ClosedWindow(ws, ws + W, part.partition, keys, {}, {}, matrix, [], ev,
                                      part.memory, groups=groups))


def _split_peer(clock: Clock) -> tuple[DstPartition, list[bytes]]:
    """Partition 0 of 3 with window T closed: 9 of S's answered probes here (probe_other 0 at
    close), partition 1's tally of S's 2 dead targets in; and partition 2's two tally marks of
    T, not read yet (X's entry, then S's 9 other answered probes; the first says `through`
    below T). The replay reads S at 20 * 2/20 = 2.0."""
    part = DstPartition(0, W, 3, 12.0, clock)
    for q in range(3):
        part.peer(q, -1, {})
    w = _closed(part, T, {S: [0, 0, 0.0, 0, 9]}, {S: [9, 0, _targets(2, 11, False)]}, {S: 20})
    part.peer(0, T, {T: w.evidence.tally})
    part.peer(1, T, {T: {S: [2, 2, _targets(0, 2, True)]}})
    marks = encode_tallies(2, T, {T: {X: [1, 1, {("10.9.0.1", PROTO_UDP, 161): True}],
                                      S: [9, 0, _targets(11, 20, False)]}}, max_bytes=1)
    first = decode_tallies(marks[0])
    assert len(marks) == 2 and first[1] < T and S not in first[2][T]
    return part, marks


@pytest.mark.parametrize("peer_2", ["died", "stuck"])
def test_a_window_is_not_complete_on_the_first_of_a_peers_split_marks(peer_2):
    """_split_peer, and only partition 2's first mark comes: partition 2 died between them, or
    its closing is stuck and the window waits SCORER_CLOSE_WAIT_S. Counted as told because a
    part of its tally came, the window settled complete and _merged_inputs read S from
    partitions 0 and 1 alone: 20 * 2/11 = 3.64 in the evidence, the model row and the
    decision (the replay's 2.0; 0 at close, and 0 before _merged_inputs, which only held
    lower). Now partition 2 has not told: S is held to 0 and the row keeps its value."""
    clock = Clock()
    part, marks = _split_peer(clock)
    part.peer(*decode_tallies(marks[0]))
    assert part.settle() == []                    # partition 2 is alive and not past T
    clock.t += 13.0
    part.peer(0, T, {})
    part.peer(1, T, {})
    if peer_2 == "stuck":
        part.peer(2, T - W, {})
    [got] = part.settle()
    assert got.evidence.src_for_decision(S)[AT] == 0.0    # before: 3.6363...
    assert got.evidence.src[S][AT] == 0.0                 # before: 3.6363...
    assert got.matrix[0, COL] == 0.0                      # before: 3.6363...


def test_a_window_is_complete_once_the_peers_last_mark_came():
    """_split_peer with both of partition 2's marks read: complete, the replay's 2.0 in the
    evidence, the row and the decision."""
    part, marks = _split_peer(Clock())
    for m in marks:
        part.peer(*decode_tallies(m))
    [got] = part.settle()
    assert got.evidence.src_for_decision(S)[AT] == got.evidence.src[S][AT] == 2.0
    assert got.matrix[0, COL] == 2.0


def test_a_source_without_probes_here_reads_the_merged_value_when_its_window_settles():
    """Found (not a fault: docs/scorer.md said otherwise). S has flows here but none of its
    probes; the window waits for the tallies because of another candidate (X). Settled
    complete, S reads the merged share (20 * 2/20 = 2.0, the replay's), not 0: only a window
    without any candidate probes here (scored at once) keeps it at 0."""
    clock = Clock()
    part = DstPartition(0, W, 2, 12.0, clock)
    for q in range(2):
        part.peer(q, -1, {})
    xt = {X: [3, 3, {(f"10.9.0.{i}", PROTO_UDP, 161): True for i in range(3)}]}
    _closed(part, T, {S: [0, 0, 0.0, 0, 40], X: [0, 0, 5.0, 0, 3]}, xt, {S: 20, X: 5})
    part.peer(0, T, {T: xt})
    part.peer(1, T, {T: {S: [20, 2, {**_targets(0, 2, True), **_targets(2, 20, False)}]}})
    [got] = part.settle()
    assert got.evidence.src[S][AT] == got.evidence.src_for_decision(S)[AT] == 2.0
    assert got.matrix[0, COL] == 2.0 and got.evidence.src[X][AT] == 5.0


# --- held: the scorer over several partitions against the replay ------------------------------


BENIGN = {
    "monitors and a DNS prober": lambda: (G.snmp_poller(T0, 25, down=3)
                                          + G.ping_monitor(T0, 25, down=6) + G.dns_prober(T0, 25)),
    "retries to one dead device (the horizon hold)": lambda: G.snmp_poller(T0, 25, down=1),
    "ping monitor, 9 of 30 down": lambda: G.ping_monitor(T0, 25, down=9),
    "p2p node, a call, ICE checks": lambda: G.p2p_node(T0, 12) + G.media_call(T0, 12)
    + G.ice_checks(T0, 12),
    "health checks, a poller, a browser": lambda: G.health_checks(T0, 25) + G.web_poller(T0, 25)
    + G.browser(T0, 12),
}


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_candidates_never_read_above_the_replay_over_several_partitions(detector, name):
    """Held (measured in this review): over 2, 3 and 8 partitions, and with the last partition
    restored with 3 windows waiting, a candidate source (probe group >= 2) never reads a
    probe_other above the replay's for decisions; settled complete with a tally here it reads
    the replay's in the evidence, the decision and every model row; no rule. (Sources of group
    1 may read more than the replay, up to 1.0: the p2p node 1.0 against 0.16; never a group,
    far below the bound of 10.)"""
    pk = sorted(BENIGN[name](), key=lambda p: p.ts_ns)
    rep = list(Pipeline(detector).run(pk))
    assert not any(r.suggestions for r in rep)
    replayed = {r.start_ns: (r.evidence, dict(zip(r.keys, r.rows))) for r in rep}
    for n in (2, 3, 8):
        for restoring in (False, True):
            windows = run_stages_restoring(pk, n, n - 1, 3) if restoring else run_stages(pk, n=n)
            for w in windows:
                ev, rows = replayed[w.window_ns]
                for s in w.groups:
                    got, want = w.evidence.src_for_decision(s)[AT], ev.src_for_decision(s)[AT]
                    assert got <= want, (name, n, restoring, w.window_ns, s)
                    if w.evidence.tally and not restoring:
                        assert got == want and w.evidence.src[s][AT] == ev.src[s][AT]
                if w.evidence.tally and not restoring:
                    for k, row in zip(w.keys, w.matrix):
                        if k[0] in w.groups:
                            assert row[COL] == rows[k][COL]
            assert scorer_rules([w for w in windows if w.keys], detector) == set()


def test_a_sweep_among_monitors_gets_only_the_replays_rules_over_8_partitions(detector):
    """Held: a UDP sweep (group up to 50) between an SNMP station and a ping monitor with
    dead targets: over 8 partitions the scorer's rules are among the replay's (the sweep's
    source), the monitors get none."""
    pk = sorted(G.host_sweep(T0, 10, 10, port=161) + G.snmp_poller(T0, 25, down=3)
                + G.ping_monitor(T0, 25, down=6), key=lambda p: p.ts_ns)
    replayed = {(r.start_ns, sg.rule.key()) for r in Pipeline(detector).run(pk)
                for sg in r.suggestions}
    got = {(ws, key) for ws, key, _, _ in
           scorer_rules([w for w in run_stages(pk, n=8) if w.keys], detector)}
    assert got and {k for _, k in got} <= {k for _, k in replayed}
    assert not any(S in k or "10.0.0.51" in k for _, k in got)


def test_from_a_partial_view_the_model_reads_no_probe_evidence_either():
    """A restored partition's windows settle from a partial view: decisions hold probe_other
    to 0, and the model rows read 0 too (before, they kept the partition's own share: a ping
    monitor with 9 of 30 down read 11.67 over 2 partitions, where the replay reads 9.0)."""
    pk = G.ping_monitor(T0, 25, down=9)
    held = 0
    for w in run_stages_restoring(pk, 2, 1, 3):
        zero = {s for s, v in w.evidence.held.items() if v == 0.0}
        for k, row in zip(w.keys, w.matrix):
            if k[0] in zero:
                assert row[COL] == 0.0, (w.window_ns, k, row[COL])
                held += 1
    assert held
