#!/usr/bin/env python3
"""Both scorer stages in process, no Kafka or faust: `bench/scorer_bench.py`'s traffic and
records decoded, folded and closed by stage 1 (`windows.SourcePartition`), its flow chunks
encoded and decoded as on the flows topic, kept and closed by stage 2 (`dst_windows.DstPartition`),
scored in one model call per window tick and turned into verdicts; the garbage collector set
up as a worker's (`service.tune_collector`, when the tree has it). Prints the seconds of each
phase (CPU time of this process: `time.process_time`, so other work on the machine moves it
less than wall time) and events/s of the whole; for profiling (py-spy) the per-flow work that
`bench/fold_bench.py` (stage 1 only) leaves out, and for comparing trees without a broker.

examples:
  .venv/bin/python bench/pipeline_bench.py                      # 400k events, 10% flood
  .venv/bin/python bench/pipeline_bench.py --flood 0.5 --repeat 3
  py-spy record -f raw -o pipe.txt -- .venv/bin/python bench/pipeline_bench.py --repeat 2
  cd ../old-tree && ../wt/.venv/bin/python ../wt/bench/pipeline_bench.py   # an old tree
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

# the tree to measure: the current directory's when it is one (an old tree in a worktree),
# else this file's
sys.path.insert(0, str(Path.cwd() if (Path.cwd() / "services/scorer").is_dir()
                       else Path(__file__).resolve().parents[1]))

from bench.scorer_bench import DEFAULT_MODEL, encode_records, traffic, traffic_arguments  # noqa: E402
from services.detection.model import load_model  # noqa: E402
from services.scorer.chunks import FlowChunk  # noqa: E402
from services.scorer.dst_windows import DstPartition  # noqa: E402
from services.scorer.scoring import VerdictPolicy, score_windows, verdicts_for  # noqa: E402
from services.scorer.windows import SourcePartition  # noqa: E402
from services.wire.codec import decode_packet_columns  # noqa: E402

try:
    from tests.support.scorer_stages import exchange_tallies, hear_each_other
except ImportError:  # a tree from before stage 2 settled its windows (its close scores them)
    exchange_tallies = hear_each_other = None
try:
    from services.scorer.service import tune_collector
    from services.scorer.settings import ScorerSettings
except ImportError:  # a tree from before the worker set up the garbage collector
    tune_collector = None

W = 10**9


def run(records: list[tuple[int, bytes]], n: int, detector) -> tuple[dict[str, float], int, int,
                                                                      str]:
    """({phase: seconds}, flows scored, verdicts, digest) of one pass over `records` on fresh
    state of `n` source and `n` destination partitions. The digest (sha256) covers every
    window's flow keys, model rows (float64 bytes) and verdicts' ids: two trees that agree
    on it computed the same thing."""
    t = {k: 0.0 for k in ("decode+fold", "close1", "encode", "decode2", "close2", "score",
                          "verdicts")}
    src = {p: SourcePartition(p, W, 0, lambda: 0.0) for p in range(n)}
    dst = {q: DstPartition(q, W, n, 1e9, lambda: 0.0) for q in range(n)}
    if hear_each_other is not None:
        hear_each_other(dst)
    t0 = time.process_time()
    for off, (p, data) in enumerate(records):
        src[p].add(off, decode_packet_columns(data))
    t["decode+fold"] = time.process_time() - t0
    starts = sorted({ws for part in src.values() for ws in part.windows})
    scored = verdicts = 0
    policy = VerdictPolicy()
    digest = hashlib.sha256()
    for ws in starts:  # one tick per window: every partition closes it, stage 2 scores it
        raws = []
        for part in src.values():
            if ws in part.windows:
                t0 = time.process_time()
                chunks, _ = part.close(ws, n)
                t1 = time.process_time()
                raws += [c.encode() for c in chunks]
                t["close1"] += t1 - t0
                t["encode"] += time.process_time() - t1
        t0 = time.process_time()
        for raw in raws:
            c = FlowChunk.decode(raw)
            dst[c.dst_partition].add(c.key(), c)
        t1 = time.process_time()
        for part in dst.values():  # every source partition is past ws (their progress marks)
            for p in range(n):
                part.mark(p, ws)
        closed = {q: [part.close(ws)] for q, part in dst.items() if ws in part.windows}
        if exchange_tallies is None:
            closed = [w for ws_closed in closed.values() for w in ws_closed if w.keys]
        else:  # the tallies as the flows topic carries them (collect.CollectStage)
            exchange_tallies(dst, closed)
            closed = [w for part in dst.values() for w in part.settle() if w.keys]
        t2 = time.process_time()
        scores = score_windows(detector, closed) if closed else []
        t3 = time.process_time()
        outs = [verdicts_for(w, s, threshold=detector.threshold, model_id=detector.model_id,
                             policy=policy, now_ns=0) for w, s in zip(closed, scores)]
        t["decode2"] += t1 - t0
        t["close2"] += t2 - t1
        t["score"] += t3 - t2
        t["verdicts"] += time.process_time() - t3
        for w, s, out in zip(closed, scores, outs):  # not timed
            verdicts += len(out)
            scored += len(s)
            digest.update(repr(w.keys).encode())
            digest.update(np.asarray(w.rows, dtype=np.float64).tobytes())
            digest.update(repr(sorted(v.rule.key() for v in out)).encode())
    return t, scored, verdicts, digest.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    traffic_arguments(ap)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    a = ap.parse_args()
    detector = load_model(a.model)
    records = encode_records(traffic(a.events, a.rate, a.flood, a.sources), a.batch, a.partitions)
    if tune_collector is not None:  # as a worker does once started (services/scorer/__main__.py)
        tune_collector(ScorerSettings().gc_young)
    for _ in range(a.repeat):
        t, scored, verdicts, digest = run(records, a.partitions, detector)
        total = sum(t.values())
        phases = " ".join(f"{k} {v:.3f}" for k, v in t.items())
        print(f"{a.events / total:,.0f} events/s ({total:.3f} CPU s; {scored} flows scored, "
              f"{verdicts} verdicts, digest {digest}) {phases}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
