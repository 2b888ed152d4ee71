"""Rule suggestions: the narrowest rule that still stops the traffic, with a reason."""
from services.detection.detect import DetectParams, suggest
from services.detection.features import WindowState
from services.records.packet import Packet
from services.records.rules import Action, Scope

END = 2_000_000_000


def window(pkts):
    w = WindowState(10**9)
    for p in pkts:
        w.add(p)
    keys, _ = w.rows()
    return w, keys


def test_spoofed_flood_becomes_a_destination_limit():
    w, keys = window([Packet(10**9 + i, f"198.51.{i // 200}.{i % 200}", "10.10.10.10", 1000 + i, 80,
                             6, 0x02, 60) for i in range(100)])
    out = suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)
    assert len(out) == 1
    r = out[0].rule
    assert (r.scope, r.action, r.dst, r.dport, r.proto, r.tcp_flags) == (
        Scope.DST_LIMIT, Action.LIMIT, "10.10.10.10", 80, 6, 0x02)
    assert r.rate_pps == DetectParams().limit_pps and r.created_ns == END and r.expires_ns > END
    assert "100 sources" in out[0].reason and out[0].flows == 100


def test_a_syn_flood_limit_is_shaped_by_its_syn_only_flows():
    """The victim's real clients (completed handshakes) score high in a flood window through
    the victim's aggregate. The limit stays on SYN-only packets to the flood's port, even when
    what a first limit lets through (50 pps) is outnumbered by a client's fetches to another
    port (the soak's second limit on all TCP to the victim); an ACK flood is limited whole."""
    def limit_of(pkts):
        w, keys = window(pkts)
        (lim,) = [s.rule for s in suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)
                  if s.rule.scope is Scope.DST_LIMIT]
        return lim.dport, lim.tcp_flags

    flood = [Packet(10**9 + i, f"198.51.{i // 200}.{i % 200}", "10.10.10.10", 1000 + i, 80,
                    6, 0x02, 60) for i in range(40)]
    fetches = [Packet(10**9 + 500 + 4 * i + j, "10.0.0.7", "10.10.10.10", 40000 + i, 8080, 6,
                      fl, 66) for i in range(30) for j, fl in enumerate((0x02, 0x10, 0x18, 0x11))]
    assert limit_of(flood + fetches) == (80, 0x02)
    acks = [Packet(10**9 + 900 + i, f"203.0.{i // 200}.{i % 200}", "10.10.10.10", 2000 + i, 80,
                   6, 0x10, 60) for i in range(40)]
    assert limit_of(acks) == (80, 0)


def test_scanner_becomes_a_source_block():
    w, keys = window([Packet(10**9 + i, "10.0.0.66", "10.0.0.1", 4444, p, 6, 0x02, 58)
                      for i, p in enumerate(range(20, 60))])
    out = suggest(w, keys, [0.9] * len(keys), 0.5, window_end_ns=END)
    assert [(s.rule.scope, s.rule.src) for s in out] == [(Scope.SRC_PREFIX, "10.0.0.66/32")]
    assert "40 anomalous flows" in out[0].reason


def test_a_host_with_few_odd_flows_loses_only_those_flows():
    pk = [Packet(10**9 + i, "10.0.0.5", "10.0.0.1", 5000 + i, 443, 6, 0x18, 1000) for i in range(10)]
    w, keys = window(pk)
    scores = [0.9, 0.9, 0.9] + [0.0] * 7  # 3 of 10 flows: below src_min_share
    out = suggest(w, keys, scores, 0.5, window_end_ns=END)
    assert sorted(s.rule.scope for s in out) == [Scope.FLOW] * 3
    assert all(s.rule.action is Action.DROP for s in out)


def test_nothing_above_threshold_means_no_rules_and_flow_only_is_the_seed():
    pk = [Packet(10**9 + i, "10.0.0.66", "10.0.0.1", 4444, 20 + i, 6, 0x02, 58) for i in range(10)]
    w, keys = window(pk)
    assert suggest(w, keys, [0.1] * 10, 0.5, window_end_ns=END) == []
    seed = suggest(w, keys, [0.9] * 10, 0.5, window_end_ns=END, params=DetectParams(flow_only=True))
    assert len(seed) == 10 and {s.rule.scope for s in seed} == {Scope.FLOW}


def test_rule_count_is_capped_by_score():
    pk = [Packet(10**9 + i, f"10.1.{i // 200}.{i % 200}", f"10.2.0.{i % 200}", 1, 2, 17, 0, 60)
          for i in range(50)]
    w, keys = window(pk)
    out = suggest(w, keys, [i / 50 + 0.5 for i in range(50)], 0.5, window_end_ns=END,
                  params=DetectParams(max_rules=5))
    assert len(out) == 5 and out[0].score == max(s.score for s in out)


def test_a_victims_other_clients_are_not_dropped_with_the_scanner():
    pk = [Packet(10**9 + i, "10.0.0.66", "10.0.0.1", 4444, 20 + i, 6, 0x02, 58) for i in range(30)]
    pk.append(Packet(10**9 + 99, "10.0.0.7", "10.0.0.1", 51000, 443, 6, 0x18, 400))
    w, keys = window(pk)
    out = suggest(w, keys, [0.9] * len(keys), 0.5, window_end_ns=END)  # the dst aggregate taints all
    assert [(s.rule.scope, s.rule.src) for s in out] == [(Scope.SRC_PREFIX, "10.0.0.66/32")]


def test_own_evidence_gates_source_and_flow_rules_not_destination_limits():
    """A flow anomalous only through its destination's shared aggregate (own score low) is
    neither blocked as a source nor as a flow; the flooder, anomalous on its own, is."""
    flood = [Packet(10**9 + i, "10.0.0.66", "10.0.0.2", 2000 + i, 80, 6, 0x02, 54) for i in range(50)]
    web = [Packet(10**9 + i, "10.0.0.11", "10.0.0.2", 40000 + i, 80, 6, 0x18, 150) for i in range(10)]
    w, keys = window(flood + web)
    scores = [0.9] * len(keys)                      # all flagged: they share the victim
    own = [0.9 if k[0] == "10.0.0.66" else 0.1 for k in keys]
    out = suggest(w, keys, scores, 0.5, window_end_ns=END, own_scores=own)
    assert [(s.rule.scope, s.rule.src) for s in out] == [(Scope.SRC_PREFIX, "10.0.0.66/32")]
    old = suggest(w, keys, scores, 0.5, window_end_ns=END)
    assert (Scope.SRC_PREFIX, "10.0.0.11/32") in {(s.rule.scope, s.rule.src) for s in old}
    lone = [Packet(10**9, "10.0.0.12", "10.0.0.3", 1, 53, 17, 0, 80)]
    w2, k2 = window(lone)
    assert suggest(w2, k2, [0.9], 0.5, window_end_ns=END, own_scores=[0.1]) == []
