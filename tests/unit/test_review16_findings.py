"""Review 16 (helper-57) of the accepted share (3c58590, reverted): a TCP target group of h
half-open probes counted h x min(1, 2h/(h+a)), a = the group's targets the source completed a
handshake with in the horizon, so that a load balancer re-checking 40 backends with 12 dead was
not blocked. These attacks went through with it, and are blocked on a34b7eb and after the revert;
a fix for the load balancer (models/README.md, "Limits"; test_detect_synthetic KNOWN_BLOCKED)
must keep them blocked:

1. A connect sweep of a well-populated /24 (4 of 5 addresses accept) or a connect scan of a host
   accepting 4 of 5 ports, 10 probes/s: h dead of N probed in the horizon counted
   h x 2h / N = 2 f^2 N (f the dead share), 8 < 10 at f = 0.2, N = 100: never blocked with it;
   blocked on a34b7eb (sweep 6.7 s, 77.61%; sustained 3 x 84.78%; port scan 7.7 s, 74.26%). A SYN
   sweep (no handshake of its own probes) at 1.5 probes/s padded with connect()s to 100 live
   hosts of the same /24 and port (10 a second): 0% with it (7.7 s, 73.33% on a34b7eb).
2. `SourceWatch.accepted` kept every completed handshake of every source with an entry in the
   horizon, with no cap, and `measures` re-grouped all of them each window: one IPv6 source with
   2 half-open probes and 10,000 completed handshakes a window cost 1.38 s of `measures` per 1 s
   window, and 173 MB traced at 100,000 IPv4 a window (18.6 MB on a34b7eb). The two tests below
   hold any such memory to a bound."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from services.detection.watch import SourceWatch
from services.offline.replay import replay
from services.records.packet import PROTO_TCP
from tests.support import synthetic_traffic as G
from tests.support.replay_checks import first_block_s

pytestmark = pytest.mark.unit

T0 = 1_800_000_000 * 10**9 + 370_000_000
S = 10**9
SCANNER = "203.0.113.88"


def _answer(out, t, src, dst, sp, port, live):
    if live:
        out += [G._tcp(t + S // 1000, dst, src, port, sp, G.SYN | G.ACK, 58),
                G._tcp(t + 2 * S // 1000, src, dst, sp, port, G.ACK, 54),
                G._tcp(t + 3 * S // 1000, src, dst, sp, port, G.RST | G.ACK, 54)]


def dense_sweep(pps: int = 10, seconds: int = 30, passes: int = 1) -> list:
    """connect() sweep of 10.0.4.0/24 port 22, every address but each 5th accepts."""
    out, sp = [], 45000
    for r in range(passes):
        for i in range(seconds * pps):
            t, j = T0 + r * seconds * S + i * S // pps, 1 + i % 254
            dst, sp = f"10.0.4.{j}", sp + 1
            out.append(G._tcp(t, SCANNER, dst, sp, 22, G.SYN, 58))
            _answer(out, t, SCANNER, dst, sp, 22, j % 5 != 0)
    return sorted(out, key=lambda p: p.ts_ns)


def dense_port_scan(pps: int = 10, seconds: int = 30) -> list:
    """connect() scan of ports 1.. of one host that accepts every port but each 5th (RST)."""
    out, sp, host = [], 40000, "10.0.5.9"
    for i in range(seconds * pps):
        t, port, sp = T0 + i * S // pps, 1 + i, sp + 1
        out.append(G._tcp(t, SCANNER, host, sp, port, G.SYN, 58))
        if port % 5:
            _answer(out, t, SCANNER, host, sp, port, True)
        else:
            out.append(G._tcp(t + S // 1000, host, SCANNER, port, sp, G.RST | G.ACK, 54))
    return sorted(out, key=lambda p: p.ts_ns)


def _blocked(pk, res):
    return any(sg.rule.src == f"{SCANNER}/32" for w in res.windows for sg in w.suggestions)


def test_a_connect_sweep_of_a_dense_net_is_blocked(detector):
    pk = dense_sweep()
    res = replay(pk, detector)
    assert _blocked(pk, res)
    assert first_block_s(pk, res.dropped) <= 7.0 and res.dropped.mean() >= 0.75


def test_a_sustained_connect_sweep_of_a_dense_net_is_blocked(detector):
    pk = dense_sweep(passes=3)
    res = replay(pk, detector)
    assert res.dropped.mean() >= 0.80


def test_a_connect_scan_of_a_host_accepting_most_ports_is_blocked(detector):
    pk = dense_port_scan()
    res = replay(pk, detector)
    assert _blocked(pk, res)
    assert first_block_s(pk, res.dropped) <= 8.0 and res.dropped.mean() >= 0.70


def _flood(watch: SourceWatch, src_of, dst_of, per_window: int, windows: int = 12) -> float:
    """Each window: the source sends 2 half-open probes (so it has an entry) and completes
    `per_window` handshakes with distinct targets; returns the last `measures` call's time."""
    took = 0.0
    for i in range(windows):
        ws, entries, shakes = T0 + i * S, {}, {}
        src = src_of()
        for k in (1, 2):
            SourceWatch.count(entries, (src, "10.9.9.9", 1000 + k, k, PROTO_TCP), 1, G.SYN, 1,
                              True, shakes)
        for k in range(per_window):
            SourceWatch.count(entries, (src, dst_of(i * per_window + k), 30000, 443, PROTO_TCP),
                              5, G.SYN | G.ACK, 1, True, shakes)
        watch.add_entries(ws, entries, {}, shakes)
        t = time.perf_counter()
        watch.measures(ws, [src])
        took = time.perf_counter() - t
    return took


def test_measures_cost_does_not_grow_with_completed_handshakes_ipv6():
    w = SourceWatch(S)
    took = _flood(w, lambda: "2001:db8:1::1",
                  lambda n: f"2001:db8:ffff:{n % 65536:x}:{n // 65536:x}::5", 10000)
    assert took < 0.5  # 100,000 accepted IPv6 targets in the horizon: 1.38 s on 3c58590


def test_watch_memory_is_bounded_under_a_handshake_flood():
    w = SourceWatch(S)
    tracemalloc.start()
    try:
        _flood(w, lambda: "198.51.100.1",
               lambda n: f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", 30000)
        cur, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = sum(len(t) for a in getattr(w, "accepted", {}).values() for t in a.values())
    assert kept <= 10 * 256 and cur < 20e6


def padded_syn_sweep(pps: float, pad: int, seconds: int = 60) -> list:
    """A SYN sweep (nmap -sS: no ACK) of 100 silent addresses 10.0.4.1-100 port 22 at `pps`,
    padded with connect()s to `pad` live hosts 10.0.4.101.. of the same /24 and port, each once
    every 10 s (pad / 10 a second): the padding fills the group's accepted count."""
    out, sp = [], 45000
    for i in range(int(seconds * pps)):
        t, sp = T0 + int(i * S / pps), sp + 1
        out.append(G._tcp(t, SCANNER, f"10.0.4.{1 + i % 100}", sp, 22, G.SYN, 58))
    rate = pad / 10
    for i in range(int(seconds * rate)):
        t, sp, dst = T0 + int(i * S / rate) + 7, sp + 1, f"10.0.4.{101 + i % pad}"
        out.append(G._tcp(t, SCANNER, dst, sp, 22, G.SYN, 58))
        _answer(out, t, SCANNER, dst, sp, 22, True)
    return sorted(out, key=lambda p: p.ts_ns)


def test_a_syn_sweep_padded_with_handshakes_to_live_hosts_is_blocked(detector):
    pk = padded_syn_sweep(1.5, 100)
    res = replay(pk, detector)
    probes = [p.src == SCANNER and p.tcp_flags == G.SYN and int(p.dst.rsplit(".", 1)[1]) <= 100
              for p in pk]
    assert _blocked(pk, res)
    assert first_block_s(pk, res.dropped) <= 8.0 and res.dropped[probes].mean() >= 0.70
