"""Running a long-lived service: uvloop, logging, metrics server, and signals.

`serve(service, ...)` calls service.start(), runs service.run() until it ends or a signal comes,
then service.stop(). The first SIGTERM/SIGINT asks (stop drains what is in flight); a second one
forces (service.abort_drain() cuts the drain short; clients are still stopped in finally).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from .errors import ConfigError
from .health import HealthServer

log = logging.getLogger("xdpguard")


def setup_logging(name: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # its reconnect noise; we log our own


async def serve(service, *, metrics_host: str = "127.0.0.1", metrics_port: int = 0) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: stopping (send it again to force)", signal.Signals(signum).name)
            stop.set()
        else:
            log.warning("%s again: forcing stop", signal.Signals(signum).name)
            abort = getattr(service, "abort_drain", None)
            if abort:
                abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    health = None
    if metrics_port:
        health = HealthServer(service.registry if hasattr(service, "registry")
                              else service.metrics.registry, service.healthy,
                              metrics_host, metrics_port)
    run = None
    try:
        if health is not None:
            try:
                await health.start()
            except OSError as exc:  # port taken, address not local: the settings' fault
                raise ConfigError(f"cannot serve metrics on {metrics_host}:{metrics_port}: "
                                  f"{exc.strerror or exc} (the service's *_METRICS_HOST/PORT)"
                                  ) from None
        # aiokafka logs every failed connection attempt as an error; a start that fails is
        # reported once, in the service's own line, so it is quiet until the start is done.
        kafka_log = logging.getLogger("aiokafka")
        level = kafka_log.level
        kafka_log.setLevel(logging.CRITICAL)
        try:
            await service.start()
        finally:
            kafka_log.setLevel(level)
        run = asyncio.create_task(service.run())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if run.done() and not run.cancelled() and run.exception() is not None:
            exc = run.exception()
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # "unhandled errors in a TaskGroup" names nothing
            log.error("service failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            return 1
        return 0
    finally:
        if run is not None and not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        try:
            await service.stop()
        finally:
            if health is not None:
                await health.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def run_main(main_coro_factory) -> int:
    import uvloop
    return uvloop.run(main_coro_factory())
