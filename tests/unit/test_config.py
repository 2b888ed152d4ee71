import pytest

from services.common.config import describe, load
from services.common.errors import ConfigError
from services.records.rules import Action, Rule, Scope
from services.common.settings import CommonSettings
from services.wire.topics import PACKETS


def test_settings_read_from_prefixed_env():
    s = load(CommonSettings, {"XDPGUARD_KAFKA_BOOTSTRAP": "k:1", "XDPGUARD_PACKETS_PARTITIONS": "3"})
    assert s.kafka_bootstrap == "k:1" and s.packets_partitions == 3
    assert s.topic(PACKETS) == "xdpguard.packets"


def test_bad_setting_names_the_variable():
    with pytest.raises(ConfigError, match="XDPGUARD_PACKETS_PARTITIONS"):
        load(CommonSettings, {"XDPGUARD_PACKETS_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="at least 1"):
        load(CommonSettings, {"XDPGUARD_PACKETS_PARTITIONS": "0"})


def test_every_setting_is_documented():
    rows = describe(CommonSettings)
    assert all(env.startswith("XDPGUARD_") and doc for env, _, doc in rows)


def test_rule_keys_and_roundtrip():
    r = Rule(Scope.SRC_PREFIX, Action.DROP, src="10.1.2.3/24")
    assert r.src == "10.1.2.0/24" and r.key() == "src/10.1.2.0/24"
    assert Rule.from_dict({**r.to_dict(), "future_field": 1}) == r
    with pytest.raises(ValueError):
        Rule(Scope.FLOW, Action.DROP, src="10.0.0.1", dst="10.0.0.2", dport=70000)
    with pytest.raises(ValueError):
        Rule(Scope.DST_LIMIT, Action.DROP, dst="10.0.0.2")


def test_a_misspelled_service_variable_is_named_with_the_setting_it_resembles(monkeypatch, caplog, capsys):
    from services.manager.config_cmd import cmd_config
    from services.scorer.settings import ScorerSettings, load_scorer
    from services.common.config import unknown
    env = {"SCORER_WINDOWS_S": "2", "SCORER_ZZZ": "1", "SCORER_WINDOW_S": "1",
           "XDPGUARD_IMAGE": "x"}
    assert unknown(ScorerSettings, env) == [
        "SCORER_WINDOWS_S is not a scorer setting: ignored; did you mean SCORER_WINDOW_S?",
        "SCORER_ZZZ is not a scorer setting: ignored"]
    assert unknown(CommonSettings, env) == []  # XDPGUARD_ is shared with the scripts
    monkeypatch.setenv("SCORER_WINDOWS_S", "2")
    with caplog.at_level("WARNING", logger="xdpguard.config"):
        assert load_scorer().window_s == 1.0
    assert "did you mean SCORER_WINDOW_S?" in caplog.text
    assert cmd_config(type("A", (), {"markdown": False})()) == 0
    assert "warning: SCORER_WINDOWS_S is not a scorer setting" in capsys.readouterr().err
