"""An exclusive flock(2) on the pin directory: edits of the pinned maps, one process at a time.

Several processes edit the same pinned maps: the enforcer, `xdpguard add/del/allow/monitor`,
`xdpguard load/unload`. Some edits span maps: adding a limit rule writes `limit_stats` and
`dst_limit`, then rebuilds the destination's `limit_dst` entry from a full scan of `dst_limit`.
Two such edits at once can each rebuild from a scan that misses the other's new rule, and the
later write wins: a TCP-flag mask silently dropped from `limit_dst`, so its rule never matches.
So every writer holds this lock for its whole update, as xdp-tools' prog_lock_acquire() holds an
flock on its bpffs directory: a multi-map update is atomic with respect to every other xdpguard
writer. Readers and the XDP program itself take no lock (the program may see an update half
done for a few microseconds; docs/dataplane.md says what that means).

flock locks belong to an open file description, so a second PinLock in the same process waits
for the first like another process would; one PinLock is re-entrant (a method that holds it may
call another that takes it) and safe to share between threads.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time

from services.common.errors import KernelError

from .ringowners import command_of


class PinDirBusy(KernelError):
    """Another process held the pin directory's lock for longer than the timeout."""
    retriable = True


class PinLock:
    """`with PinLock(pin_dir):` holds an exclusive flock on `pin_dir`.

    timeout_s: how long to wait for another holder before PinDirBusy (None: wait forever).
    create: make the directory if missing (the loader; `mode` as os.makedirs takes it, the
    umask applied). Otherwise a missing directory means no
    program is pinned there, so no other process can open the maps a writer still holds (an
    unload removed them): there is nobody to keep out and the lock holds nothing."""

    def __init__(self, pin_dir: str, timeout_s: float | None = 5.0, create: bool = False,
                 mode: int = 0o777):
        self.pin_dir, self.timeout_s, self.create, self.mode = pin_dir, timeout_s, create, mode
        self._mutex = threading.RLock()
        self._depth = 0
        self._fd = -1

    def __enter__(self) -> "PinLock":
        self._mutex.acquire()
        try:
            if self._depth == 0:
                self._fd = self._acquire()
            self._depth += 1
        except BaseException:
            self._mutex.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._depth -= 1
            if self._depth == 0:
                fd, self._fd = self._fd, -1
                if fd >= 0:
                    os.close(fd)  # closing the last fd of the description releases the flock
        finally:
            self._mutex.release()

    @property
    def held(self) -> bool:
        """True while this object holds the lock (in any thread)."""
        return self._depth > 0

    def _open(self) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            return os.open(self.pin_dir, flags)
        except FileNotFoundError:
            if not self.create:
                return -1
        except OSError as exc:
            raise KernelError(f"cannot open the pin directory {self.pin_dir} to lock it: "
                              f"{exc.strerror}") from None
        try:
            os.makedirs(self.pin_dir, mode=self.mode, exist_ok=True)
        except OSError as exc:  # bpffs not mounted, a name bpffs refuses, not root
            raise KernelError(f"cannot make {self.pin_dir} to lock it: {exc.strerror}") from None
        return self._open()

    def _same_dir(self, fd: int) -> bool:
        """The locked directory is still the one at pin_dir (unload removes the directory, and a
        later load makes a new one: a lock on the old one keeps nobody out)."""
        try:
            st = os.stat(self.pin_dir)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)

    def _acquire(self) -> int:
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        pause = 0.0005
        fd = self._open()
        try:
            while fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if self._same_dir(fd):
                        return fd
                    os.close(fd)  # locked a directory that was removed meanwhile: start again
                    fd = -1
                    fd = self._open()
                    pause = 0.0005
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                        raise KernelError(f"flock on {self.pin_dir}: {exc.strerror}") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise PinDirBusy(f"another process has held the lock on {self.pin_dir} for "
                                     f"{self.timeout_s:g} s; try again")
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
            return -1  # no directory: nothing to lock
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise


class PinDirClaimed(KernelError):
    """Another process holds the pin directory's claim for its role (one enforcer per node)."""


class PinDirClaim:
    """One process of `role` (the enforcer) per pin directory, for as long as it runs.

    Two enforcers on one pin directory (another XDPGUARD_TOPIC_PREFIX or node id in a second
    shell) each take the other's model rules for stale: the second deleted every rule the first
    had installed at its start, and the first, which still counted them, answered their next
    verdicts with "already installed" (helper-72). The claim is an exclusive flock, never waited
    for, on the directory `<pin_dir>_<role>` beside the pin directory in bpffs (which holds no
    plain files; inside the pin directory an unload would remove it while the holder runs).
    `release()` removes that directory and drops the flock; a process killed leaves it behind,
    unlocked, for the next one. PinDirClaimed names the holder (from /proc/locks)."""

    def __init__(self, pin_dir: str, role: str) -> None:
        # the directory itself, however it is spelt (a symlink, "/.", a trailing slash): two
        # spellings of one pin directory are one claim (helper-74)
        self.pin_dir, self.role = os.path.realpath(pin_dir), role
        self.path = f"{self.pin_dir}_{role}"  # bpffs refuses names with a dot
        # 0700: another user cannot open it, so cannot flock it (bpffs may be mode 1777)
        self._lock = PinLock(self.path, timeout_s=0, create=True, mode=0o700)

    def acquire(self) -> "PinDirClaim":
        self._take_back()
        try:
            self._lock.__enter__()
        except PinDirBusy:
            who = ", ".join(f"pid {pid} ({command_of(pid)})" for pid in flock_holders(self.path))
            who = who or f"{self.path} is locked"
            raise PinDirClaimed(
                f"another {self.role} already works on {self.pin_dir} ({who}): one per node; "
                "stop it first, or give this one a pin directory of its own (XDPGUARD_PIN_DIR)"
            ) from None
        return self

    def _take_back(self) -> None:
        """A claim path someone else owns (bpffs may be mode 1777: any user could make it and
        flock it, and no enforcer would start, helper-74) is removed, so this process makes its
        own; a lock on the removed one keeps nobody out."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if st.st_uid == os.geteuid():
            return
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(self.path)
            else:
                os.unlink(self.path)
        except OSError as exc:
            raise KernelError(f"{self.path} belongs to uid {st.st_uid} and cannot be removed: "
                              f"{exc.strerror}") from None

    def release(self) -> None:
        """Idempotent."""
        if self._lock.held:
            try:
                os.rmdir(self.path)  # while still held: a racer that locked it starts again
            except OSError:
                pass
            self._lock.__exit__(None, None, None)


def flock_holders(path: str) -> list[int]:
    """Pids holding a flock on `path` (from /proc/locks; [] when it cannot be read)."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
            pids.append(int(fields[4]))
    return sorted(set(pids))
