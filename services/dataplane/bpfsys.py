"""Thin ctypes bindings to the libbpf that libbcc bundles (no BCC Python objects needed).

The CLI, the enforcer and the capture service open *pinned* maps of a program another process
loaded, so they use these calls on plain file descriptors. Every failure raises KernelError (or
a subclass) naming the operation and the errno text.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int, c_size_t, c_uint32,
                    c_uint64, c_void_p)

from services.common.errors import KernelError, NotSupported

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_XDP = 37  # enum bpf_attach_type
XDP_FLAGS_UPDATE_IF_NOEXIST, XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1, 2, 4

MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY = 1, 2, 5, 6
MAP_TYPE_LPM_TRIE, MAP_TYPE_RINGBUF = 11, 27

_lib = None


def lib() -> ctypes.CDLL:
    """libbcc loaded privately (own argtypes, independent of the bcc module's declarations)."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bcc") or "libbcc.so.0"
        try:
            l = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise NotSupported(f"libbcc not found ({exc}); install BCC (python3-bpfcc)") from None
        sig = {
            "bpf_obj_get": (c_int, [c_char_p]),
            "bpf_obj_pin": (c_int, [c_int, c_char_p]),
            "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
            "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
            "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
            "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
            "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
            "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
            "bpf_prog_test_run_opts": (c_int, [c_int, c_void_p]),
            "ring_buffer__new": (c_void_p, [c_int, c_void_p, c_void_p, c_void_p]),
            "ring_buffer__poll": (c_int, [c_void_p, c_int]),
            "ring_buffer__consume": (c_int, [c_void_p]),
            "ring_buffer__free": (None, [c_void_p]),
        }
        for fn, (res, args) in sig.items():
            f = getattr(l, fn)
            f.restype, f.argtypes = res, args
        _lib = l
    return _lib


def _check(rc: int, what: str) -> int:
    if rc >= 0:
        return rc
    raise _kerr(what, ctypes.get_errno() or -rc)


class BpfErrno(KernelError):
    """A bpf() call failed; `.errno` carries the code."""

    def __init__(self, msg: str, err: int):
        super().__init__(msg)
        self.errno = err


def _kerr(what: str, err: int) -> BpfErrno:
    return BpfErrno(f"{what}: {os.strerror(err)}", err)


def obj_get(path: str) -> int:
    ctypes.set_errno(0)
    return _check(lib().bpf_obj_get(path.encode()), f"open {path}")


def obj_pin(fd: int, path: str) -> None:
    ctypes.set_errno(0)
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


class MapInfo(Structure):
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("key_size", c_uint32),
                ("value_size", c_uint32), ("max_entries", c_uint32), ("map_flags", c_uint32),
                ("name", ctypes.c_char * 16), ("_rest", ctypes.c_uint8 * 64)]


def _info(fd: int, size: int = 256) -> bytes:
    buf = ctypes.create_string_buffer(size)
    n = c_uint32(size)
    ctypes.set_errno(0)
    _check(lib().bpf_obj_get_info_by_fd(fd, buf, byref(n)), "bpf_obj_get_info_by_fd")
    return buf.raw[:n.value]


def map_info(fd: int) -> MapInfo:
    raw = _info(fd, ctypes.sizeof(MapInfo))
    return MapInfo.from_buffer_copy(raw.ljust(ctypes.sizeof(MapInfo), b"\0"))


def pinned_map_id(path: str) -> int:
    """Kernel id of the map pinned at `path` (a new one each time the program is loaded), 0
    when nothing can be opened there. KernelError only if the pinned object cannot be
    described."""
    try:
        fd = obj_get(path)
    except KernelError:
        return 0
    try:
        return map_info(fd).id
    finally:
        os.close(fd)


def prog_id(fd: int) -> int:
    return int.from_bytes(_info(fd)[4:8], "little")


def link_info(fd: int) -> dict:
    """type, id, prog_id and (for XDP links) ifindex; ifindex 0 means the device is gone."""
    raw = _info(fd).ljust(24, b"\0")
    le = lambda a: int.from_bytes(raw[a:a + 4], "little")  # noqa: E731
    return {"type": le(0), "id": le(4), "prog_id": le(8), "ifindex": le(16)}


def lookup(fd: int, key, value) -> bool:
    ctypes.set_errno(0)
    rc = lib().bpf_map_lookup_elem(fd, byref(key), byref(value))
    if rc == 0:
        return True
    err = ctypes.get_errno() or -rc
    if err == errno_mod.ENOENT:
        return False
    raise _kerr("map lookup", err)


def update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    ctypes.set_errno(0)
    _check(lib().bpf_map_update_elem(fd, byref(key), byref(value), flags), "map update")


def delete(fd: int, key) -> bool:
    ctypes.set_errno(0)
    rc = lib().bpf_map_delete_elem(fd, byref(key))
    if rc == 0:
        return True
    err = ctypes.get_errno() or -rc
    if err == errno_mod.ENOENT:
        return False
    raise _kerr("map delete", err)


def keys(fd: int, key_type) -> list:
    """All keys of a map (a snapshot; entries may change while we walk)."""
    out = []
    prev, cur = None, key_type()
    while True:
        ctypes.set_errno(0)
        rc = lib().bpf_map_get_next_key(fd, byref(prev) if prev is not None else None, byref(cur))
        if rc != 0:
            err = ctypes.get_errno() or -rc
            if err == errno_mod.ENOENT:
                return out
            raise _kerr("map iterate", err)
        out.append(cur)
        prev, cur = cur, key_type()


def link_create_xdp(prog_fd: int, ifindex: int, flags: int) -> int:
    class Opts(Structure):
        _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("_pad", c_uint32)]
    opts = Opts(ctypes.sizeof(Opts), flags, 0)
    ctypes.set_errno(0)
    return _check(lib().bpf_link_create(prog_fd, ifindex, BPF_XDP, byref(opts)), "attach XDP")


class TestRunOpts(Structure):
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
                ("data_size_in", c_uint32), ("data_size_out", c_uint32),
                ("ctx_in", c_void_p), ("ctx_out", c_void_p),
                ("ctx_size_in", c_uint32), ("ctx_size_out", c_uint32),
                ("retval", c_uint32), ("repeat", c_int), ("duration", c_uint32),
                ("flags", c_uint32), ("cpu", c_int), ("batch_size", c_uint32)]


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run an XDP program on one frame (BPF_PROG_TEST_RUN): (verdict, average ns per run)."""
    data = ctypes.create_string_buffer(bytes(frame), len(frame))
    out = ctypes.create_string_buffer(len(frame) + 512)
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.addressof(data),
                       data_size_in=len(frame), data_out=ctypes.addressof(out),
                       data_size_out=len(out), repeat=repeat)
    ctypes.set_errno(0)
    _check(lib().bpf_prog_test_run_opts(prog_fd, byref(opts)), "BPF_PROG_TEST_RUN")
    return opts.retval, opts.duration


RingSampleFn = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


def possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU map value count), from sysfs like libbpf."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n
