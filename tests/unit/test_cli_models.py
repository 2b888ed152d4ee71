"""`xdpguard models`: bad input is one line and a non-zero exit before Kafka is reached; the
status report is built from the topic's records; `topics tail models` shows a model record
without its bytes."""
import json

import pytest

from services.detection.model import DEFAULT_MODEL, read_meta
from services.manager import cli
from services.manager.kafka_inspect import record_to_json
from services.manager.models_cmd import status
from services.wire.modelrec import (ACTIVE, CANDIDATE, ModelRecord, ShadowReport,
                                    encode_model_record)
from services.wire.topics import MODELS

pytestmark = pytest.mark.unit
W = 10**9


@pytest.mark.parametrize("argv, says", [
    (["models", "publish", "/nonexistent.joblib"], "no model file /nonexistent.joblib"),
    (["models", "publish", str(DEFAULT_MODEL), "--lead", "2"], "--lead 2 is below"),
    (["models", "publish", str(DEFAULT_MODEL), "--shadow-windows", "0"], "at least 1"),
    (["models", "promote", "--lead", "1"], "below SCORER_MODEL_LEAD_S=10"),
    (["models", "rollback", "--lead", "0"], "below SCORER_MODEL_LEAD_S=10"),
])
def test_bad_input_is_one_line_and_exit_1(argv, says, capsys):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_file_that_is_not_a_model_is_refused(tmp_path, capsys):
    bad = tmp_path / "m.joblib"
    bad.write_bytes(b"junk")
    (tmp_path / "m.json").write_text(json.dumps({**read_meta(DEFAULT_MODEL)}))
    assert cli.main(["models", "publish", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "refusing to load a changed file" in err and err.count("\n") == 1


def test_status_sums_the_reports_of_the_current_candidate():
    meta = read_meta(DEFAULT_MODEL)
    cand = ModelRecord(CANDIDATE, b"x", {**meta, "model_id": "cand"}, "c" * 64, 10 * W, W, 5)
    reports = [ShadowReport("w1", "c" * 64, "cand", windows=2, flows=10, agree=7),
               ShadowReport("w2", "c" * 64, "cand", windows=1, flows=5, agree=5, refused=1,
                            last_refusal="bad hash"),
               ShadowReport("w3", "0" * 64, "old", windows=9, flows=90)]
    out = status({CANDIDATE: cand}, reports)
    assert out[ACTIVE]["model_id"].startswith("configured") and out["previous"] is None
    assert out[CANDIDATE]["model_id"] == "cand" and out[CANDIDATE]["shadow_windows"] == 5
    assert (out["shadow"]["windows"], out["shadow"]["flows"], out["shadow"]["agree"]) == (3, 15, 12)
    assert out["refusals"] == [{"worker": "w2", "refused": 1, "last_refusal": "bad hash"}]


def test_tail_shows_a_model_record_without_its_bytes():
    data, meta = DEFAULT_MODEL.read_bytes(), read_meta(DEFAULT_MODEL)
    value = encode_model_record(ModelRecord(ACTIVE, data, meta, meta["sha256"], 10 * W, W))
    [shown] = record_to_json(MODELS, value, b"active")
    assert shown["model_bytes"] == len(data) and "model" not in shown
    assert shown["model_id"] == meta["model_id"] and shown["from_ns"] == 10 * W
    [bad] = record_to_json(MODELS, b"\xc1", b"active")
    assert "not msgpack" in bad["_undecodable"]


def _fake_topic(monkeypatch, records: dict) -> list:
    """models_cmd over an in-memory topic: `records` by role, the writes returned."""
    from services.manager import models_cmd

    writes: list = []
    monkeypatch.setattr(models_cmd, "_settings", lambda lead=None: (None, W))

    async def read_state(common):
        return dict(records), []

    async def write(common, items):
        writes.extend(items)
    monkeypatch.setattr(models_cmd, "read_state", read_state)
    monkeypatch.setattr(models_cmd, "write", write)
    return writes


def _candidate(data: bytes, meta: dict) -> ModelRecord:
    import hashlib
    import time

    meta = {**meta, "sha256": hashlib.sha256(data).hexdigest(), "model_id": "bogus"}
    return ModelRecord(CANDIDATE, data, meta, meta["sha256"], 0, W, 2, time.time_ns())


def test_promote_refuses_a_candidate_the_workers_refused(monkeypatch, capsys):
    """helper-73: a candidate whose bytes hash right but do not unpickle was refused by every
    worker, yet `promote` made it active (exit 0) and `status` named it active while the workers
    scored with their old model. Now promote loads it as a worker does, first."""
    writes = _fake_topic(monkeypatch, {CANDIDATE: _candidate(b"\x80\x04junk",
                                                             read_meta(DEFAULT_MODEL))})
    assert cli.main(["models", "promote"]) == 1
    err = capsys.readouterr().err
    assert "not made active" in err and "bogus" in err and err.count("\n") == 1
    assert writes == []


def test_promote_before_any_shadow_window_warns(monkeypatch, capsys):
    writes = _fake_topic(monkeypatch, {CANDIDATE: _candidate(DEFAULT_MODEL.read_bytes(),
                                                             read_meta(DEFAULT_MODEL))})
    assert cli.main(["models", "promote"]) == 0
    out = capsys.readouterr()
    assert "active from" in out.out and "before any worker scored a shadow window" in out.err
    assert [role for role, _ in writes] == ["previous", "active", "candidate"]
