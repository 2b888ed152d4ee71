"""Scorer settings (prefix SCORER_), read once at start through services.common.config."""
from __future__ import annotations

from dataclasses import dataclass

from services.common.config import load, setting
from services.detection.model import DEFAULT_MODEL


@dataclass(frozen=True)
class ScorerSettings:
    app_id: str = setting("SCORER_APP_ID", "xdpguard-scorer",
                          "faust app id = consumer group; the topic prefix is prepended")
    window_s: float = setting("SCORER_WINDOW_S", 1.0, "tumbling event-time window length, seconds")
    lateness_s: float = setting("SCORER_LATENESS_S", 0.1,
                                "a window closes when the watermark passes its end + this")
    max_future_s: float = setting("SCORER_MAX_FUTURE_S", 10.0,
                                  "events stamped further ahead of this host's clock are refused "
                                  "(counted per capture node); nor do windows close ahead of it")
    idle_s: float = setting("SCORER_IDLE_S", 0.3,
                            "after this long without records the wall clock moves a caught-up "
                            "partition's watermark (closes the last window of a burst)")
    # Above the group session timeout (10 s): a partition is orphaned at most that long, and a
    # live worker stalled by a saturated CPU must not pass for a dead one (2 s did, in 2 of 10
    # two-worker bench runs: a window closed without that partition's flows).
    close_wait_s: float = setting("SCORER_CLOSE_WAIT_S", 12.0,
                                  "stage 2 stops waiting for a source partition silent this long "
                                  "(no owner: keep above SCORER_SESSION_TIMEOUT_S)")
    tick_s: float = setting("SCORER_TICK_S", 0.05, "how often windows are checked for closing")
    model: str = setting("SCORER_MODEL", str(DEFAULT_MODEL), "model file (.joblib beside its .json)")
    emit_pass: bool = setting("SCORER_EMIT_PASS", False, "also publish pass verdicts for normal flows")
    pass_ttl_s: float = setting("SCORER_PASS_TTL_S", 60.0, "TTL of pass verdicts, seconds")
    verdict_ttl_s: float = setting("SCORER_VERDICT_TTL_S", 600.0, "TTL of drop/limit verdicts (0 = none)")
    limit_pps: int = setting("SCORER_LIMIT_PPS", 50, "packets/s a flooded destination still gets")
    spoof_min_sources: int = setting("SCORER_SPOOF_MIN_SOURCES", 32,
                                     "anomalous sources to one destination that make a rate limit")
    target_origin: bool = setting("SCORER_TARGET_ORIGIN", False,
                                  "exact-flow verdicts go to the capturing node only (else all nodes)")
    session_timeout_s: float = setting("SCORER_SESSION_TIMEOUT_S", 10.0, "Kafka group session timeout")
    rebalance_timeout_s: float = setting("SCORER_REBALANCE_TIMEOUT_S", 10.0, "Kafka rebalance timeout")
    heartbeat_s: float = setting("SCORER_HEARTBEAT_S", 1.0, "Kafka group heartbeat interval")
    offset_reset: str = setting("SCORER_OFFSET_RESET", "earliest",
                                "where a new group starts reading packets: earliest or latest")
    standby_replicas: int = setting("SCORER_STANDBY_REPLICAS", 0,
                                    "faust standby replicas of the window tables (the memory "
                                    "store drops standby data, so a new owner reads the "
                                    "compacted changelog either way)")
    web_port: int = setting("SCORER_WEB_PORT", 0, "faust web server port (0 = faust web disabled)")
    datadir: str = setting("SCORER_DATADIR", "", "faust data directory (default: ./<app id>-data)")
    metrics_port: int = setting("SCORER_METRICS_PORT", 0,
                                "Prometheus /metrics and /healthz port (0 = off)")
    metrics_host: str = setting("SCORER_METRICS_HOST", "127.0.0.1", "address of the metrics server")
    log_level: str = setting("SCORER_LOG_LEVEL", "info", "faust worker log level: crit, error, warn, info or debug")

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.lateness_s < 0 or self.close_wait_s < 0 or self.tick_s <= 0:
            raise ValueError("SCORER_WINDOW_S/TICK_S must be > 0, LATENESS_S/CLOSE_WAIT_S >= 0")
        if not 0 <= self.max_future_s <= 86400:
            raise ValueError("SCORER_MAX_FUTURE_S must be 0-86400 seconds")
        if self.offset_reset not in ("earliest", "latest"):
            raise ValueError("SCORER_OFFSET_RESET must be earliest or latest")
        if self.log_level not in ("crit", "error", "warn", "info", "debug"):
            raise ValueError("SCORER_LOG_LEVEL must be crit, error, warn, info or debug")
        if self.heartbeat_s >= self.session_timeout_s:
            raise ValueError("SCORER_HEARTBEAT_S must be below SCORER_SESSION_TIMEOUT_S")


def load_scorer(**overrides) -> ScorerSettings:
    return load(ScorerSettings, **overrides)
