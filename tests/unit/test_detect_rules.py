"""The decision layer: a rule needs the model's score AND evidence of hostility for its scope;
the narrowest rule that still stops the traffic, with its reason; weak evidence first gets a
short TTL or the loose limit, escalated when it comes back."""
from services.detection.bounds import EvidenceBounds
from services.detection.detect import DetectParams, Escalation, suggest
from services.detection.features import WindowState
from services.records.packet import Packet
from services.records.rules import Action, Scope

START, END = 10**9, 2_000_000_000


def window(pkts):
    w = WindowState(START)
    for p in pkts:
        w.add(p)
    keys, _ = w.rows()
    return w, keys


def flood(n=100, t=START, dport=80, flags=0x02, net="198.51"):
    """Spoofed: every packet a new source; sent early in the window (settled by its end)."""
    return [Packet(t + i, f"{net}.{i // 200}.{i % 200}", "10.10.10.10", 1000 + i, dport, 6, flags, 60)
            for i in range(n)]


def test_spoofed_flood_becomes_a_tight_destination_limit():
    w, keys = window(flood(100))
    (sg,) = suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)
    r = sg.rule
    assert (r.scope, r.action, r.dst, r.dport, r.proto, r.tcp_flags) == (
        Scope.DST_LIMIT, Action.LIMIT, "10.10.10.10", 80, 6, 0x02)
    # strong evidence (100 sources >= 3 x the floor of 12): the tight limit, the long TTL
    assert r.rate_pps == DetectParams().limit_floor_pps and r.created_ns == END
    assert r.expires_ns - r.created_ns == DetectParams().ttl_s * 1e9
    assert "100 sources with half-open connections" in sg.reason and sg.flows == 100


def test_a_syn_flood_limit_is_shaped_by_its_half_open_flows_and_spares_real_clients():
    """The victim's real clients complete their handshakes: their SYNs set the tight rate
    (twice theirs), and neither their port nor their packets shape the limit."""
    fetches = [Packet(START + 500 + 4 * i + j, "10.0.0.7", "10.10.10.10", 40000 + i, 8080, 6, fl, 66)
               for i in range(30) for j, fl in enumerate((0x02, 0x10, 0x18, 0x11))]
    w, keys = window(flood(60) + fetches)
    (sg,) = [s for s in suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)
             if s.rule.scope is Scope.DST_LIMIT]
    assert (sg.rule.dport, sg.rule.tcp_flags) == (80, 0x02)
    acks = [Packet(START + i, f"203.0.{i // 200}.{i % 200}", "10.10.10.10", 2000 + i, 80, 6, 0x10, 60)
            for i in range(100)]
    w, keys = window(acks)
    lims = [s.rule for s in suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)]
    assert [(r.scope, r.dport, r.tcp_flags) for r in lims] == [(Scope.DST_LIMIT, 80, 0)]  # unanswered


def test_novelty_alone_never_blocks():
    """Every flow scores far above the threshold, none carries evidence: no rule."""
    web = [Packet(START + i * 1000 + j, "10.0.0.5", f"93.184.{i}.1", 5000 + i, 443, 6, fl, 900)
           for i in range(40) for j, fl in enumerate((0x02, 0x10, 0x18, 0x18, 0x11))]
    web += [Packet(START + i * 1000 + 500, f"93.184.{i}.1", "10.0.0.5", 443, 5000 + i, 6, 0x12, 60)
            for i in range(40)]
    w, keys = window(web)
    assert suggest(w, keys, [9.0] * len(keys), 0.5, window_end_ns=END) == []


def test_evidence_alone_never_blocks():
    w, keys = window(flood(100))
    assert suggest(w, keys, [0.1] * len(keys), 0.5, window_end_ns=END) == []
    # a model that agrees on too few of the carrying flows does not either
    few = [1.0] * 40 + [0.1] * 60
    assert suggest(w, keys, few, 0.5, window_end_ns=END) == []


def test_scanner_becomes_a_source_block_and_its_victims_clients_do_not():
    scan = [Packet(START + i, "10.0.0.66", "10.0.0.1", 4444, p, 6, 0x02, 58)
            for i, p in enumerate(range(20, 80))]
    client = [Packet(START + 99 + j, "10.0.0.7", "10.0.0.1", 51000, 443, 6, fl, 400)
              for j, fl in enumerate((0x02, 0x10, 0x18))]
    w, keys = window(scan + client)
    out = suggest(w, keys, [0.9] * len(keys), 0.5, window_end_ns=END)
    assert [(s.rule.scope, s.rule.src) for s in out] == [(Scope.SRC_PREFIX, "10.0.0.66/32")]
    assert "60 half-open" in out[0].reason


def test_weak_evidence_gets_a_short_ttl_and_is_escalated_when_it_returns():
    """10 half-open probes of one host (bound 5, strong from 15): a short drop first; the same
    source again after that rule ran out: the long one."""
    p = DetectParams()
    mem = Escalation()

    def scan(t0):
        w = WindowState(t0)
        for i, port in enumerate(range(20, 30)):
            w.add(Packet(t0 + i, "10.0.0.66", "10.0.0.1", 4444, port, 6, 0x02, 58))
        keys, _ = w.rows()
        return suggest(w, keys, [0.9] * len(keys), 0.5, window_end_ns=t0 + 10**9, memory=mem)

    (first,) = scan(START)
    assert first.rule.expires_ns - first.rule.created_ns == p.short_ttl_s * 1e9
    (again,) = scan(START + 10**9)  # the next window, before the rule is in force: same answer
    assert again.rule.expires_ns - again.rule.created_ns == p.short_ttl_s * 1e9
    (later,) = scan(START + int(p.short_ttl_s * 1e9) + 2 * 10**9)  # after it ran out
    assert later.rule.expires_ns - later.rule.created_ns == p.ttl_s * 1e9
    assert "(repeated)" in later.reason


def test_weak_destination_evidence_gets_the_loose_limit_first():
    w, keys = window(flood(20))  # 20 sources: >= 12, < 36
    (sg,) = suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)
    assert sg.rule.rate_pps == DetectParams().limit_pps
    assert sg.rule.expires_ns - sg.rule.created_ns == DetectParams().short_ttl_s * 1e9


def test_bounds_come_from_the_model():
    w, keys = window(flood(100))
    high = EvidenceBounds.calibrate({"dst": {"half_open_srcs": 200, "unsolicited_srcs": 200}})
    assert suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END, bounds=high) == []


def test_flow_only_is_the_seed_and_rules_are_capped_by_score():
    pk = [Packet(START + i, "10.0.0.66", "10.0.0.1", 4444, 20 + i, 6, 0x02, 58) for i in range(10)]
    w, keys = window(pk)
    assert suggest(w, keys, [0.1] * 10, 0.5, window_end_ns=END) == []
    seed = suggest(w, keys, [0.9] * 10, 0.5, window_end_ns=END, params=DetectParams(flow_only=True))
    assert len(seed) == 10 and {s.rule.scope for s in seed} == {Scope.FLOW}
    capped = suggest(w, keys, [i / 10 + 0.5 for i in range(10)], 0.5, window_end_ns=END,
                     params=DetectParams(flow_only=True, max_rules=3))
    assert len(capped) == 3 and capped[0].score == max(s.score for s in capped)


def test_destination_evidence_from_a_few_real_sources_blocks_them_not_their_neighbours():
    """Fragments from three reflectors (fewer than spoof_min_sources): the three are blocked as
    sources; a client of the same victim sending a few packets is not."""
    frags = [Packet(START + i * 1000, f"198.51.100.{i % 3 + 1}", "10.0.0.53", 0, 0, 17, 0, 1514)
             for i in range(300)]
    client = [Packet(START + 5000 + i, "10.0.0.9", "10.0.0.53", 0, 0, 17, 0, 1514) for i in range(3)]
    w, keys = window(frags + client)
    out = suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)
    assert sorted(s.rule.src for s in out) == [f"198.51.100.{i}/32" for i in (1, 2, 3)]
    assert all(s.rule.scope is Scope.SRC_PREFIX and "non-first fragments" in s.reason for s in out)


def test_a_flood_of_protocol_0_records_carrying_ports_gets_a_valid_limit():
    """A packet record from anything but the capture may carry ports with protocol 0
    (test_rel_record_fuzz found one); the limit must not name a port without a protocol
    (records.rules refuses it, and the window's verdicts were lost)."""
    pkts = [Packet(START + i * 100_000, f"198.51.{i % 50}.{1 + i % 7}", "10.10.10.10", 0, 1, 0, 0,
                   1000) for i in range(3000)]
    w, keys = window(pkts)
    rules = [sg.rule for sg in suggest(w, keys, [1.0] * len(keys), 0.5, window_end_ns=END)]
    assert [(r.scope, r.dst, r.proto, r.dport) for r in rules] == [
        (Scope.DST_LIMIT, "10.10.10.10", 0, 0)]
