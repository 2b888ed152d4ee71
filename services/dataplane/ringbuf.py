"""Read sampled packet events from the PINNED ring buffer of an already loaded program.

libbpf's ring_buffer__new/poll (bundled in libbcc) on the pinned map's fd, so a separate
process (the capture service, `xdpguard monitor`) reads the live program's events without
reloading it. Kernel monotonic timestamps become Unix epoch ns; `raw_ts` keeps the monotonic
value for the original tool's log format. Several readers of one ring compete for events: run one.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading

from services.common.errors import KernelError
from services.common.paths import DEFAULT_PIN_DIR
from services.records.packet import Packet

from . import bpfsys
from .datapath import mono_offset_ns
from .maps import open_checked
from .structs import Config, Event, Stats, addr_text

EVENT_SIZE = ctypes.sizeof(Event)
_addr = functools.lru_cache(maxsize=65536)(lambda raw: addr_text(raw))  # ipaddress is slow


def event_to_packet(ev: Event, offset_ns: int, sample_rate: int = 1, node: str = "") -> Packet:
    return Packet(ts_ns=ev.ts_ns + offset_ns, src=_addr(bytes(ev.saddr)), dst=_addr(bytes(ev.daddr)),
                  sport=ev.sport, dport=ev.dport, proto=ev.proto, tcp_flags=ev.tcp_flags,
                  length=ev.len, ifindex=ev.ifindex, sample_rate=sample_rate, node=node,
                  icmp_type=ev.icmp_type)


class RingReader:
    """poll(timeout_ms) -> list[Packet]; lost() -> events the kernel could not queue since open.

    One thread at a time may poll (the capture service gives it a dedicated thread); close()
    may be called from another thread once polling has stopped."""

    def __init__(self, pin_dir: str = DEFAULT_PIN_DIR, node: str = ""):
        """Open the pinned `events`, `stats` and `config` maps after the pins' compatibility
        check (services.dataplane.maps.open_checked): NotLoaded if missing, MapMismatch if of
        another build."""
        self.node = node
        self._fd = self._stats_fd = self._config_fd = -1
        self._rb = None
        try:
            _, opened = open_checked(pin_dir, ("config", "events", "stats"))
            self._config_fd, self._fd, self._stats_fd = (
                opened[n][0] for n in ("config", "events", "stats"))
            self._batch: list[Packet] = []
            self._raw: list[int] = []
            self._cb = bpfsys.RingSampleFn(self._on_event)  # keep a reference: C holds it
            rb = bpfsys.lib().ring_buffer__new(self._fd, ctypes.cast(self._cb, ctypes.c_void_p),
                                               None, None)
            if not rb:
                raise KernelError(f"ring_buffer__new on {pin_dir}/events: "
                                  f"{os.strerror(ctypes.get_errno())}")
            self._rb = rb
        except BaseException:
            self._close_fds()
            raise
        self._lock = threading.Lock()
        self._offset = mono_offset_ns()
        self._rate = self._sample_rate()
        self._lost0 = self._kernel_lost()

    def _on_event(self, _ctx, data, size) -> int:
        if size < EVENT_SIZE:
            return 0
        ev = Event.from_buffer_copy(ctypes.string_at(data, EVENT_SIZE))
        self._raw.append(ev.ts_ns)
        self._batch.append(event_to_packet(ev, self._offset, self._rate, self.node))
        return 0

    def _sample_rate(self) -> int:
        cfg = Config()
        bpfsys.lookup(self._config_fd, ctypes.c_uint32(0), cfg)
        return cfg.sample_rate

    def _kernel_lost(self) -> int:
        arr = (Stats * bpfsys.possible_cpus())()
        bpfsys.lookup(self._stats_fd, ctypes.c_uint32(0), arr)
        return sum(s.events_lost for s in arr)

    def poll(self, timeout_ms: int = 100) -> list[Packet]:
        """Wait up to timeout_ms for events; returns those read (possibly none)."""
        with self._lock:
            if self._rb is None:
                raise KernelError("ring reader is closed")
            self._rate = self._sample_rate()
            self._batch, self._raw = [], []
            rc = bpfsys.lib().ring_buffer__poll(self._rb, timeout_ms)
            if rc < 0 and -rc != 4:  # EINTR: a signal arrived, return what we have
                raise KernelError(f"ring_buffer__poll: {os.strerror(-rc)}")
            return self._batch

    def last_raw_ts(self) -> list[int]:
        """Monotonic timestamps of the last poll's packets, in order (the original tool's log format)."""
        return list(self._raw)

    def lost(self) -> int:
        return self._kernel_lost() - self._lost0

    def _close_fds(self) -> None:
        for fd in (self._fd, self._stats_fd, self._config_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._stats_fd = self._config_fd = -1

    def close(self) -> None:
        with self._lock:
            if self._rb is not None:
                bpfsys.lib().ring_buffer__free(self._rb)
                self._rb = None
                self._close_fds()

    def __enter__(self) -> "RingReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
