"""Settings every xdpguard service shares (prefix XDPGUARD_)."""
from __future__ import annotations

from dataclasses import dataclass

from .config import default_node_id, load, setting
from .paths import DEFAULT_PIN_DIR


@dataclass(frozen=True)
class CommonSettings:
    kafka_bootstrap: str = setting(
        "XDPGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers, comma separated")
    topic_prefix: str = setting(
        "XDPGUARD_TOPIC_PREFIX", "xdpguard.", "prefix of every topic name")
    node_id: str = setting(
        "XDPGUARD_NODE_ID", default_node_id, "this host's id in events and verdicts (default: hostname)")
    pin_dir: str = setting(
        "XDPGUARD_PIN_DIR", DEFAULT_PIN_DIR, "where the XDP program's maps are pinned")
    packets_partitions: int = setting(
        "XDPGUARD_PACKETS_PARTITIONS", 8, "partitions of the packets topic (scorer parallelism)")
    verdicts_partitions: int = setting(
        "XDPGUARD_VERDICTS_PARTITIONS", 4, "partitions of the verdicts topic")
    rules_partitions: int = setting(
        "XDPGUARD_RULES_PARTITIONS", 1, "partitions of the compacted rules topic")
    deadletter_partitions: int = setting(
        "XDPGUARD_DEADLETTER_PARTITIONS", 1, "partitions of the dead-letter topic")
    replication_factor: int = setting(
        "XDPGUARD_REPLICATION_FACTOR", 1, "replication factor of topics xdpguard creates")
    security_protocol: str = setting(
        "XDPGUARD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str = setting(
        "XDPGUARD_KAFKA_SASL_MECHANISM", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)")
    sasl_username: str = setting("XDPGUARD_KAFKA_SASL_USERNAME", "", "SASL user name")
    sasl_password: str = setting("XDPGUARD_KAFKA_SASL_PASSWORD", "", "SASL password")
    ssl_cafile: str = setting("XDPGUARD_KAFKA_SSL_CAFILE", "", "CA bundle to verify the brokers (SSL)")
    ssl_certfile: str = setting("XDPGUARD_KAFKA_SSL_CERTFILE", "", "client certificate (mutual TLS)")
    ssl_keyfile: str = setting("XDPGUARD_KAFKA_SSL_KEYFILE", "", "client key (mutual TLS)")

    def __post_init__(self) -> None:
        for name in ("packets_partitions", "verdicts_partitions", "rules_partitions",
                     "deadletter_partitions", "replication_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"unknown Kafka security protocol {self.security_protocol!r}")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def load_common(**overrides) -> CommonSettings:
    return load(CommonSettings, **overrides)
