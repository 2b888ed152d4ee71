"""Kafka security settings (TLS, SASL PLAIN/SCRAM) reach every Kafka client through the same
XDPGUARD_KAFKA_* settings: client_options() builds a verifying TLS context and the SASL fields,
aiokafka producers, consumers and admin clients accept them, the scorer's faust app gets the same
as broker credentials, a bad value fails fast naming the variable, and no Kafka client in the
product code is built without client_options() (so none can silently fall back to plaintext).
No CI test runs against a TLS/SASL broker (docs/reliability.md says so)."""
from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from services.common.config import load
from services.common.errors import ConfigError
from services.wire.kafka import client_options
from services.common.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
CA = "/etc/ssl/certs/ca-certificates.crt"


def settings(**env) -> CommonSettings:
    return load(CommonSettings, environ={f"XDPGUARD_KAFKA_{k.upper()}": v for k, v in env.items()})


@pytest.mark.parametrize("protocol,mechanism", [
    ("SSL", ""), ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "PLAIN")])
async def test_rel_security_settings_reach_every_kind_of_client(protocol, mechanism):
    if "SSL" in protocol and not Path(CA).exists():
        pytest.skip(f"{CA} missing")
    common = settings(security_protocol=protocol, sasl_mechanism=mechanism, sasl_username="xdp",
                      sasl_password="s3cret", ssl_cafile=CA if "SSL" in protocol else "")
    opts = client_options(common)
    assert opts["security_protocol"] == protocol
    if "SSL" in protocol:
        ctx = opts["ssl_context"]
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    if protocol.startswith("SASL"):
        assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) \
            == (mechanism, "xdp", "s3cret")
    # the clients accept the combination (they validate it when constructed)
    for make in (lambda: AIOKafkaProducer(**opts), lambda: AIOKafkaConsumer(**opts),
                 lambda: AIOKafkaAdminClient(**opts)):
        client = make()
        if hasattr(client, "_client"):
            await client._client.close()


def test_rel_the_scorer_gets_the_same_credentials():
    import faust

    from services.scorer.app import faust_settings
    from services.scorer.settings import ScorerSettings

    common = settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="xdp", sasl_password="s3cret", ssl_cafile=CA)
    creds = faust_settings(ScorerSettings(), common)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("xdp", "s3cret")
    assert getattr(creds.mechanism, "value", creds.mechanism) == "SCRAM-SHA-512" and creds.ssl_context is not None
    tls = faust_settings(ScorerSettings(), settings(security_protocol="SSL", ssl_cafile=CA))
    assert isinstance(tls["broker_credentials"], faust.SSLCredentials)
    assert "broker_credentials" not in faust_settings(ScorerSettings(), settings())


def test_rel_a_bad_protocol_fails_fast_naming_the_variable():
    with pytest.raises(ConfigError, match="XDPGUARD_KAFKA_SECURITY_PROTOCOL='TLS'"):
        settings(security_protocol="TLS")


def test_rel_every_kafka_client_is_built_from_client_options():
    """AST check over services/: each AIOKafkaProducer/Consumer/AdminClient call passes
    **client_options(...), directly or through a factory that does."""
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func).rsplit(".", 1)[-1]
            if name not in ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"):
                continue
            spread = [ast.unparse(k.value) for k in node.keywords if k.arg is None]
            if not any("client_options(" in s for s in spread):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
