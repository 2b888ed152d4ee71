"""docs/configuration.md: "a bad value stops the service with one line naming the variable". Every
setting of every service, set to a bad value, is refused by `load` with a ConfigError that names
that variable (the table below must cover every variable `xdpguard config` lists, so a new
setting needs a bad value here)."""
import pytest

from services.common.config import describe, load
from services.common.errors import ConfigError
from services.manager.config_cmd import SECTIONS, settings_classes

SASL = {"XDPGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "XDPGUARD_KAFKA_SASL_USERNAME": "u", "XDPGUARD_KAFKA_SASL_PASSWORD": "p"}

# variable -> (bad value, other variables set alongside)
BAD = {
    "XDPGUARD_KAFKA_BOOTSTRAP": ("nohost", {}),
    "XDPGUARD_TOPIC_PREFIX": ("my topics/", {}),
    "XDPGUARD_NODE_ID": ("", {}),
    "XDPGUARD_PIN_DIR": ("sys/fs/bpf/x", {}),
    "XDPGUARD_PACKETS_PARTITIONS": ("0", {}),
    "XDPGUARD_VERDICTS_PARTITIONS": ("-1", {}),
    "XDPGUARD_RULES_PARTITIONS": ("one", {}),
    "XDPGUARD_DEADLETTER_PARTITIONS": ("0", {}),
    "XDPGUARD_REPLICATION_FACTOR": ("0", {}),
    "XDPGUARD_KAFKA_SECURITY_PROTOCOL": ("TELNET", {}),
    "XDPGUARD_KAFKA_SASL_MECHANISM": ("GSSAPI", {}),
    "XDPGUARD_KAFKA_SASL_USERNAME": ("", SASL),
    "XDPGUARD_KAFKA_SASL_PASSWORD": ("", SASL),
    "XDPGUARD_KAFKA_SSL_CAFILE": ("/nonexistent/ca.pem", {}),
    "XDPGUARD_KAFKA_SSL_CERTFILE": ("/nonexistent/cert.pem", {}),
    "XDPGUARD_KAFKA_SSL_KEYFILE": ("/nonexistent/key.pem", {}),
    "CAPTURE_INTERFACES": ("eth0,a-name-far-too-long0", {}),
    "CAPTURE_XDP_MODE": ("turbo", {}),
    "CAPTURE_UNLOAD_ON_EXIT": ("maybe", {}),
    "CAPTURE_QUEUE_EVENTS": ("0", {}),
    "CAPTURE_BUFFER_EVENTS": ("-5", {}),
    "CAPTURE_BATCH_EVENTS": ("100000", {}),
    "CAPTURE_LINGER_MS": ("-1", {}),
    "CAPTURE_COMPRESSION": ("brotli", {}),
    "CAPTURE_REQUEST_TIMEOUT_MS": ("0", {}),
    "CAPTURE_POLL_MS": ("0", {}),
    "CAPTURE_SAMPLE_RATE": ("-1", {}),
    "CAPTURE_MAX_SAMPLE_RATE": ("2", {"CAPTURE_SAMPLE_RATE": "4"}),
    "CAPTURE_ADAPT_INTERVAL_MS": ("0", {}),
    "CAPTURE_ADAPTIVE_SAMPLING": ("sometimes", {}),
    "CAPTURE_METRICS_PORT": ("70000", {}),
    "CAPTURE_METRICS_HOST": ("not a host", {}),
    "SCORER_APP_ID": ("my scorer", {}),
    "SCORER_WINDOW_S": ("0", {}),
    "SCORER_LATENESS_S": ("-0.1", {}),
    "SCORER_MAX_FUTURE_S": ("86401", {}),
    "SCORER_IDLE_S": ("nan", {}),
    "SCORER_CLOSE_WAIT_S": ("-1", {}),
    "SCORER_MODEL_LEAD_S": ("0.5", {}),
    "SCORER_TICK_S": ("0", {}),
    "SCORER_FETCH_WAIT_S": ("2", {}),
    "SCORER_GC_YOUNG": ("-1", {}),
    "SCORER_MODEL": ("/nonexistent/model.joblib", {}),
    "SCORER_EMIT_PASS": ("2", {}),
    "SCORER_PASS_TTL_S": ("0", {}),
    "SCORER_VERDICT_TTL_S": ("-1", {}),
    "SCORER_LIMIT_PPS": ("0", {}),
    "SCORER_SPOOF_MIN_SOURCES": ("0", {}),
    "SCORER_TARGET_ORIGIN": ("yes please", {}),
    "SCORER_SESSION_TIMEOUT_S": ("0", {}),
    "SCORER_REBALANCE_TIMEOUT_S": ("-1", {}),
    "SCORER_HEARTBEAT_S": ("20", {}),
    "SCORER_OFFSET_RESET": ("middle", {}),
    "SCORER_STANDBY_REPLICAS": ("-1", {}),
    "SCORER_WEB_PORT": ("-1", {}),
    "SCORER_DATADIR": ("/etc/hostname", {}),
    "SCORER_METRICS_PORT": ("99999", {}),
    "SCORER_METRICS_HOST": ("bad_host!", {}),
    "SCORER_LOG_LEVEL": ("loud", {}),
    "ENFORCER_DRY_RUN": ("perhaps", {}),
    "ENFORCER_TTL_S": ("0", {}),
    "ENFORCER_MAX_TTL_S": ("10", {"ENFORCER_TTL_S": "60"}),
    "ENFORCER_MAX_RULES_PER_SECOND": ("0", {}),
    "ENFORCER_MAX_RULES_PER_MINUTE": ("0", {}),
    "ENFORCER_MAX_RULES_PER_SOURCE": ("0", {}),
    "ENFORCER_MAX_MODEL_RULES": ("0", {}),
    "ENFORCER_ALLOWLIST": ("10.0.0.0/8,banana", {}),
    "ENFORCER_PROTECT_ADDRESSES": ("10.0.0.0/8", {}),
    "ENFORCER_GROUP_ID": ("my group", {}),
    "ENFORCER_SWEEP_INTERVAL_MS": ("0", {}),
    "ENFORCER_LEARN_UNTIL": ("2026-12-07 08:00", {}),  # no UTC offset: another moment elsewhere
    "ENFORCER_RESTORE": ("t", {}),
    "ENFORCER_FROM_BEGINNING": ("f", {}),
    "ENFORCER_METRICS_PORT": ("http", {}),
    "ENFORCER_METRICS_HOST": ("", {}),
}


def all_settings():
    for _title, module in SECTIONS:
        for cls in settings_classes(module):
            for env, _default, _doc in describe(cls):
                yield cls, env


def test_every_setting_has_a_bad_value_case():
    assert {env for _, env in all_settings()} == set(BAD)


@pytest.mark.parametrize("cls,env", list(all_settings()), ids=lambda x: getattr(x, "__name__", x))
def test_a_bad_value_is_refused_naming_the_variable(cls, env):
    value, context = BAD[env]
    with pytest.raises(ConfigError) as err:
        load(cls, {**context, env: value})
    text = str(err.value)
    assert env in text and "\n" not in text, text


def test_the_defaults_and_good_values_load():
    for _title, module in SECTIONS:
        for cls in settings_classes(module):
            load(cls, {})
    from services.common.settings import CommonSettings
    s = load(CommonSettings, {"XDPGUARD_KAFKA_BOOTSTRAP": "k1:9092, [::1]:9093",
                              "XDPGUARD_TOPIC_PREFIX": "site-a.", **SASL})
    assert s.kafka_bootstrap.startswith("k1") and s.topic("x") == "site-a.x"


def test_a_scorer_datadir_that_cannot_be_made_is_one_line_before_kafka(tmp_path):
    """SCORER_DATADIR passes its check unless it names a file, but faust makes the folder only
    when the worker starts: /proc/nope/data, or a folder under a file, was a FileNotFoundError
    traceback from faust once Kafka answered. The scorer makes it first (parents too) and says
    in one line which variable is wrong, before it touches Kafka."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "file").write_text("")
    for bad in ("/proc/nope/data", str(tmp_path / "file" / "data")):
        env = dict(os.environ, SCORER_DATADIR=bad, XDPGUARD_KAFKA_BOOTSTRAP="127.0.0.1:1")
        r = subprocess.run([sys.executable, "-m", "services.scorer", "worker"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "SCORER_DATADIR" in lines[0] and bad in lines[0], lines[0]
    # a new folder whose parents do not exist yet is made, not refused (faust made only the last)
    env = dict(os.environ, SCORER_DATADIR=str(tmp_path / "a" / "b"), XDPGUARD_KAFKA_BOOTSTRAP="127.0.0.1:1")
    r = subprocess.run([sys.executable, "-m", "services.scorer", "worker"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=120)
    assert (tmp_path / "a" / "b").is_dir() and "cannot reach Kafka" in r.stderr, r.stderr


@pytest.mark.parametrize("env", ["SCORER_WINDOW_S", "SCORER_LATENESS_S", "SCORER_IDLE_S",
                                 "SCORER_CLOSE_WAIT_S", "SCORER_TICK_S", "SCORER_PASS_TTL_S",
                                 "SCORER_VERDICT_TTL_S", "SCORER_SESSION_TIMEOUT_S",
                                 "SCORER_REBALANCE_TIMEOUT_S"])
def test_a_duration_too_long_for_nanoseconds_is_refused(env):
    """helper-72: SCORER_WINDOW_S=1e308 passed its check (finite, above 0) and the worker died
    in an OverflowError traceback turning it into nanoseconds."""
    from services.scorer.settings import ScorerSettings

    with pytest.raises(ConfigError, match=f"{env}='1e308': .* at most"):
        load(ScorerSettings, {env: "1e308"})


def test_a_metrics_address_the_host_cannot_bind_is_one_config_error():
    """helper-72: SCORER_METRICS_HOST=8.8.8.8 was a 200-line faust traceback (the scorer starts
    its server inside faust's worker); it is checked before, in one line."""
    import socket

    from services.common.health import check_bindable

    check_bindable("127.0.0.1", 0, "X")  # off: nothing to check
    with pytest.raises(ConfigError, match=r"cannot serve metrics on 192\.0\.2\.1:.*\(X_METRICS"):
        check_bindable("192.0.2.1", 19299, "X_METRICS_HOST/PORT")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            check_bindable("127.0.0.1", port, "X")


def test_a_window_too_short_to_count_in_nanoseconds_is_refused():
    """helper-74: SCORER_WINDOW_S=1e-10 passed and became a width of 0 ns: ZeroDivisionError at
    the first window."""
    from services.scorer.settings import ScorerSettings

    with pytest.raises(ConfigError, match="SCORER_WINDOW_S='1e-10': must be at least 0.001"):
        load(ScorerSettings, {"SCORER_WINDOW_S": "1e-10"})
    assert load(ScorerSettings, {"SCORER_WINDOW_S": "0.001"}).window_s == 0.001
    assert load(ScorerSettings, {"SCORER_VERDICT_TTL_S": "0"}).verdict_ttl_s == 0
