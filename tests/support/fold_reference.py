"""The scorer's stage 1 fold one event at a time: the reference the vectorised fold
(services/scorer/fold.py, used by windows.SourcePartition.add) must equal to the bit
(tests/unit/test_scorer_fold.py). It is the loop SourcePartition.add ran before issue 17; its
close() aggregates every source flow by flow with its sketches (agg_new + agg_add_flow), as
close() did before SourcePartition._source_features took the flows as columns (the hook's
arguments are those of the columnar one: the window's keys and FLOW_DTYPE rows)."""
from __future__ import annotations

from services.detection.evidence import GRACE_NS, SourceWatch
from services.detection.features import agg_features, agg_new, hash64, horizon_count
from services.records.packet import PROTO_TCP
from services.scorer.fold import COUNTER_MAX
from services.scorer.windows import SourcePartition
from services.wire.codec import PacketColumns
from tests.support.dst_reference import agg_add_flow


class ReferencePartition(SourcePartition):
    """A SourcePartition whose `add` folds events one by one in Python and whose `close`
    builds every source's aggregate with its sketches (agg_new + agg_add_flow)."""

    def _source_features(self, ws: int, flows: dict[tuple, list], keys: list[tuple],
                         rows, addresses: list[str], n_src: int) -> list[list]:
        """SourcePartition._source_features, flow by flow (of `rows` only the hashes are
        read, checked against hash64)."""
        hashes = dict(zip(keys, rows["hash"].tolist()))
        srcs: dict[str, dict] = {}
        nflows: dict[str, int] = {}
        recent: dict[str, list] = {}
        watched: dict[str, list] = {}
        settle_by = ws + self.width_ns - GRACE_NS
        for key, st in flows.items():
            assert hashes[key] == hash64(key)
            agg = srcs.get(key[0])
            if agg is None:
                agg = srcs[key[0]] = agg_new()
            nflows[key[0]] = nflows.get(key[0], 0) + 1
            pos = agg_add_flow(agg, key, st, key[1], hashes[key])
            horizon_count(recent, key[0], st[2], pos)
            SourceWatch.count(watched, key, st[2], st[4], st[5], st[1] <= settle_by)
        self.horizon.add_entries(ws, recent)
        self.watch.add_entries(ws, watched, flows)
        hz = self.horizon.features_of(ws, srcs)
        own = self.watch.measures(ws, srcs)
        assert list(srcs) == addresses[:n_src]  # the sources in order of first appearance
        return [agg_features(a, nflows[s] == 1) + hz[s] + own[s] for s, a in srcs.items()]

    def add(self, offset: int, c: PacketColumns) -> int:
        """SourcePartition.add, per event."""
        width, closed, windows = self.width_ns, self.closed_upto, self.windows
        cur, flows, newest, max_ts, accepted = -1, None, -1, self.max_ts, 0
        now = self.wall() if self.wall is not None else None
        limit = now + self.max_future_ns if now is not None else 2**64
        for ts, src, dst, sp, dp, pr, fl, ln, sr, node in zip(
                c.ts_ns, c.src, c.dst, c.sport, c.dport, c.proto, c.tcp_flags, c.length,
                c.sample_rate, c.node):
            if ts > limit:
                self.future[node] = self.future.get(node, 0) + 1
                continue
            ws = ts - ts % width
            if ws != cur:
                if ws <= closed:
                    self.late += 1
                    continue
                cur = ws
                flows = windows.get(ws)
                if flows is None:
                    flows = windows[ws] = {}
                if ws > newest:
                    newest = ws
            if ts > max_ts:
                max_ts = ts
            n = sr or 1
            syn = n if pr == PROTO_TCP and fl & 0x12 == 0x02 else 0  # SYN without ACK
            key = (src, dst, sp, dp, pr)
            st = flows.get(key)
            if st is None:
                flows[key] = [ts, ts, n, ln * n, fl, syn, node]
            else:
                if ts < st[0]:
                    st[0] = ts
                if ts > st[1]:
                    st[1] = ts
                st[2] += n
                st[3] += ln * n
                st[4] |= fl
                st[5] += syn
                if st[3] > COUNTER_MAX or st[2] > COUNTER_MAX:
                    st[2], st[3], st[5] = min(st[2], COUNTER_MAX), min(st[3], COUNTER_MAX), \
                        min(st[5], COUNTER_MAX)
            accepted += 1
        self.max_ts = max_ts
        self.last_arrival = self.clock()
        if newest >= 0:
            self.records[offset] = max(newest, self.records.get(offset, -1))
        if now is not None:
            self._note_skew(c, now)
        return accepted
