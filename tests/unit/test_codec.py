"""Codec round trips (hypothesis), tolerance of unknown fields, and DecodeError on bad input."""
from __future__ import annotations

import dataclasses
import ipaddress

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.wire import codec
from services.wire.codec import (
    DecodeError, decode_deadletter, decode_packet_columns, decode_packets, decode_rule_record,
    decode_verdict, encode_deadletter, encode_rule_record, encode_verdict, rule_tombstone)
from services.wire.partition import partition_key, source_partition
from services.records.packet import Packet
from services.records.rules import Action, Rule, Scope, canonical_address
from services.records.verdict import ALL_NODES, Verdict, targets
from tests.support.packet_records import encode_packets

u = lambda bits: st.integers(0, (1 << bits) - 1)  # noqa: E731
# one IP header holds both addresses: one family per packet (the codec refuses two; an
# IPv4-mapped IPv6 address is IPv4)
packets = st.one_of(*(st.builds(
    Packet, ts_ns=u(64), src=fam, dst=fam, sport=u(16), dport=u(16), proto=u(8),
    tcp_flags=u(8), length=u(32), ifindex=u(32),
    sample_rate=st.integers(1, (1 << 32) - 1),  # 1-in-N, N >= 1 (0 is refused: below)
    node=st.text(max_size=20), seq=u(64))
    for fam in (st.ip_addresses(v=4).map(str),
                st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str))))


def canonical(p: Packet) -> Packet:
    """What a packet reads back as: addresses in their one form (IPv4-mapped IPv6 as IPv4)."""
    from dataclasses import replace
    return replace(p, src=canonical_address(p.src), dst=canonical_address(p.dst))


def pkt(i: int = 0, **kw) -> Packet:
    base = dict(ts_ns=1_700_000_000_000_000_000 + i, src=f"10.0.{i % 250}.{i % 200 + 1}",
                dst="192.168.1.10", sport=1024 + i, dport=80, proto=6, tcp_flags=2, length=60,
                ifindex=3, sample_rate=1, node="node-a", seq=i)
    base.update(kw)
    return Packet(**base)


@settings(max_examples=200, deadline=None)
@given(st.lists(packets, min_size=1, max_size=40))
def test_packet_batches_round_trip(batch):
    assert decode_packets(encode_packets(batch)) == [canonical(p) for p in batch]


@settings(max_examples=100, deadline=None)
@given(packets)
def test_single_packet_round_trips_in_row_form(p):
    data = encode_packets([p])
    assert "e" in msgpack.unpackb(data)
    assert decode_packets(data) == [canonical(p)]


def test_columns_view_matches_packets():
    batch = [pkt(i) for i in range(10)]
    cols = decode_packet_columns(encode_packets(batch))
    assert cols.n == 10 and cols.seq == list(range(10)) and cols.node == ["node-a"] * 10
    assert cols.packets() == batch


def test_mixed_nodes_and_families_in_one_batch():
    batch = [pkt(0, node="a"), pkt(1, node="b", src="2001:db8::1", dst="2001:db8::2"),
             pkt(2, node="b", src="::ffff:1.2.3.5", dst="::ffff:1.2.3.4")]
    got = decode_packets(encode_packets(batch))
    assert got == [canonical(p) for p in batch] and (got[2].src, got[2].dst) == ("1.2.3.5", "1.2.3.4")


@pytest.mark.parametrize("src,dst", [("2001:db8::1", "1.2.3.4"), ("2001:db8::1", "::ffff:1.2.3.4")])
def test_an_event_whose_addresses_are_of_two_families_is_no_packet(src, dst):
    for batch in ([pkt(0, src=src, dst=dst)], [pkt(0), pkt(1, src=src, dst=dst)]):
        with pytest.raises(DecodeError, match="different IP families"):
            decode_packets(encode_packets(batch))


def test_micro_batch_is_compact():
    data = encode_packets([pkt(i) for i in range(256)])
    assert len(data) / 256 < 60


def test_partition_by_source_address():
    a, b = pkt(1, sport=1), pkt(1, sport=2, dst="10.9.9.9", dport=443)
    assert partition_key(a) == bytes([10, 0, 1, 2])
    assert source_partition(a, 8) == source_partition(b, 8)
    assert len({source_partition(pkt(i), 8) for i in range(200)}) == 8
    from aiokafka.partitioner import murmur2  # same as Kafka's default partitioner for the key
    assert source_partition(a, 8) == (murmur2(partition_key(a)) & 0x7FFFFFFF) % 8


def test_encoder_rejects_bad_packets():
    with pytest.raises(ValueError):
        encode_packets([])
    with pytest.raises(ValueError):
        encode_packets([pkt(0, src="not-an-ip")])
    with pytest.raises(ValueError):
        encode_packets([pkt(0), pkt(1, sport=70000)])
    with pytest.raises(ValueError):
        encode_packets([pkt(0, sport=-1)])


def test_readers_ignore_unknown_fields():
    rec = msgpack.unpackb(encode_packets([pkt(i) for i in range(3)]))
    rec["future_field"] = {"x": 1}
    assert len(decode_packets(msgpack.packb(rec))) == 3
    v = msgpack.unpackb(encode_verdict(verdict()))
    v["extra"], v["rule"]["new_rule_field"] = 1, "x"
    assert decode_verdict(msgpack.packb(v)) == verdict()


def verdict(**kw) -> Verdict:
    rule = Rule(Scope.SRC_PREFIX, Action.DROP, src="10.1.0.0/16").with_times(1_000, 600)
    base = dict(rule=rule, score=0.8, threshold=0.5, model_id="iforest-abc", window_start_ns=10,
                window_end_ns=20, node=ALL_NODES, reason="syn flood", created_ns=5)
    base.update(kw)
    return Verdict(**base)


def test_verdict_round_trip_and_deterministic_id():
    v = verdict()
    assert decode_verdict(encode_verdict(v)) == v
    assert v.verdict_id == verdict(score=0.9, created_ns=99).verdict_id  # same decision, same id
    assert v.verdict_id != verdict(window_start_ns=11).verdict_id
    limit = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.168.1.10", proto=6, dport=80,
                 tcp_flags=2, rate_pps=100)
    v2 = verdict(rule=limit, node="node-a")
    assert decode_verdict(encode_verdict(v2)) == v2 and targets(v2.node, "node-a") and not targets(v2.node, "b")


def test_rule_record_and_tombstone():
    rule = Rule(Scope.FLOW, Action.DROP, src="10.0.0.1", dst="10.0.0.2", sport=1, dport=2, proto=6)
    key, value = encode_rule_record(rule, "applied", "node-a", updated_ns=7, verdict_id="abc")
    assert key == rule.key().encode()
    rec = decode_rule_record(key, value)
    assert (rec.rule, rec.state, rec.node, rec.updated_ns, rec.verdict_id) == (rule, "applied", "node-a", 7, "abc")
    tkey, tvalue = rule_tombstone(rule)
    assert tvalue is None and decode_rule_record(tkey, tvalue).deleted
    with pytest.raises(DecodeError, match="does not match"):
        decode_rule_record(b"src/1.2.3.0/24", value)
    with pytest.raises(ValueError):
        encode_rule_record(rule, "weird", "n")


def test_deadletter_round_trip_and_cut():
    d = decode_deadletter(encode_deadletter("p.packets", 3, 42, "bad", b"\xc1" * 10, "scorer", ts_ns=1))
    assert (d.source_topic, d.partition, d.offset, d.reason, d.raw, d.service, d.raw_len) == \
        ("p.packets", 3, 42, "bad", b"\xc1" * 10, "scorer", 10)
    big = decode_deadletter(encode_deadletter("t", 0, 0, "big", b"x" * (codec.MAX_DEADLETTER_RAW + 5), "s"))
    assert len(big.raw) == codec.MAX_DEADLETTER_RAW and big.raw_len == codec.MAX_DEADLETTER_RAW + 5


GOOD = encode_packets([pkt(i) for i in range(4)])


def mutate(**changes) -> bytes:
    rec = msgpack.unpackb(GOOD)
    for k, v in changes.items():
        if v is None:
            rec.pop(k)
        else:
            rec[k] = v
    return msgpack.packb(rec)


@pytest.mark.parametrize("data, reason", [
    (b"", "not msgpack"),
    (GOOD[:-3], "not msgpack"),
    (b"\xc1", "not msgpack"),
    (msgpack.packb([1, 2]), "expected a map"),
    (mutate(v=2), "schema version"),
    (mutate(v=None), "schema version"),
    (mutate(v=True), "schema version"),
    (mutate(t="verdict"), "expected a 'pk'"),
    (mutate(n=5), "column"),
    (mutate(n=0), "event count"),
    (mutate(sp=b"\x00"), "column 'sp'"),
    (mutate(src=[b"\x01\x02"] * 4), "4 or 16"),
    (mutate(src=[[1]] * 4), "4 or 16"),
    # a cached address beside entries that are no address (a text, a map, an integer)
    (mutate(src=[b"\x01\x02\x03\x04", "1.2.3.4", {}, 7]), "4 or 16 bytes, got str"),
    (mutate(dst=[b"\x01\x02\x03\x04", b"\x01\x02\x03\x04", {}, 7]), "got dict"),
    (mutate(dst=None), "missing field 'dst'"),
    (mutate(node=[1, 2, 3, 4]), "node"),
    (mutate(ts="x"), "type str"),
    (b"\x00" * (codec.MAX_RECORD_BYTES + 1), "exceeds"),
    (msgpack.packb({"v": 1, "t": "pk", "n": 1, "e": [1, 2]}), "at least 12"),
    (msgpack.packb({"v": 1, "t": "pk", "n": 1, "e": [-1] + [0] * 8 + [b"\1" * 4] * 2 + ["n"]}), "in range"),
])
def test_packet_decoder_raises_decode_error_with_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_packets(data)


def test_verdict_decoder_raises_decode_error():
    good = msgpack.unpackb(encode_verdict(verdict()))
    for change in ({"rule": {"scope": "nope"}}, {"rule": {**good["rule"], "sport": "x"}},
                   {"score": "high"}, {"id": ""}, {"ws": None}, {"t": "pk"}):
        rec = {**good, **change}
        rec = {k: v for k, v in rec.items() if v is not None}
        with pytest.raises(DecodeError):
            decode_verdict(msgpack.packb(rec))
    with pytest.raises(DecodeError):
        decode_verdict(None)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_raise_only_decode_error_on_garbage(data):
    _every_decoder_raises_only_decode_error(data)


def _every_decoder_raises_only_decode_error(data) -> None:
    for decoder in (decode_packets, decode_verdict, decode_deadletter,
                    lambda d: decode_rule_record(b"k", d)):
        try:
            decoder(data)
        except DecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "t", "n", "e", "ts", "src", "node", "sp", "rule", "score"]),
                       st.one_of(st.integers(-2, 70000), st.binary(max_size=8), st.text(max_size=4),
                                 st.lists(st.one_of(st.integers(-1, 300), st.binary(max_size=17)), max_size=14),
                                 st.none(), st.floats()), max_size=8))
def test_decoders_raise_only_decode_error_on_wrong_structures(rec):
    for t in ("pk", "verdict", "deadletter", "rule"):
        _every_decoder_raises_only_decode_error(
            msgpack.packb({"v": 1, "t": t, **rec} if "v" not in rec else rec))


def test_a_sample_rate_of_0_or_a_score_that_is_no_number_is_refused():
    """helper-72: packet events with sample rate 0 (each standing for no packet) and verdicts
    scored NaN were accepted; both are dead-lettered now, as any record that is no record."""
    import math

    from services.common.errors import DecodeError
    from services.wire.codec import decode_packet_columns, decode_verdict, encode_verdict
    from tests.support.packet_records import encode_packets

    p = Packet(1, "10.0.0.1", "10.0.0.2", 1, 2, 6, 2, 60, sample_rate=0)
    for batch in ([p], [p, dataclasses.replace(p, sample_rate=1)]):
        with pytest.raises(DecodeError, match="sample rate 0"):
            decode_packet_columns(encode_packets(batch))
    from services.records.rules import Action, Rule, Scope
    from services.records.verdict import Verdict
    v = Verdict(rule=Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.0/24"), score=math.nan,
                threshold=0.1, model_id="m", window_start_ns=1, window_end_ns=2)
    with pytest.raises(DecodeError, match="score nan is not a finite number"):
        decode_verdict(encode_verdict(v))
