"""Model files: metadata written beside the joblib file, verified before anything is unpickled."""
import json

import numpy as np
import pytest

from services.common.errors import ModelError
from services.detection.features import FEATURE_NAMES, SEED_FEATURES
from services.detection.model import DEFAULT_MODEL, load_model, meta_path, save_model
from services.offline.training import make_estimator


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((200, len(SEED_FEATURES)))
    est = make_estimator("seed", n_estimators=20, max_samples=64).fit(X)
    path = tmp_path / "m.joblib"
    save_model(est, path, threshold=0.1, feature_names=SEED_FEATURES, metrics={"x": 1})
    return path, X


def test_metadata_records_what_loading_checks(model_file):
    path, _ = model_file
    meta = json.loads(meta_path(path).read_text())
    for key in ("feature_names", "threshold", "sklearn_version", "sha256", "training", "metrics",
                "model_id"):
        assert key in meta
    assert meta["feature_names"] == list(SEED_FEATURES)


def test_loaded_detector_scores_higher_for_outliers(model_file):
    path, X = model_file
    det = load_model(path)
    assert det.threshold == 0.1 and det.feature_names == SEED_FEATURES
    s = det.score(np.vstack([X[:5], np.full((1, X.shape[1]), 50.0)]))
    assert s.shape == (6,) and s[-1] > s[:5].max()
    full = np.zeros((2, len(FEATURE_NAMES)))
    assert det.score_rows(full).shape == (2,)
    assert det.score(np.zeros((0, len(SEED_FEATURES)))).shape == (0,)


def test_changed_model_file_is_refused_before_unpickling(model_file, monkeypatch):
    path, _ = model_file
    path.write_bytes(path.read_bytes() + b"tampered")
    import joblib
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("unpickled an unverified file"))
    with pytest.raises(ModelError, match="sha256"):
        load_model(path)


def test_missing_metadata_and_other_sklearn_are_refused(model_file):
    path, _ = model_file
    meta = json.loads(meta_path(path).read_text())
    meta["sklearn_version"] = "0.1"
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="scikit-learn"):
        load_model(path)
    meta_path(path).unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(path)


def test_unknown_feature_names_are_refused(model_file):
    path, _ = model_file
    meta = json.loads(meta_path(path).read_text())
    meta["feature_names"][0] = "bogus"
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown features"):
        load_model(path)


def test_shipped_model_loads_and_matches_its_card():
    det = load_model()
    assert DEFAULT_MODEL.is_file() and det.feature_names == FEATURE_NAMES
    m = det.meta["metrics"]
    assert abs(m["calibration_fpr"] - m["target_fpr"]) <= 0.005  # calibrated on held-back files
    assert m["calibration_files"] >= 50 and det.meta["training"]["calibration_split"] == "by file"
    assert det.evidence.bounds == det.evidence.calibrate(det.meta["evidence"]["benign_max"]).bounds
    assert det.model_id in (DEFAULT_MODEL.parent / "README.md").read_text()  # the card is current


class _Renamed:
    """Stands for an estimator class at an import path this version no longer has."""


def test_a_file_naming_an_old_module_path_is_one_clear_error(tmp_path, monkeypatch):
    """A model pickled before the package split names services.common.estimators: loading it
    is one ModelError naming the module, not a pickle traceback."""
    import sys
    import types

    old = types.ModuleType("services.common.estimators")
    monkeypatch.setattr(_Renamed, "__module__", old.__name__)
    old._Renamed = _Renamed
    monkeypatch.setitem(sys.modules, old.__name__, old)
    path = tmp_path / "old.joblib"
    save_model(_Renamed(), path, threshold=0.1, feature_names=SEED_FEATURES)
    monkeypatch.delitem(sys.modules, old.__name__)
    with pytest.raises(ModelError, match=r"older xdpguard.*'services\.common\.estimators'"):
        load_model(path)


@pytest.mark.parametrize("bad", [-1, "3600", "abc", None, True, float("nan"), float("inf"), 1e300])
def test_an_unusable_outage_memory_period_is_one_model_error(model_file, bad):
    """params' outage_memory_s (seconds, a number >= 0) is checked when the model loads: a bad
    value is one ModelError naming it, not a ValueError or OverflowError from the first
    window that builds the memory (a traceback in the scorer's partition assignment)."""
    path, _ = model_file
    meta = json.loads(meta_path(path).read_text())
    meta.setdefault("params", {})["outage_memory_s"] = bad
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="outage_memory_s"):
        load_model(path)
    meta["params"]["outage_memory_s"] = 0
    meta_path(path).write_text(json.dumps(meta))
    assert load_model(path).outage_memory_s == 0.0


@pytest.mark.parametrize("content", ["random", "truncated", "empty", "a dict"])
def test_a_file_that_hashes_right_but_is_no_model_is_one_model_error(model_file, content):
    """helper-72: metadata rewritten to the sha256 of a corrupt file (random bytes: KeyError,
    half the file: ValueError, empty: EOFError) or of a pickled dict (loaded without a word)
    started the scorer with a traceback or with no model at all; `models publish` refused the
    same in one line. Now load_model refuses them as load_model_bytes does."""
    import hashlib

    import joblib

    path, _ = model_file
    if content == "a dict":
        joblib.dump({"not": "a model"}, path)
    else:
        data = path.read_bytes()
        path.write_bytes({"random": np.random.default_rng(1).bytes(4096),
                          "truncated": data[:len(data) // 2], "empty": b""}[content])
    meta = json.loads(meta_path(path).read_text())
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=str(path)) as err:
        load_model(path)
    assert "\n" not in str(err.value)
