"""The capture's ring-buffer reader thread and the bounded queue between it and the event loop.

The ring buffer's poll blocks, so it runs in a thread of its own (fastring.FastRing: records
copied in bulk as numpy arrays, no object per event) that hands arrays to the event loop through
a bounded queue (a deque of arrays plus counters): when the queue is full the events are dropped
and counted (`overflow`), never blocking the kernel side. `open()` maps the ring of the program
pinned now and starts the thread; `close()` stops and joins it; the pair runs again when the
program was loaded anew (a new ring). The counters and the queue outlive those switches.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

import numpy as np

log = logging.getLogger("xdpguard.capture")


class RingFeed:
    """Reader thread of the ring pinned in `pin_dir`: at most `queue_events` events wait in
    the queue; each poll waits up to `poll_ms`. The loop calls take() after `wake` is set."""

    def __init__(self, pin_dir: str, queue_events: int, poll_ms: int) -> None:
        self.pin_dir, self.bound, self.poll_ms = pin_dir, queue_events, poll_ms
        self.read = 0              # events taken from the ring buffer
        self.overflow = 0          # events dropped because the queue was full
        self.thread_error: BaseException | None = None
        self.wake = asyncio.Event()
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0           # written by the reader thread ...
        self._taken = 0            # ... and by the loop: backlog = _queued - _taken
        self._reader = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def backlog(self) -> int:
        """Events waiting between the reader thread and the loop."""
        return self._queued - self._taken

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Map the ring pinned now (KernelError: NotLoaded, MapMismatch) and start reading."""
        from .fastring import FastRing

        self._reader = FastRing(self.pin_dir)
        self._loop = loop
        self._stop = threading.Event()
        self.thread_error = None
        self._thread = threading.Thread(target=self._run, args=(self._reader, self._stop),
                                        name="capture-ring", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop the thread (it ends within one poll), then unmap the ring. Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def take(self) -> list[np.ndarray]:
        """Everything queued so far (the loop's side)."""
        out = []
        queue = self._queue
        while queue:
            out.append(queue.popleft())
        self._taken += sum(len(a) for a in out)
        return out

    def _run(self, reader, stop: threading.Event) -> None:
        bound, poll_ms = self.bound, self.poll_ms
        try:
            while not stop.is_set():
                packets = reader.poll(poll_ms)
                n = len(packets)
                if not n:
                    continue
                self.read += n
                if self._queued - self._taken + n > bound:
                    self.overflow += n  # the loop is behind: drop, count, let sampling react
                    continue
                was_empty = not self._queue
                self._queue.append(packets)
                self._queued += n
                if was_empty:
                    self._loop.call_soon_threadsafe(self.wake.set)
        except BaseException as exc:  # the thread must not die silently: health reports it
            self.thread_error = exc
            log.exception("ring reader thread failed")
            self._loop.call_soon_threadsafe(self.wake.set)
