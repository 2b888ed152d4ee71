"""Crafted packet streams and a small test model for the scorer tests and benchmark."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Packet

VICTIM = "10.99.0.10"
# A small feature subset keeps the crafted-benign threshold tight (the shipped model uses all).
TEST_FEATURES = ("dst_flows", "dst_packets", "dst_peers", "dst_syn_noack_share",
                 "dst_pkts_per_flow")


def window_ahead(windows: int = 2, width_ns: int = 10**9) -> int:
    """Start of the window `windows` ahead of now: where scorer tests start their traffic.
    A capture stamps a packet moments before publishing it; a test that stamped from the
    current window and took over a second to produce it (a loaded CI machine) sent records
    that quiet partitions had already vouched for, and their flows came late."""
    now = time.time_ns()
    return now - now % width_ns + windows * width_ns


def benign(t0_ns: int, seconds: float, *, clients: int = 20, seed: int = 1, node: str = "node-a",
           rate_scale: float = 1.0) -> list[Packet]:
    """Clients making complete TCP connections (SYN, ACKs, data, FIN) and DNS lookups."""
    rng = random.Random(seed)
    out = []
    for c in range(clients):
        src = f"10.1.{c // 250}.{c % 250 + 1}"
        t = t0_ns + rng.randrange(0, int(2e8))
        end = t0_ns + int(seconds * 1e9)
        while t < end:
            dst = f"10.2.0.{rng.randrange(1, 6)}"
            sport = rng.randrange(32768, 60999)
            if rng.random() < 0.7:
                dport = rng.choice((80, 443))
                flags = [TCP_SYN, TCP_ACK] + [TCP_ACK | TCP_PSH] * rng.randrange(2, 8) + [TCP_FIN | TCP_ACK]
                for i, fl in enumerate(flags):
                    out.append(Packet(t + i * 2_000_000, src, dst, sport, dport, PROTO_TCP, fl,
                                      rng.choice((66, 66, 400, 1514)), 2, 1, node))
            else:
                out.append(Packet(t, src, "10.2.0.53", sport, 53, PROTO_UDP, 0, rng.randrange(70, 120),
                                  2, 1, node))
            t += int(rng.expovariate(4.0 * rate_scale) * 1e9) + 1_000_000
    return out


def syn_flood(t0_ns: int, seconds: float, *, pps: int = 3000, seed: int = 2, node: str = "node-a",
              dst: str = VICTIM) -> list[Packet]:
    """Spoofed SYN flood: every packet a new random source and source port."""
    rng = random.Random(seed)
    n = int(seconds * pps)
    return [Packet(t0_ns + int(i * 1e9 / pps), f"172.{16 + rng.randrange(16)}.{rng.randrange(256)}."
                   f"{rng.randrange(1, 255)}", dst, rng.randrange(1024, 65535), 80, PROTO_TCP,
                   TCP_SYN, 60, 2, 1, node) for i in range(n)]


def udp_sweep(t0_ns: int, seconds: float, *, per_second: int = 10, src: str = "10.66.0.1",
              node: str = "node-a") -> list[Packet]:
    """A slow UDP host sweep: `per_second` one-packet probes to new hosts (hs-udpScan's pace)."""
    n = int(seconds * per_second)
    return [Packet(t0_ns + int(i * 1e9 / per_second), src, f"10.70.{i // 250}.{i % 250 + 1}",
                   60806, 40125, PROTO_UDP, 0, 42, 2, 1, node) for i in range(n)]


def with_seq(packets: list[Packet]) -> list[Packet]:
    from dataclasses import replace
    packets = sorted(packets, key=lambda p: p.ts_ns)
    return [replace(p, seq=i) for i, p in enumerate(packets)]


def make_model(directory: Path, *, seed: int = 0, threshold: float | None = None) -> Path:
    """Fit the detection engineer's estimator on crafted benign windows; threshold just above
    the highest benign score, so crafted benign traffic stays below it."""
    from services.detection.model import save_model
    from services.offline.training import make_estimator, window_rows
    from services.detection.features import FEATURE_NAMES

    cols = [FEATURE_NAMES.index(n) for n in TEST_FEATURES]
    X = np.vstack([window_rows(benign(10**18 + k * 10**10, 8, clients=20 + 10 * k, seed=k), 1.0)
                   for k in range(4)])[:, cols]
    est = make_estimator(n_estimators=50, max_samples=256, seed=seed)
    est.fit(X)
    if threshold is None:
        threshold = float((-est.decision_function(X)).max()) + 0.02
    path = Path(directory) / "test-if.joblib"
    save_model(est, path, threshold=threshold, feature_names=TEST_FEATURES, name="test-if")
    return path
