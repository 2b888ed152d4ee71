"""Scorer settings (prefix SCORER_), read once at start through services.common.config."""
from __future__ import annotations

from dataclasses import dataclass

from services.common import checks as C
from services.common.config import load, setting
from services.detection.model import DEFAULT_MODEL


@dataclass(frozen=True)
class ScorerSettings:
    app_id: str = setting("SCORER_APP_ID", "xdpguard-scorer",
                          "faust app id = consumer group; the topic prefix is prepended",
                          check=C.kafka_name())
    window_s: float = setting("SCORER_WINDOW_S", 1.0, "tumbling event-time window length, seconds",
                              check=C.seconds(3600, lo=0.001))
    lateness_s: float = setting("SCORER_LATENESS_S", 0.1,
                                "a window closes when the watermark passes its end + this",
                                check=C.seconds(3600, zero=True))
    max_future_s: float = setting("SCORER_MAX_FUTURE_S", 10.0,
                                  "events stamped further ahead of this host's clock are refused "
                                  "(counted per capture node); nor do windows close ahead of it",
                                  check=C.between(0, 86400))
    idle_s: float = setting("SCORER_IDLE_S", 0.3,
                            "after this long without records the wall clock moves a caught-up "
                            "partition's watermark (closes the last window of a burst)",
                            check=C.seconds(3600))
    # Above the group session timeout (10 s): a partition is orphaned at most that long, and a
    # live worker stalled by a saturated CPU must not pass for a dead one (2 s did, in 2 of 10
    # two-worker bench runs: a window closed without that partition's flows).
    close_wait_s: float = setting("SCORER_CLOSE_WAIT_S", 12.0,
                                  "stage 2 stops waiting for a source partition, or another stage "
                                  "2 partition's tally mark, silent this long (no owner: keep above "
                                  "SCORER_SESSION_TIMEOUT_S)",
                                  check=C.seconds(86400, zero=True))
    gc_young: int = setting("SCORER_GC_YOUNG", 50000,
                            "net new objects between the cyclic garbage collector's young "
                            "passes (Python's default 700; 0 = leave Python's thresholds)",
                            check=C.at_least(0))
    fetch_wait_s: float = setting("SCORER_FETCH_WAIT_S", 0.1,
                                  "longest the broker holds a fetch with nothing new to return "
                                  "(faust's own: 1.5 s; records arriving meanwhile for partitions "
                                  "left out of that fetch wait for it: docs/scorer.md)",
                                  check=C.between(0.001, 1.5))
    tick_s: float = setting("SCORER_TICK_S", 0.05, "how often windows are checked for closing",
                            check=C.seconds(60))
    model: str = setting("SCORER_MODEL", str(DEFAULT_MODEL), "model file (.joblib beside its .json)",
                         check=C.existing_file)
    model_lead_s: float = setting("SCORER_MODEL_LEAD_S", 10.0,
                                  "a window closer than this to the last time the worker read the "
                                  "models topic to its end waits (the --lead of xdpguard models "
                                  "must be at least this)", check=C.between(1, 3600))
    emit_pass: bool = setting("SCORER_EMIT_PASS", False, "also publish pass verdicts for normal flows")
    pass_ttl_s: float = setting("SCORER_PASS_TTL_S", 60.0, "TTL of pass verdicts, seconds",
                                check=C.seconds(86400 * 365))
    verdict_ttl_s: float = setting("SCORER_VERDICT_TTL_S", 600.0,
                                   "TTL of drop/limit verdicts (0 = none)",
                                   check=C.seconds(86400 * 365, zero=True))
    limit_pps: int = setting("SCORER_LIMIT_PPS", 50, "packets/s a flooded destination still gets",
                             check=C.at_least(1))
    spoof_min_sources: int = setting("SCORER_SPOOF_MIN_SOURCES", 32,
                                     "anomalous sources to one destination that make a rate limit",
                                     check=C.at_least(1))
    target_origin: bool = setting("SCORER_TARGET_ORIGIN", False,
                                  "exact-flow verdicts go to the capturing node only (else all nodes)")
    session_timeout_s: float = setting("SCORER_SESSION_TIMEOUT_S", 10.0,
                                       "Kafka group session timeout", check=C.seconds(3600))
    rebalance_timeout_s: float = setting("SCORER_REBALANCE_TIMEOUT_S", 10.0,
                                         "Kafka rebalance timeout", check=C.seconds(3600))
    heartbeat_s: float = setting("SCORER_HEARTBEAT_S", 1.0, "Kafka group heartbeat interval",
                                 check=C.seconds(3600))
    offset_reset: str = setting("SCORER_OFFSET_RESET", "earliest",
                                "where a new group starts reading packets: earliest or latest",
                                check=C.one_of("earliest", "latest"))
    standby_replicas: int = setting("SCORER_STANDBY_REPLICAS", 0,
                                    "faust standby replicas of the window tables (the memory "
                                    "store drops standby data, so a new owner reads the "
                                    "compacted changelog either way)", check=C.at_least(0))
    web_port: int = setting("SCORER_WEB_PORT", 0, "faust web server port (0 = faust web disabled)",
                            check=C.port)
    datadir: str = setting("SCORER_DATADIR", "", "faust data directory (default: ./<app id>-data)",
                           check=C.not_a_file)
    metrics_port: int = setting("SCORER_METRICS_PORT", 0,
                                "Prometheus /metrics and /healthz port (0 = off)", check=C.port)
    metrics_host: str = setting("SCORER_METRICS_HOST", "127.0.0.1", "address of the metrics server",
                                check=C.host)
    log_level: str = setting("SCORER_LOG_LEVEL", "info",
                             "faust worker log level: crit, error, warn, info or debug",
                             check=C.one_of("crit", "error", "warn", "info", "debug"))

    def __post_init__(self) -> None:
        if self.heartbeat_s >= self.session_timeout_s:
            raise ValueError("SCORER_HEARTBEAT_S must be below SCORER_SESSION_TIMEOUT_S")


def load_scorer(**overrides) -> ScorerSettings:
    """The SCORER_ settings from the environment; ConfigError naming the variable."""
    return load(ScorerSettings, **overrides)
