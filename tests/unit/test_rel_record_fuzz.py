"""No single record can stop or crash-loop a service (issue 13, case 6: one record on the scorer's
internal flows topic, flow entries of the right length with a string where a number belongs,
passed decode, was stored, and raised TypeError when its window closed; the restarted worker
reloaded it from the changelog and crashed the same way).

Property tests feed every decoder arbitrary well-formed msgpack of each record's shape (its keys,
each holding a plausible value or any msgpack value) and carry whatever decodes through its apply
path: packet records through both window stages into model rows, flow chunks and progress marks
into stage 2 and the model, table markers into a restore, verdicts through the enforcer's
consume loop, rule records through the enforcer's restore. Decoders may raise DecodeError only;
apply paths nothing (the enforcer loop dead-letters what the maps refuse)."""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import DecodeError
from services.common.settings import load_common
from services.detection.features import SRC_FEATURES
from services.enforcer.actuator import MapActuator
from services.enforcer.metrics import EnforcerMetrics
from services.enforcer.policy import RulePolicy, RulePolicyConfig
from services.enforcer.reconciler import RulesReconciler
from services.enforcer.service import Enforcer
from services.enforcer.settings import load_enforcer
from services.records.rules import Rule
from services.records.verdict import Verdict
from services.scorer.scoring import VerdictPolicy, score_windows, verdicts_for
from services.scorer.tables import decode_dest_marker, decode_mark, decode_source_marker
from services.scorer.chunks import ENTRIES_VERSION, FLOW_LEN, FlowChunk
from services.scorer.dst_windows import DstPartition
from services.scorer.windows import SourcePartition
from services.wire import codec
from tests.support.fake_dataplane import FakeDataplane, FakeMaps
from tests.support.fake_rules_topic import FakeRulesTopic

W = 10**9
NOW = time.time_ns() // W * W
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

# --- any msgpack value, and plausible ones ------------------------------------------------------
ints = st.one_of(st.integers(-2**63, 2**64 - 1), st.sampled_from([0, 1, -1, 2**32, 2**63 - 1]))
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=20))
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12)


def either(plausible, odds: int = 3):
    """A plausible value, or (1 in odds + 1) anything msgpack can carry."""
    return st.integers(0, odds).flatmap(lambda i: anything if i == 0 else plausible)


v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)
addr_text = st.one_of(v4, v6, st.sampled_from(["::ffff:192.0.2.1", "192.0.2.300", "", "::"]))
raw_addr = st.one_of(st.ip_addresses().map(lambda a: a.packed), st.binary(max_size=17))
u = lambda bits: st.integers(0, 2**bits - 1)  # noqa: E731
times = st.integers(NOW - 30 * W, NOW + 30 * W)


def pack(d) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


# --- scorer: packets -> stage 1 -> flows -> stage 2 -> model ------------------------------------


def stage_two(chunks, detector) -> None:
    """Chunks into a stage 2 partition, every window closed, scored and turned into verdicts."""
    dst = DstPartition(0, W, 2, 30.0)
    for c in chunks:
        dst.add(c.key(), c)
    for p in range(2):
        dst.mark(p, NOW + 100 * W)
    closed = [dst.close(ws) for ws in dst.due()]
    closed = [w for w in closed if w.rows]
    if not closed:
        return
    rows = np.asarray([r for w in closed for r in w.rows], dtype=np.float64)
    assert np.isfinite(rows.astype(np.float32)).all(), "rows the model cannot take"
    for w, scores in zip(closed, score_windows(detector, closed)):
        verdicts_for(w, scores, threshold=detector.threshold, model_id="m", policy=VerdictPolicy())


row_event = st.tuples(either(times), either(u(64)), either(u(16)), either(u(16)), either(u(8)),
                      either(u(8)), either(u(32)), either(u(32)), either(u(32)), either(raw_addr),
                      either(raw_addr), either(st.text(max_size=8))).map(list)


@st.composite
def packet_records(draw):
    if draw(st.booleans()):
        rec = {"v": 1, "t": "pk", "n": 1, "e": draw(either(row_event))}
    else:
        n = draw(st.integers(1, 5))
        rec = {"v": 1, "t": "pk", "n": draw(either(st.just(n)))}
        for key, code, _ in codec.PACKET_COLUMNS:
            width = {"Q": 8, "I": 4, "H": 2, "B": 1}[code]
            plausible = st.binary(min_size=n * width, max_size=n * width)
            if key == "ts":
                plausible = st.lists(times, min_size=n, max_size=n).map(
                    lambda ts: b"".join(t.to_bytes(8, "little") for t in ts))
            rec[key] = draw(either(plausible))
        for key in ("src", "dst"):
            rec[key] = draw(either(st.lists(raw_addr, min_size=n, max_size=n)))
        rec["node"] = draw(either(st.one_of(st.text(max_size=5),
                                            st.lists(st.text(max_size=5), min_size=n, max_size=n))))
    return pack(rec)


@FUZZ
@given(packet_records())
def test_rel_any_packet_record_decodes_or_is_refused_and_then_flows_to_the_model(detector, data):
    try:
        cols = codec.decode_packet_columns(data)
    except DecodeError:
        return
    part = SourcePartition(0, W, 0, lambda: 0.0, wall=lambda: NOW, max_future_ns=10 * W)
    part.add(0, cols)
    chunks = []
    for ws in sorted(part.windows):
        chunks += [FlowChunk.decode(c.encode()) for c in part.close(ws, 1)[0]]
    stage_two(chunks, detector)


plausible_flow = st.tuples(
    v4, v4, u(16), u(16), u(8), times, times, u(20), u(30), u(8), u(10), st.text(max_size=5),
    *[st.floats(0, 1e6)] * len(SRC_FEATURES), u(64)).map(list)


@st.composite
def flow_entries(draw):
    """A plausible flow entry with a few fields swapped for anything (the report: a string
    where a number belongs, the length right)."""
    f = draw(plausible_flow)
    if f[5] > f[6]:
        f[5], f[6] = f[6], f[5]
    for i in draw(st.lists(st.integers(0, FLOW_LEN - 1), max_size=3)):
        f[i] = draw(anything)
    return f


@st.composite
def flow_records(draw):
    rec = {"v": ENTRIES_VERSION, "t": "flows", "ws": draw(either(times.map(lambda t: t - t % W))),
           "sp": draw(either(st.integers(0, 1))), "dp": draw(either(st.just(0))),
           "i": draw(either(st.integers(0, 3))),
           "f": draw(either(st.lists(either(flow_entries()), max_size=4))),
           "s": draw(either(st.lists(either(st.tuples(u(64), u(64)).map(list)), max_size=3))),
           "a": draw(either(st.lists(either(v4), max_size=3)))}
    return pack(rec)


@FUZZ
@given(st.lists(flow_records(), min_size=1, max_size=3))
def test_rel_any_flow_chunk_decodes_or_is_refused_and_then_closes_and_scores(detector, records):
    chunks = []
    for data in records:
        try:
            chunks.append(FlowChunk.decode(data))
        except DecodeError:
            pass
    stage_two(chunks, detector)


@st.composite
def column_records(draw):
    """A version-4 (columnar) chunk of plausible flows, then a few of its fields swapped for
    anything and a few bytes of its flow rows overwritten (indexes past their tables, first
    after last, any counter)."""
    flows = draw(st.lists(plausible_flow, max_size=4))
    for f in flows:
        f[5], f[6] = min(f[5], f[6]), max(f[5], f[6])
    rec = msgpack.unpackb(FlowChunk(NOW, 0, 0, 0, flows, [[1, 2]], ["10.0.0.1"]).encode())
    if draw(st.booleans()):
        rec["fe"] = [list(f) for f in rec["fe"]]
        if rec["fe"]:
            rec["fe"][0][draw(st.integers(0, len(SRC_FEATURES) - 1))] = draw(st.sampled_from(
                [float("nan"), float("inf"), 2e30, -2e30, 2**64 - 1, "x", None, True]))
    for k in draw(st.lists(st.sampled_from(sorted(rec)), max_size=2)):
        rec[k] = draw(anything)
    if type(rec.get("r")) is bytes and rec["r"]:
        r = bytearray(rec["r"])
        for _ in range(draw(st.integers(0, 3))):
            r[draw(st.integers(0, len(r) - 1))] = draw(st.integers(0, 255))
        rec["r"] = bytes(r[:draw(st.integers(len(r) - 3, len(r)))])
    return pack(rec)


@FUZZ
@given(st.lists(column_records(), min_size=1, max_size=3))
def test_rel_any_columnar_flow_chunk_decodes_or_is_refused_and_then_closes_and_scores(detector,
                                                                                      records):
    stage_two([c for c in map(decoded_or_none, records) if c is not None], detector)


def decoded_or_none(data: bytes) -> FlowChunk | None:
    """The chunk in `data`, None if decode refuses it (DecodeError; anything else fails)."""
    try:
        return FlowChunk.decode(data)
    except DecodeError:
        return None


def test_rel_the_reported_chunk_is_refused_at_decode():
    f = ["10.0.0.1", "10.0.0.2", 1, 2, 6, NOW, NOW, "x", 60, 2, 0, "node-a",
         *[0.0] * len(SRC_FEATURES), 0]
    data = pack({"v": ENTRIES_VERSION, "t": "flows", "ws": NOW, "sp": 0, "dp": 0, "i": 0, "f": [f],
                 "s": [], "a": []})
    with pytest.raises(DecodeError, match="packets"):
        FlowChunk.decode(data)


@FUZZ
@given(either(st.tuples(st.integers(-2, 9), times).map(list)).map(pack))
def test_rel_any_progress_mark_decodes_or_is_refused(data):
    try:
        src, upto = decode_mark(data)
    except DecodeError:
        return
    dst = DstPartition(0, W, 4, 30.0)
    dst.mark(src, upto)
    assert dst.due() == []


@FUZZ
@given(either(st.tuples(times, ints).map(list)).map(pack),
       either(st.tuples(times, st.lists(times, max_size=4)).map(list)).map(pack))
def test_rel_any_table_marker_decodes_or_is_refused(src_marker, dst_marker):
    for decode in (decode_source_marker, lambda v: decode_dest_marker(v, 4)):
        for value in (src_marker, dst_marker):
            try:
                decode(value)
            except DecodeError:
                pass


# --- enforcer: verdicts through the consume loop, rule records through the restore ------------

ODD_VALUES = {  # values of the right type that a rule may still not accept
    "src": st.sampled_from(["::/0", "::ffff:0:0/96", "::ffff:192.0.2.1", "2001:db8::/32", "x"]),
    "dst": st.sampled_from(["::ffff:192.0.2.2", "2001:db8::2", "192.0.2.300", ""]),
    "proto": st.sampled_from([0, 17, 255, 256]), "tcp_flags": st.sampled_from([0, 0x12, 0x100]),
    "rate_pps": st.sampled_from([0, 1, 2**32]), "action": st.sampled_from(["drop", "limit", "x"]),
    "dport": st.sampled_from([0, 65536, -1]), "expires_ns": st.sampled_from([0, 2**63, NOW - W]),
}


@st.composite
def rule_dicts(draw):
    """A valid rule of some scope as Rule.to_dict gives it, with 0-2 fields swapped for odd
    values of the right type or for anything."""
    scope = draw(st.sampled_from(["flow", "src_prefix", "dst_limit"]))
    fam = draw(st.sampled_from([v4, v6]))
    d = {"scope": scope, "action": "limit" if scope == "dst_limit" else draw(
             st.sampled_from(["drop", "pass"])), "src": "", "dst": "", "sport": 0, "dport": 0,
         "proto": 0, "tcp_flags": 0, "rate_pps": 0, "origin": draw(st.sampled_from(["manual", "model"])),
         "created_ns": NOW, "expires_ns": draw(st.sampled_from([0, NOW + 60 * W]))}
    if scope == "flow":
        d.update(src=draw(fam), dst=draw(fam), sport=draw(u(16)), dport=draw(u(16)),
                 proto=draw(st.sampled_from([6, 17, 1])))
    elif scope == "src_prefix":
        d["src"] = f"{draw(fam)}/{draw(st.integers(8, 32))}" if fam is v4 else \
            f"2001:db8:{draw(u(16)):x}::/48"
    else:
        d.update(dst=draw(fam), proto=6, tcp_flags=draw(st.sampled_from([0, 0x02, 0x12, 0x10, 0x01])),
                 dport=draw(st.sampled_from([0, 80])), rate_pps=draw(st.integers(1, 1000)))
    for name in draw(st.lists(st.sampled_from(sorted(d)), max_size=2)):
        d[name] = draw(st.one_of(ODD_VALUES.get(name, anything), anything))
    return d


@st.composite
def verdict_records(draw):
    def f(plausible):  # a record has many fields: each is rarely anything
        return draw(either(plausible, odds=15))
    return pack({"v": 1, "t": "verdict", "id": f(st.text(min_size=1, max_size=8)),
                 "rule": draw(either(rule_dicts(), odds=6)), "score": f(st.floats()),
                 "threshold": f(st.floats()), "model": f(st.text(max_size=5)), "ws": f(times),
                 "we": f(times), "node": f(st.sampled_from(["*", "n1", "other"])),
                 "reason": f(st.text(max_size=5)), "created": f(times)})


class FakeConsumer:
    """One batch of verdict records, then the loop is cancelled (it would run forever)."""

    def __init__(self, values: list[bytes]) -> None:
        from aiokafka.structs import TopicPartition
        self.batch = {TopicPartition("xdpguard.verdicts", 0): [
            SimpleNamespace(value=v, offset=i) for i, v in enumerate(values)]}

    async def getmany(self, **_):
        if self.batch is None:
            raise asyncio.CancelledError
        batch, self.batch = self.batch, None
        return batch

    async def commit(self):
        pass


def enforcer_over_fakes(maps: FakeMaps, topic: FakeRulesTopic) -> Enforcer:
    """The enforcer as start() wires it, over an in-memory data plane and rules topic."""
    e = Enforcer(load_common(), load_enforcer(), dataplane=FakeDataplane(maps), clock=lambda: NOW)
    e.policy = RulePolicy(RulePolicyConfig(node_id="n1", max_per_second=10**6,
                                           max_per_minute=10**6))
    e.reconciler = RulesReconciler(e.policy, topic, e.metrics, dry_run=False, restore=True,
                                   deadletter=topic.deadletter, clock=lambda: NOW)
    e.actuator = MapActuator(e.dataplane, maps, 1, e.policy, e.reconciler, e.metrics,
                             dry_run=False, clock=lambda: NOW)
    e.sent = []

    async def send(topic_name, key, value):
        e.sent.append(codec.decode_deadletter(value))
    e.rules_log.send = send
    return e


@FUZZ
@given(st.lists(verdict_records(), min_size=1, max_size=6))
def test_rel_any_verdict_is_applied_refused_or_dead_lettered_never_fatal(records):
    maps, topic = FakeMaps(capacity=4), FakeRulesTopic(node="n1")
    e = enforcer_over_fakes(maps, topic)
    e.consumer = FakeConsumer(records)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(e._consume())
    for rule in maps.installed.values():  # what went in is what the maps can hold
        assert rule.key() in topic.records


@st.composite
def rule_records(draw):
    d = draw(either(rule_dicts(), odds=6))
    key = draw(st.one_of(st.binary(max_size=10), st.just(b"k")))
    try:
        key = codec.rule_record_key(Rule.from_dict(d))
    except Exception:
        pass
    value = pack({"v": 1, "t": "rule", "rule": d,
                  "state": draw(either(st.just("applied"), odds=15)),
                  "node": draw(either(st.just("n1"), odds=15)),
                  "updated": draw(either(times, odds=15)),
                  "verdict": draw(either(st.text(max_size=4), odds=15))})
    return key, value


@FUZZ
@given(st.lists(rule_records(), min_size=1, max_size=8))
def test_rel_any_rules_topic_record_is_restored_or_dead_lettered_never_fatal(records):
    topic = FakeRulesTopic(node="n1")
    for i, (key, value) in enumerate(records):
        try:
            rec = codec.decode_rule_record(key, value)
        except DecodeError as exc:
            topic.bad_records.append((0, i, str(exc), key, value))
            continue
        if rec.state == "applied" and rec.node in ("n1", ""):
            topic.records[rec.key.decode()] = rec
    maps = FakeMaps()
    e = enforcer_over_fakes(maps, topic)
    asyncio.run(e.reconciler.restore(maps))
    assert len(topic.deadletters) >= len(topic.bad_records)
    for key in maps.installed:
        assert key in topic.records


def test_rel_a_rule_the_maps_can_never_hold_is_dead_lettered_and_tombstoned_on_restore():
    """Five TCP-flag masks for one destination: the fifth record decodes (each rule is valid
    alone) but the maps refuse it; the restore goes on, dead-letters it and tombstones it."""
    topic = FakeRulesTopic(node="n1")
    rules = [Rule("dst_limit", "limit", dst="192.0.2.9", proto=6, tcp_flags=m, rate_pps=10,
                        created_ns=NOW) for m in (0x02, 0x12, 0x10, 0x04, 0x01)]
    for r in rules:
        key, value = codec.encode_rule_record(r, "applied", "n1")
        topic.records[r.key()] = codec.decode_rule_record(key, value)
    maps = FakeMaps()
    asyncio.run(enforcer_over_fakes(maps, topic).reconciler.restore(maps))
    assert len(maps.installed) == 4 and len(topic.deadletters) == 1
    assert "TCP-flag masks" in topic.deadletters[0][3]
    assert ("tombstone", rules[-1].key()) in topic.log


def test_rel_a_verdict_the_maps_cannot_hold_is_refused_and_the_next_one_applied():
    maps, topic = FakeMaps(), FakeRulesTopic(node="n1")
    e = enforcer_over_fakes(maps, topic)
    verdicts = []
    for i, m in enumerate((0x02, 0x12, 0x10, 0x04, 0x01)):
        rule = Rule("dst_limit", "limit", dst="192.0.2.9", proto=6, tcp_flags=m,
                          rate_pps=10).with_times(NOW, 60)
        verdicts.append(codec.encode_verdict(Verdict(rule, 1.0, 0.5, "m", NOW - W, NOW,
                                                           verdict_id=f"v{i}")))
    e.consumer = FakeConsumer(verdicts)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(e._consume())
    assert len(maps.installed) == 4 and e.sent == []  # refused (counted), not dead-lettered
    assert e.metrics.registry.get_sample_value("xdpguard_enforcer_rules_refused_total",
                                               {"reason": "map"}) == 1
