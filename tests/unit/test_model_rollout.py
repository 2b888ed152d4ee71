"""Model roll-out, the pure parts: models-topic records (encode, decode, verify), loading a model
from a record's bytes, the switch boundary, which model scores which window, the shadow tally."""
from __future__ import annotations

import hashlib

import msgpack
import numpy as np
import pytest

from services.common.errors import DecodeError, ModelError
from services.detection.model import DEFAULT_MODEL, load_model_bytes, read_meta
from services.scorer.rollout import (ModelSchedule, RolloutRefused, may_score, switch_boundary,
                                     tally)
from services.wire.modelrec import (ACTIVE, CANDIDATE, PREVIOUS, ModelRecord, ShadowReport,
                                    decode_model_record, encode_model_record, merge_reports)

pytestmark = pytest.mark.unit
W = 10**9
T0 = 1_800_000_000 * W


@pytest.fixture(scope="module")
def shipped():
    return DEFAULT_MODEL.read_bytes(), read_meta(DEFAULT_MODEL)


def record(shipped, role=CANDIDATE, from_ns=T0, width=W, shadow=5) -> ModelRecord:
    data, meta = shipped
    return ModelRecord(role, data, meta, meta["sha256"], from_ns, width, shadow, 123)


def test_a_model_record_round_trips_and_its_model_loads(shipped):
    rec = record(shipped)
    back = decode_model_record(b"candidate", encode_model_record(rec))
    assert back == rec and back.until_ns == T0 + 5 * W
    det = load_model_bytes(back.model, back.meta)
    assert det.model_id == shipped[1]["model_id"] and det.threshold == shipped[1]["threshold"]


def test_a_record_without_a_model_stands_for_the_configured_one():
    rec = ModelRecord(ACTIVE, None, {}, "", T0, W)
    back = decode_model_record(b"active", encode_model_record(rec))
    assert back.model is None and back.model_id.startswith("configured")


def test_a_tombstone_decodes_to_none():
    assert decode_model_record(b"candidate", None) is None


@pytest.mark.parametrize("damage, reason", [
    (lambda v: v.update(model=v["model"][:-1] + bytes([v["model"][-1] ^ 1])), "hash to"),
    (lambda v: v.update(sha256="0" * 64), "hash to"),
    (lambda v: v.update(role="active"), "says role"),
    (lambda v: v.update({"from": T0 + 1}), "not a window boundary"),
    (lambda v: v.update(width=0), "not a window boundary"),
    (lambda v: v.pop("meta"), "missing field 'meta'"),
    (lambda v: v.update(v=7), "schema version 7"),
])
def test_a_damaged_record_is_refused_with_the_reason(shipped, damage, reason):
    value = msgpack.unpackb(encode_model_record(record(shipped)), raw=False)
    damage(value)
    with pytest.raises(DecodeError, match=reason):
        decode_model_record(b"candidate", msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize("key", [b"report", b"", None, b"\xff"])
def test_an_unknown_key_is_refused(shipped, key):
    with pytest.raises(DecodeError, match="unknown key"):
        decode_model_record(key, encode_model_record(record(shipped)))


def test_garbage_is_refused():
    with pytest.raises(DecodeError, match="not msgpack"):
        decode_model_record(b"active", b"\xc1\xc1")


def test_bytes_that_hash_right_but_do_not_unpickle_are_a_model_error(shipped):
    junk = b"not a pickle at all"
    meta = {**shipped[1], "sha256": hashlib.sha256(junk).hexdigest()}
    with pytest.raises(ModelError, match="cannot unpickle"):
        load_model_bytes(junk, meta)


@pytest.mark.parametrize("change, reason", [
    ({"sklearn_version": "0.1"}, "scikit-learn 0.1"),
    ({"format": "other/1"}, "format"),
    ({"feature_names": ["dst_flows"]}, "features"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": "high"}, "not a number"),
])
def test_a_model_whose_metadata_does_not_fit_is_refused(shipped, change, reason):
    with pytest.raises(ModelError, match=reason):
        load_model_bytes(shipped[0], {**shipped[1], **change})


def test_the_switch_boundary_is_the_first_window_start_at_least_lead_ahead():
    assert switch_boundary(T0, W, 10) == T0 + 10 * W
    assert switch_boundary(T0 + 1, W, 10) == T0 + 11 * W
    b = switch_boundary(T0 + 300_000_000, 5 * W, 12)
    assert b % (5 * W) == 0 and T0 + 12.3 * W <= b < T0 + 17.3 * W


def test_a_window_waits_until_the_topic_was_read_within_the_lead():
    assert may_score(T0 + 9 * W, T0, 10)
    assert not may_score(T0 + 10 * W, T0, 10)
    assert not may_score(T0, 0, 10)  # never read: nothing is scored


def test_each_window_gets_one_model_by_the_records_alone():
    s = ModelSchedule("base", W)
    s.apply(ModelRecord(ACTIVE, b"x", {}, "a", T0 + 3 * W, W), "new")
    assert [s.for_window(T0 + k * W)[0] for k in range(5)] == ["base"] * 3 + ["new"] * 2
    s.apply(ModelRecord(ACTIVE, None, {}, "", T0 + 4 * W, W), None)  # back to SCORER_MODEL
    assert [s.for_window(T0 + k * W)[0] for k in range(6)] == ["base"] * 3 + ["new", "base", "base"]
    assert s.active == "base"


def test_a_later_active_record_replaces_a_switch_not_yet_due():
    s = ModelSchedule("base", W)
    s.apply(ModelRecord(ACTIVE, b"x", {}, "a", T0 + 5 * W, W), "a")
    s.apply(ModelRecord(ACTIVE, b"y", {}, "b", T0 + 3 * W, W), "b")
    assert [s.for_window(T0 + k * W)[0] for k in (2, 3, 6)] == ["base", "b", "b"]


def test_the_shadow_scores_its_windows_only_and_ends_with_its_tombstone():
    s = ModelSchedule("base", W)
    s.apply(ModelRecord(CANDIDATE, b"x", {}, "c", T0 + 2 * W, W, 3), "cand")
    assert [s.for_window(T0 + k * W)[1] for k in range(6)] == [None, None, "cand", "cand", "cand", None]
    assert s.for_window(T0 + 2 * W)[0] == "base"
    s.remove(CANDIDATE)
    assert s.for_window(T0 + 2 * W) == ("base", None) and CANDIDATE not in s.records


def test_a_record_for_a_window_already_scored_or_another_width_is_refused():
    s = ModelSchedule("base", W)
    with pytest.raises(RolloutRefused, match="scored up to window"):
        s.check(ModelRecord(ACTIVE, b"x", {}, "a", T0, W), scored_upto=T0)
    with pytest.raises(RolloutRefused, match="5 s windows"):
        s.check(ModelRecord(ACTIVE, b"x", {}, "a", T0 + 10 * W, 5 * W), scored_upto=-1)
    s.check(ModelRecord(ACTIVE, b"x", {}, "a", T0 + W, W), scored_upto=T0)
    s.check(ModelRecord(PREVIOUS, b"x", {}, "a", 0, W), scored_upto=T0)  # no switch: no limit


def test_the_tally_counts_agreement_and_the_rules_added_and_dropped():
    r = ShadowReport("w1", "sha")
    tally(r, np.array([0.1, 0.9, 0.9, 0.2]), 0.5, np.array([0.1, 0.9, 0.1, 0.8]), 0.5,
          {"drop:a", "drop:b"}, {"drop:b", "drop:c", "drop:d"})
    assert (r.windows, r.flows, r.agree, r.flagged_active, r.flagged_shadow) == (1, 4, 2, 2, 2)
    assert (r.rules_added, r.rules_dropped, r.added, r.dropped) == (2, 1, ["drop:c", "drop:d"],
                                                                    ["drop:a"])


def test_reports_round_trip_and_merge_per_candidate():
    a = ShadowReport("w1", "sha", "m", windows=2, flows=10, agree=9, rules_added=1, added=["x"])
    b = ShadowReport("w2", "sha", "m", windows=3, flows=5, agree=5, refused=1, last_refusal="bad")
    old = ShadowReport("w3", "old", "m0", windows=50, flows=500)
    assert ShadowReport.decode(a.encode()) == a
    total = merge_reports([a, b, old], "sha")
    assert (total.windows, total.flows, total.agree, total.rules_added, total.added) == \
        (5, 15, 14, 1, ["x"])
    with pytest.raises(DecodeError):
        ShadowReport.decode(msgpack.packb({"v": 1, "t": "shadow-report"}))


class FakeDead:
    def __init__(self):
        self.letters = []

    async def __call__(self, topic, partition, offset, reason, raw):
        self.letters.append((offset, reason, raw))


def feed(scored_upto: int):
    from services.common.settings import CommonSettings
    from services.detection.model import load_model
    from services.scorer.metrics import ScorerMetrics
    from services.scorer.modelfeed import ModelFeed

    async def send(key, value):
        pass
    dead = FakeDead()
    f = ModelFeed(CommonSettings(), ModelSchedule(load_model(), W), "w1", 10.0, ScorerMetrics(),
                  lambda: scored_upto, dead, send)
    return f, dead


async def test_a_record_read_at_start_up_is_history_and_applies(shipped):
    f, dead = feed(scored_upto=T0 + 50 * W)
    await f.on_record(0, b"active", encode_model_record(record(shipped, ACTIVE, T0)))
    assert not dead.letters and f.schedule.switches[0][0] == T0


async def test_a_late_or_corrupt_record_in_steady_state_is_refused_and_the_model_kept(shipped):
    f, dead = feed(scored_upto=T0 + 50 * W)
    f.known_until_ns = T0 + 60 * W
    late = encode_model_record(record(shipped, ACTIVE, T0 + 10 * W))
    await f.on_record(3, b"active", late)
    await f.on_record(4, b"active", b"\xc1")
    assert [(o, raw) for o, _, raw in dead.letters] == [(3, late), (4, b"\xc1")]
    assert "scored up to window" in dead.letters[0][1] and "not msgpack" in dead.letters[1][1]
    assert f.schedule.switches == [] and f.report.refused == 2
    assert f.metrics.registry.get_sample_value("xdpguard_scorer_model_records_total",
                                               {"outcome": "refused"}) == 2


async def test_a_model_with_another_outage_memory_period_is_refused(shipped):
    """Stage 1 builds probe_tcp rows, and both stages hold probe evidence, with the running
    model's outage_memory_s (from SCORER_MODEL, read when a partition is assigned): a record
    whose model was trained with another period is refused as one with another horizon is,
    not run silently with the running period."""
    data, meta = shipped
    other = {**meta, "params": {**meta["params"], "outage_memory_s": 60.0}}
    f, dead = feed(scored_upto=-1)
    f.known_until_ns = T0 - 60 * W
    rec = ModelRecord(ACTIVE, data, other, meta["sha256"], T0, W, 5, 123)
    await f.on_record(7, b"active", encode_model_record(rec))
    assert [o for o, _, _ in dead.letters] == [7] and "outage memory" in dead.letters[0][1]
    assert f.schedule.switches == []
