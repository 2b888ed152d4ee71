"""Settings every xdpguard service shares (prefix XDPGUARD_)."""
from __future__ import annotations

from dataclasses import dataclass

from . import checks as C
from .config import default_node_id, load, setting
from .paths import DEFAULT_PIN_DIR

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class CommonSettings:
    kafka_bootstrap: str = setting(
        "XDPGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers, comma separated",
        check=C.bootstrap)
    topic_prefix: str = setting(
        "XDPGUARD_TOPIC_PREFIX", "xdpguard.", "prefix of every topic name (and of the consumer "
        "groups): one deployment's topics", check=C.kafka_name())
    node_id: str = setting(
        "XDPGUARD_NODE_ID", default_node_id, "this host's id in events and verdicts (default: hostname)",
        check=C.kafka_name())
    pin_dir: str = setting(
        "XDPGUARD_PIN_DIR", DEFAULT_PIN_DIR, "where the XDP program's maps are pinned",
        check=C.absolute_path)
    packets_partitions: int = setting(
        "XDPGUARD_PACKETS_PARTITIONS", 8, "partitions of the packets topic (scorer parallelism)",
        check=C.at_least(1))
    verdicts_partitions: int = setting(
        "XDPGUARD_VERDICTS_PARTITIONS", 4, "partitions of the verdicts topic", check=C.at_least(1))
    rules_partitions: int = setting(
        "XDPGUARD_RULES_PARTITIONS", 1, "partitions of the compacted rules topic", check=C.at_least(1))
    deadletter_partitions: int = setting(
        "XDPGUARD_DEADLETTER_PARTITIONS", 1, "partitions of the dead-letter topic", check=C.at_least(1))
    replication_factor: int = setting(
        "XDPGUARD_REPLICATION_FACTOR", 1, "replication factor of topics xdpguard creates",
        check=C.at_least(1))
    security_protocol: str = setting(
        "XDPGUARD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        check=C.one_of(*SECURITY_PROTOCOLS))
    sasl_mechanism: str = setting(
        "XDPGUARD_KAFKA_SASL_MECHANISM", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)",
        check=C.one_of("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    sasl_username: str = setting("XDPGUARD_KAFKA_SASL_USERNAME", "",
                                 "SASL user name (required with SASL_*)")
    sasl_password: str = setting("XDPGUARD_KAFKA_SASL_PASSWORD", "",
                                 "SASL password (required with SASL_*)")
    ssl_cafile: str = setting("XDPGUARD_KAFKA_SSL_CAFILE", "", "CA bundle to verify the brokers (SSL)",
                              check=C.file_or_empty)
    ssl_certfile: str = setting("XDPGUARD_KAFKA_SSL_CERTFILE", "", "client certificate (mutual TLS)",
                                check=C.file_or_empty)
    ssl_keyfile: str = setting("XDPGUARD_KAFKA_SSL_KEYFILE", "", "client key (mutual TLS)",
                               check=C.file_or_empty)

    def __post_init__(self) -> None:
        if self.security_protocol.startswith("SASL"):
            for env, value in (("XDPGUARD_KAFKA_SASL_USERNAME", self.sasl_username),
                               ("XDPGUARD_KAFKA_SASL_PASSWORD", self.sasl_password)):
                if not value:
                    raise ValueError(f"{env} must be set with XDPGUARD_KAFKA_SECURITY_PROTOCOL="
                                     f"{self.security_protocol}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("XDPGUARD_KAFKA_SSL_CERTFILE and XDPGUARD_KAFKA_SSL_KEYFILE go "
                             "together (mutual TLS): set both or neither")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def load_common(**overrides) -> CommonSettings:
    """The XDPGUARD_ settings from the environment (`overrides` by field name win);
    ConfigError naming the variable when one is refused."""
    return load(CommonSettings, **overrides)
