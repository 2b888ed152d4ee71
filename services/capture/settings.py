"""Capture settings (prefix CAPTURE_); what all services share is in services.common.settings."""
from __future__ import annotations

from dataclasses import dataclass

from services.common import checks as C
from services.common.config import load, setting

COMPRESSIONS = ("lz4", "zstd", "snappy", "gzip", "none")


@dataclass(frozen=True)
class CaptureSettings:
    interfaces: tuple = setting(
        "CAPTURE_INTERFACES", (), "interfaces to load XDP on (comma separated); empty: attach to the "
        "pinned maps of a program already loaded", check=C.ifnames)
    xdp_mode: str = setting("CAPTURE_XDP_MODE", "auto", "native, generic or auto (when loading)",
                            check=C.one_of("native", "generic", "auto"))
    unload_on_exit: bool = setting(
        "CAPTURE_UNLOAD_ON_EXIT", False, "detach the XDP program it loaded when it stops (rules and "
        "enforcement stop with it, so off by default)")
    queue_events: int = setting(
        "CAPTURE_QUEUE_EVENTS", 262_144, "bound of the queue between the ring-buffer thread and the "
        "event loop (events); overflow is counted", check=C.at_least(1))
    buffer_events: int = setting(
        "CAPTURE_BUFFER_EVENTS", 1_000_000, "events held (pending + in flight) while Kafka is slow or "
        "unreachable; beyond it new events are refused and counted", check=C.at_least(1))
    batch_events: int = setting(
        "CAPTURE_BATCH_EVENTS", 256, "events per Kafka record (one micro-batch per partition), "
        "1-65536", check=C.between(1, 65536))
    linger_ms: int = setting(
        "CAPTURE_LINGER_MS", 5, "longest wait for a fuller micro-batch before sending",
        check=C.at_least(0))
    compression: str = setting(
        "CAPTURE_COMPRESSION", "lz4", "Kafka compression: lz4, zstd, snappy, gzip or none (gzip "
        "runs at level 9 in Python: ~5x slower)", check=C.one_of(*COMPRESSIONS, ""))
    request_timeout_ms: int = setting(
        "CAPTURE_REQUEST_TIMEOUT_MS", 10_000, "a produce not acknowledged in this time is retried "
        "from the capture's own buffer", check=C.at_least(1))
    poll_ms: int = setting("CAPTURE_POLL_MS", 100, "ring-buffer poll timeout of the reader thread",
                           check=C.at_least(1))
    sample_rate: int = setting(
        "CAPTURE_SAMPLE_RATE", 1, "initial and lowest 1-in-N kernel sampling rate", check=C.at_least(1))
    max_sample_rate: int = setting(
        "CAPTURE_MAX_SAMPLE_RATE", 1024, "highest sampling rate the capture raises to under overload",
        check=C.at_least(1))
    adapt_interval_ms: int = setting(
        "CAPTURE_ADAPT_INTERVAL_MS", 500, "how often the sampling rate is reconsidered",
        check=C.at_least(1))
    adaptive: bool = setting(
        "CAPTURE_ADAPTIVE_SAMPLING", True, "raise/lower the kernel sampling rate with the backlog")
    metrics_port: int = setting(
        "CAPTURE_METRICS_PORT", 9101, "Prometheus /metrics and /healthz port (0 = off)", check=C.port)
    metrics_host: str = setting(
        "CAPTURE_METRICS_HOST", "127.0.0.1", "address the metrics server binds", check=C.host)

    def __post_init__(self) -> None:
        if self.max_sample_rate < self.sample_rate:
            raise ValueError("CAPTURE_MAX_SAMPLE_RATE must be at least CAPTURE_SAMPLE_RATE")
        if self.compression == "none":
            object.__setattr__(self, "compression", "")


def load_capture(**overrides) -> CaptureSettings:
    """The CAPTURE_ settings from the environment; ConfigError naming the variable."""
    return load(CaptureSettings, **overrides)
