"""Kafka client options built from CommonSettings, so every client honours TLS/SASL the same way."""
from __future__ import annotations

import asyncio
from typing import Any

from services.common.settings import CommonSettings


def client_options(common: CommonSettings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
    opts: dict[str, Any] = {
        "bootstrap_servers": common.kafka_bootstrap,
        "security_protocol": common.security_protocol,
    }
    if common.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(
            cafile=common.ssl_cafile or None,
            certfile=common.ssl_certfile or None,
            keyfile=common.ssl_keyfile or None,
        )
    if common.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = common.sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = common.sasl_username
        opts["sasl_plain_password"] = common.sasl_password
    return opts


def bootstrap_hosts(common: CommonSettings) -> list[str]:
    """Host part of each bootstrap server (used to allowlist the brokers)."""
    hosts = []
    for server in common.kafka_bootstrap.split(","):
        server = server.strip()
        if not server:
            continue
        if server.startswith("["):
            hosts.append(server[1:server.index("]")])
        else:
            hosts.append(server.rsplit(":", 1)[0])
    return hosts


async def stop_quietly(client) -> None:
    """Stop an aiokafka client. aiokafka 0.14 can raise the CancelledError of its own internal
    task when a consumer is stopped right after it started; that one is not ours to propagate,
    a cancellation of the calling task is."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
