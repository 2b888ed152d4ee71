"""Who else reads the pinned ring buffer: a BPF ring buffer has ONE consumer position, so two
readers (the capture service and `xdpguard monitor`) each take the events the other does not
see, and neither can tell. This finds the other readers, as `bpftool map show` finds a map's
holders: every process holding a file descriptor of the pinned `events` map (by kernel map id,
read from /proc/<pid>/fdinfo). The node services and the CLI open the other maps, never this
one, so a holder of `events` is a reader (or a loader compiling the program for a moment).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import bpfsys


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str   # its command line, cut to 120 characters


def events_map_id(pin_dir: str) -> int:
    """Kernel id of the `events` ring pinned in `pin_dir`, 0 when none is pinned."""
    return bpfsys.pinned_map_id(os.path.join(pin_dir, "events"))


def map_holders(map_id: int, exclude_pid: int | None = None) -> list[Holder]:
    """Processes (other than `exclude_pid`, default this one) with an fd of map `map_id`."""
    me = os.getpid() if exclude_pid is None else exclude_pid
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if _holds(int(entry), map_id):
            out.append(Holder(int(entry), command_of(int(entry))))
    return out


def ring_readers(pin_dir: str) -> list[Holder]:
    """Other processes reading the ring buffer pinned in `pin_dir` ([] when none is pinned)."""
    map_id = events_map_id(pin_dir)
    return map_holders(map_id) if map_id else []


def describe(holders: list[Holder]) -> str:
    """"pid 123 (python -m services.capture), ..." for a message."""
    return ", ".join(f"pid {h.pid} ({h.command})" for h in holders)


def _holds(pid: int, map_id: int) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:  # gone, or not ours to look at
        return False
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf-map":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("map_id:"):
                        if int(line.split()[1]) == map_id:
                            return True
                        break
        except (OSError, ValueError):
            continue  # closed meanwhile
    return False


def command_of(pid: int) -> str:
    """Process `pid`'s command line, cut to 120 characters ("?" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in args if a)
    return (text[:117] + "...") if len(text) > 120 else text or "?"
