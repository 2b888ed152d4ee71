"""The scorer's stage 1 fold one event at a time: the reference the vectorised fold
(services/scorer/fold.py, used by windows.SourcePartition.add) must equal to the bit
(tests/unit/test_scorer_fold.py). It is the loop SourcePartition.add ran before issue 17; its
close() aggregates every source in full, as close() did before (SourcePartition.close skips
the sketches of one-flow sources, single_flow_agg)."""
from __future__ import annotations

from services.records.packet import PROTO_TCP
from services.scorer.fold import COUNTER_MAX
from services.scorer.windows import SourcePartition
from services.wire.codec import PacketColumns


class ReferencePartition(SourcePartition):
    """A SourcePartition whose `add` folds events one by one in Python and whose `close`
    builds every source's aggregate with its sketches (agg_new + agg_add_flow)."""

    single_flow_counters = False

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
