"""A benign client of a flooded victim is never blocked (README "The demo", docs/benchmarks.md
"## Soak"): the e2e test's / demo's / soak's traffic, crafted packet by packet, through the
scorer's own two-stage windows, the shipped model and the rule logic. The hping3 flooder gets a
source rule; the pinger (every 200 ms) and the HTTP client (a completed handshake every 100 ms)
get none, in any window."""
from __future__ import annotations

import random

from services.records.packet import Packet
from services.offline.replay import Pipeline
from services.records.rules import Scope
from services.scorer.scoring import VerdictPolicy, score_windows, verdicts_for
from tests.support.scorer_stages import T0, run_stages

VICTIM, ATTACKER, PINGER, WEB = "10.251.93.2", "10.251.93.66", "10.251.93.10", "10.251.93.11"
BOTH = "10.251.93.12"  # the soak's client: pings AND fetches a page, one address
BENIGN = (PINGER, WEB, BOTH)
S = 10**9


def ping(t0: int, seconds: float, src: str = PINGER) -> list[Packet]:
    out = []
    for i in range(int(seconds / 0.2)):
        t = t0 + int(i * 0.2 * S)
        out.append(Packet(t, src, VICTIM, 0, 0, 1, 0, 98))  # echo request (ident in sport: 0)
    return out


def http(t0: int, seconds: float, src: str = WEB) -> list[Packet]:
    """curl every 100 ms: SYN, ACK, GET, ACK of the reply, FIN, ACK (client -> victim)."""
    out, ms = [], 10**6
    for i in range(int(seconds / 0.1)):
        t, sp = t0 + int(i * 0.1 * S) + 3 * ms, 40000 + i
        for dt, flags, ln in ((0, 0x02, 74), (1, 0x10, 66), (1, 0x18, 150), (3, 0x10, 66),
                              (4, 0x11, 66), (5, 0x10, 66)):
            out.append(Packet(t + dt * ms // 10, src, VICTIM, sp, 80, 6, flags, ln))
    return out


def hping(t0: int, seconds: float, pps: int = 2000) -> list[Packet]:
    """hping3 -S -p 80 -i u500: one address, a new source port per packet, SYN only."""
    rnd = random.Random(7)
    return [Packet(t0 + i * S // pps, ATTACKER, VICTIM, rnd.randrange(1024, 65536), 80, 6, 0x02, 54)
            for i in range(int(seconds * pps))]


def traffic() -> list[Packet]:
    t0 = T0 + 3 * S // 10  # windows do not line up with the attack's start
    pk = (ping(t0, 9) + http(t0, 9) + ping(t0 + 50 * 10**6, 9, BOTH) + http(t0, 9, BOTH)
          + hping(t0 + 3 * S + 437 * 10**6, 5))
    pk.sort(key=lambda p: p.ts_ns)
    return [Packet(p.ts_ns, p.src, p.dst, p.sport, p.dport, p.proto, p.tcp_flags, p.length,
                   seq=i) for i, p in enumerate(pk)]


def _rules(verdicts):
    return {(v.rule.scope, v.rule.src or v.rule.dst) for v in verdicts}


def test_scorer_blocks_the_flooder_and_never_its_victims_clients(detector):
    closed = [w for w in run_stages(traffic()) if w.rows]
    assert len(closed) >= 8
    verdicts = []
    for w, scores in zip(closed, score_windows(detector, closed)):
        verdicts += verdicts_for(w, scores, threshold=detector.threshold,
                                 model_id=detector.model_id, policy=VerdictPolicy())
    assert (Scope.SRC_PREFIX, f"{ATTACKER}/32") in _rules(verdicts)
    blocked = [v for v in verdicts if v.rule.src.split("/")[0] in BENIGN]
    assert blocked == [], [(v.rule.key(), v.reason) for v in blocked]


def test_replay_pipeline_agrees(detector):
    rules = {(s.rule.scope, s.rule.src) for res in Pipeline(detector, window_s=1.0).run(traffic())
             for s in res.suggestions}
    assert (Scope.SRC_PREFIX, f"{ATTACKER}/32") in rules
    assert not {r for r in rules if r[1] and r[1].split("/")[0] in BENIGN}
