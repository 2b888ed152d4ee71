"""Capture settings (prefix CAPTURE_); what all services share is in services.common.settings."""
from __future__ import annotations

from dataclasses import dataclass

from services.common.config import load, setting


@dataclass(frozen=True)
class CaptureSettings:
    interfaces: tuple = setting(
        "CAPTURE_INTERFACES", (), "interfaces to load XDP on (comma separated); empty: attach to the "
        "pinned maps of a program already loaded")
    xdp_mode: str = setting("CAPTURE_XDP_MODE", "auto", "native, generic or auto (when loading)")
    unload_on_exit: bool = setting(
        "CAPTURE_UNLOAD_ON_EXIT", False, "detach the XDP program it loaded when it stops (rules and "
        "enforcement stop with it, so off by default)")
    queue_events: int = setting(
        "CAPTURE_QUEUE_EVENTS", 262_144, "bound of the queue between the ring-buffer thread and the "
        "event loop (events); overflow is counted")
    buffer_events: int = setting(
        "CAPTURE_BUFFER_EVENTS", 1_000_000, "events held (pending + in flight) while Kafka is slow or "
        "unreachable; beyond it new events are refused and counted")
    batch_events: int = setting(
        "CAPTURE_BATCH_EVENTS", 256, "events per Kafka record (one micro-batch per partition)")
    linger_ms: int = setting(
        "CAPTURE_LINGER_MS", 5, "longest wait for a fuller micro-batch before sending")
    compression: str = setting(
        "CAPTURE_COMPRESSION", "lz4", "Kafka compression: lz4, zstd, snappy, gzip or none (gzip "
        "runs at level 9 in Python: ~5x slower)")
    request_timeout_ms: int = setting(
        "CAPTURE_REQUEST_TIMEOUT_MS", 10_000, "a produce not acknowledged in this time is retried "
        "from the capture's own buffer")
    poll_ms: int = setting("CAPTURE_POLL_MS", 100, "ring-buffer poll timeout of the reader thread")
    sample_rate: int = setting(
        "CAPTURE_SAMPLE_RATE", 1, "initial and lowest 1-in-N kernel sampling rate")
    max_sample_rate: int = setting(
        "CAPTURE_MAX_SAMPLE_RATE", 1024, "highest sampling rate the capture raises to under overload")
    adapt_interval_ms: int = setting(
        "CAPTURE_ADAPT_INTERVAL_MS", 500, "how often the sampling rate is reconsidered")
    adaptive: bool = setting(
        "CAPTURE_ADAPTIVE_SAMPLING", True, "raise/lower the kernel sampling rate with the backlog")
    metrics_port: int = setting(
        "CAPTURE_METRICS_PORT", 9101, "Prometheus /metrics and /healthz port (0 = off)")
    metrics_host: str = setting("CAPTURE_METRICS_HOST", "127.0.0.1", "address the metrics server binds")

    def __post_init__(self) -> None:
        if self.xdp_mode not in ("native", "generic", "auto"):
            raise ValueError(f"CAPTURE_XDP_MODE must be native, generic or auto, not {self.xdp_mode!r}")
        for name in ("queue_events", "buffer_events", "batch_events", "sample_rate", "poll_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_sample_rate < self.sample_rate:
            raise ValueError("CAPTURE_MAX_SAMPLE_RATE must be at least CAPTURE_SAMPLE_RATE")
        if self.compression == "none":
            object.__setattr__(self, "compression", "")


def load_capture(**overrides) -> CaptureSettings:
    return load(CaptureSettings, **overrides)
