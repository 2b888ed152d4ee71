"""Enforcer settings (prefix ENFORCER_); what all services share is in services.common.settings."""
from __future__ import annotations

from dataclasses import dataclass

from services.common import checks as C
from services.common.config import load, setting


@dataclass(frozen=True)
class EnforcerSettings:
    dry_run: bool = setting(
        "ENFORCER_DRY_RUN", False, "log what would be applied or removed; touch neither maps nor topic")
    ttl_s: float = setting(
        "ENFORCER_TTL_S", 600.0, "TTL of model rules whose verdict names none (seconds)",
        check=C.above(0))
    max_ttl_s: float = setting("ENFORCER_MAX_TTL_S", 3600.0, "longest TTL a verdict may ask for",
                               check=C.above(0))
    max_per_second: int = setting(
        "ENFORCER_MAX_RULES_PER_SECOND", 50, "model rules installed per second, at most",
        check=C.at_least(1))
    max_per_minute: int = setting(
        "ENFORCER_MAX_RULES_PER_MINUTE", 1000, "model rules installed per minute, at most",
        check=C.at_least(1))
    max_per_source: int = setting(
        "ENFORCER_MAX_RULES_PER_SOURCE", 32, "installed model rules targeting one source, at most",
        check=C.at_least(1))
    max_model_rules: int = setting(
        "ENFORCER_MAX_MODEL_RULES", 50_000, "installed model rules, at most; the oldest are evicted "
        "beyond it (manual rules never)", check=C.at_least(1))
    allowlist: tuple = setting(
        "ENFORCER_ALLOWLIST", (), "extra CIDRs never blocked (loopback and the Kafka bootstrap "
        "addresses are always allowlisted)", check=C.networks)
    protect: tuple = setting(
        "ENFORCER_PROTECT_ADDRESSES", (), "extra addresses treated as local (never a verdict's "
        "target); the host's own addresses are found at start", check=C.addresses)
    group_id: str = setting(
        "ENFORCER_GROUP_ID", "", "consumer group for verdicts (default <topic prefix>enforcer-<node "
        "id>)", check=C.kafka_name(allow_empty=True))
    sweep_interval_ms: int = setting(
        "ENFORCER_SWEEP_INTERVAL_MS", 1000, "how often expired rules are removed and tombstoned",
        check=C.at_least(1))
    learn_until: str = setting(
        "ENFORCER_LEARN_UNTIL", "", "learning mode until this moment (ISO 8601 with Z or an offset, "
        "or Unix seconds): model rules are only logged and counted, manual rules and the "
        "allowlist applied; empty = enforce from the start", check=C.instant_or_empty)
    restore: bool = setting(
        "ENFORCER_RESTORE", True, "restore this node's rules from the rules topic at start")
    from_beginning: bool = setting(
        "ENFORCER_FROM_BEGINNING", False, "a new consumer group starts at the oldest verdict "
        "(default: only verdicts published from now on)")
    metrics_port: int = setting(
        "ENFORCER_METRICS_PORT", 9102, "Prometheus /metrics and /healthz port (0 = off)",
        check=C.port)
    metrics_host: str = setting(
        "ENFORCER_METRICS_HOST", "127.0.0.1", "address the metrics server binds", check=C.host)

    def __post_init__(self) -> None:
        if self.max_ttl_s < self.ttl_s:
            raise ValueError("ENFORCER_MAX_TTL_S must be at least ENFORCER_TTL_S")


def load_enforcer(**overrides) -> EnforcerSettings:
    """The ENFORCER_ settings from the environment; ConfigError naming the variable."""
    return load(EnforcerSettings, **overrides)
