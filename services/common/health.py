"""A tiny asyncio HTTP server for a service's Prometheus metrics and health check.

GET /metrics -> prometheus_client text format of `registry`; GET /healthz -> 200 "ok" while
`healthy()` returns (True, detail), else 503 with the detail. It runs on the service's own
event loop (no extra thread), and start()/stop() follow the services' lifecycle.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .errors import ConfigError

log = logging.getLogger("xdpguard.health")


def check_bindable(host: str, port: int, what: str) -> None:
    """ConfigError naming `what` (the service's *_METRICS_HOST/PORT) unless a TCP server can
    bind `host`:`port` now (port 0: nothing to check). For a service that starts its server late,
    inside a framework that turns the OSError into a traceback (the scorer under faust)."""
    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                          f"({what})") from None


class HealthServer:
    def __init__(self, registry: CollectorRegistry, healthy: Callable[[], tuple[bool, str]],
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry, self.healthy, self.host, self.port = registry, healthy, host, port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path in ("/healthz", "/health"):
                ok, detail = self.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain; charset=utf-8", (detail or "ok").encode() + b"\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}"
                         "\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass  # a broken or slow client: nothing to answer
        finally:
            writer.close()
