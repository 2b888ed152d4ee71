"""Load the XDP program with BCC, pin it, attach it to interfaces, detach it, report status.

Pins under `pin_dir` (bpffs only holds BPF objects, so the kernel objects *are* the state):

    prog                      the program (one program serves every interface)
    config stats allow exact4 exact6 exact6x src_prefix4 src_prefix src_host4 src_host6 src_host_slot
                              src_filter src_pfx_filter dst_limit limit_dst limit_stats events
    link_<mode>_<ifname>      one pinned BPF link per attached interface (mode native|generic;
                              bpffs refuses dots in names, so "." in ifname is written %2E)

Attachments are BPF links, so an interface stays attached after the CLI exits, `unload`
detaches by unpinning the link, and "nothing else attached" is simply "no link_* pin left".
A second `load` on another interface reuses the pinned program and maps. `load`, `unload` and
`unload_all` hold the pin directory's lock (services.dataplane.pinlock) like every map writer,
so two loads never race to pin the same names.
"""
from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from services.common.errors import ConfigError, KernelError, NotLoaded, NotSupported
from services.common.paths import BPF_DIR, DEFAULT_PIN_DIR

from . import bpfsys
from .maps import MAP_NAMES, open_checked
from .pinlock import PinLock
from .structs import (XG_ALLOW_MAX, XG_EXACT_MAX, XG_LIMIT_MAX, XG_MAGIC, XG_PREFIX_MAX,
                      XG_RING_PAGES, Config)

SOURCE = BPF_DIR / "xdpguard.c"
PROG_NAME = "xdpguard"
LOAD_LOCK_TIMEOUT_S = 60.0  # a concurrent fresh load holds the lock while BCC compiles (~15 s)
MODES = {"native": bpfsys.XDP_FLAGS_DRV_MODE, "generic": bpfsys.XDP_FLAGS_SKB_MODE}
MAX_ENTRIES = 2**32 - 1   # a map size is a u32 (in the kernel and in xg_config)
MAX_RING_PAGES = 2**19    # 2 GiB: the ring's size in bytes is a u32 in xg_config


@dataclass(frozen=True)
class Sizes:
    """Map sizes, fixed when the program is loaded (defaults: bpf/xdpguard.h's)."""
    exact: int = XG_EXACT_MAX
    prefix: int = XG_PREFIX_MAX
    allow: int = XG_ALLOW_MAX
    limit: int = XG_LIMIT_MAX
    ring_pages: int = XG_RING_PAGES   # ring buffer pages (power of two); 256 x 4 KiB = 1 MiB

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if type(value) is not int or not 1 <= value <= MAX_ENTRIES:
                raise ConfigError(f"map size {name} must be a whole number 1-{MAX_ENTRIES}")
        if self.ring_pages > MAX_RING_PAGES:
            raise ConfigError(f"ring_pages {self.ring_pages} above {MAX_RING_PAGES} (2 GiB)")
        if self.ring_pages & (self.ring_pages - 1):
            raise ConfigError(f"ring_pages {self.ring_pages} is not a power of two")

    def cflags(self) -> list[str]:
        return [f"-DXG_EXACT_MAX={self.exact}", f"-DXG_PREFIX_MAX={self.prefix}",
                f"-DXG_ALLOW_MAX={self.allow}", f"-DXG_LIMIT_MAX={self.limit}",
                f"-DXG_RING_PAGES={self.ring_pages}"]


def compile_program(sizes: Sizes = Sizes(), extra_cflags: tuple[str, ...] = (), text: str | None = None):
    """BCC-compile and load (into the kernel, unattached) the XDP program: (BPF, prog fd)."""
    try:
        from bcc import BPF
    except ImportError as exc:
        raise NotSupported(f"BCC is not available ({exc}); install python3-bpfcc") from None
    cflags = [f"-I{BPF_DIR}", *sizes.cflags(), *extra_cflags]
    try:
        if text is not None:
            b = BPF(text=text.encode(), cflags=cflags)
        else:
            b = BPF(src_file=str(SOURCE).encode(), cflags=cflags)
        fn = b.load_func(PROG_NAME.encode() if text is None else b"prog", BPF.XDP)
    except Exception as exc:  # BCC raises bare Exception for compile/verifier failures
        raise KernelError(f"loading the XDP program failed: {exc}") from None
    return b, fn.fd


def _pins(pin_dir: str) -> Path:
    return Path(pin_dir)


def _link_pins(pin_dir: str) -> list[Path]:
    d = _pins(pin_dir)
    return sorted(d.glob("link_*")) if d.is_dir() else []


def _link_pin(pin_dir: str, mode: str, iface: str) -> Path:
    return _pins(pin_dir) / f"link_{mode}_{iface.replace('%', '%25').replace('.', '%2E')}"


def _link_name(path: Path) -> tuple[str, str]:
    _, mode, iface = path.name.split("_", 2)
    return mode, iface.replace("%2E", ".").replace("%25", "%")


def is_loaded(pin_dir: str) -> bool:
    return (_pins(pin_dir) / "prog").exists()


def prog_fd(pin_dir: str) -> int:
    """A new fd of the pinned program (caller closes it)."""
    if not is_loaded(pin_dir):
        raise NotLoaded(f"no xdpguard program pinned in {pin_dir}; run `xdpguard load -i IFACE`")
    return bpfsys.obj_get(str(_pins(pin_dir) / "prog"))


# Every map name an xdpguard build has pinned: this build's and those of earlier layouts
# (src_stats: the source-prefix counters, up to XDG5; XDG6's prefix values hold them; exact:
# XDG1's one exact-rule map, before exact4 / exact6; from the git history of bpf/xdpguard.c), so
# `unload` removes the pins of any earlier build too. A later build's extra maps are its own
# to remove: before going back to an older build, run `unload --all` with the newer one, since
# an older build's unload leaves the maps it does not know pinned (and the directory) behind:
# src_host_slot before XDG9, exact6x before XDGB
# (docs/dataplane.md).
FORMER_MAP_NAMES = ("src_stats", "exact")
PIN_NAMES = ("prog", *MAP_NAMES, *(n for n in FORMER_MAP_NAMES if n not in MAP_NAMES))


def _remove_pins(pin_dir: str) -> None:
    d = _pins(pin_dir)
    for name in PIN_NAMES:
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass
    for p in _link_pins(pin_dir):
        p.unlink(missing_ok=True)
    try:
        d.rmdir()
    except OSError:
        pass


def _load_and_pin(pin_dir: str, sizes: Sizes) -> None:
    b, fd = compile_program(sizes)
    try:
        d = _pins(pin_dir)
        d.mkdir(parents=True, exist_ok=True)
        cfg = Config(magic=XG_MAGIC, sample_rate=1, exact_max=sizes.exact, prefix_max=sizes.prefix,
                     allow_max=sizes.allow, limit_max=sizes.limit, ring_bytes=sizes.ring_pages * 4096)
        bpfsys.update(b[b"config"].map_fd, ctypes.c_int(0), cfg)
        try:
            for name in MAP_NAMES:
                bpfsys.obj_pin(b[name.encode()].map_fd, str(d / name))
            bpfsys.obj_pin(fd, str(d / "prog"))  # last: its presence means "fully loaded"
        except KernelError:
            _remove_pins(pin_dir)
            raise
    finally:
        b.cleanup()


def _attach(pin_dir: str, iface: str, mode: str) -> str:
    try:
        ifindex = socket.if_nametoindex(iface)
    except OSError:
        raise ConfigError(f"no interface named {iface!r} in this network namespace") from None
    for p in _link_pins(pin_dir):
        if _link_name(p)[1] == iface:
            fd = bpfsys.obj_get(str(p))
            try:
                live = bpfsys.link_info(fd)["ifindex"] == ifindex
            finally:
                os.close(fd)
            have = _link_name(p)[0]
            if live and mode not in ("auto", have):
                raise ConfigError(f"xdpguard is attached to {iface} in {have} mode; to use "
                                  f"{mode} mode, `xdpguard unload -i {iface}` first")
            if live:
                return have
            p.unlink()  # the device it was attached to is gone
    pfd = prog_fd(pin_dir)
    try:
        tried = ["native", "generic"] if mode == "auto" else [mode]
        for i, m in enumerate(tried):
            try:
                lfd = bpfsys.link_create_xdp(pfd, ifindex, MODES[m])
            except bpfsys.BpfErrno as exc:
                if i + 1 < len(tried):
                    continue
                if exc.errno == 16:  # EBUSY
                    raise KernelError(f"{iface} already has another XDP program attached") from None
                raise KernelError(f"attaching to {iface} in {m} mode failed: {exc}") from None
            try:
                bpfsys.obj_pin(lfd, str(_link_pin(pin_dir, m, iface)))
            finally:
                os.close(lfd)
            return m
    finally:
        os.close(pfd)
    raise AssertionError("unreachable")


def _lock(pin_dir: str, create: bool = False) -> PinLock:
    """The pin directory's lock (holding nothing when there is no directory and create=False)."""
    return PinLock(pin_dir, LOAD_LOCK_TIMEOUT_S, create=create)


def load(ifaces: list[str] | tuple[str, ...], mode: str = "auto", pin_dir: str = DEFAULT_PIN_DIR,
         sizes: Sizes | None = None) -> dict[str, str]:
    """Load (or reuse) the pinned program and attach it to `ifaces`: {iface: mode}.

    With no interfaces the program and maps are only loaded and pinned (tests, benchmarks).
    Sizes apply to a fresh load only; an already loaded program keeps its own. A pinned program
    this build cannot use (another build's config magic or maps: check_pins) is refused with
    MapMismatch/NotLoaded naming the fix, nothing attached; it is never replaced behind the
    operator's back (its maps hold the rules in force)."""
    if mode not in ("auto", *MODES):
        raise ConfigError(f"unknown XDP mode {mode!r} (native, generic or auto)")
    with _lock(pin_dir, create=True):
        return _load_locked(ifaces, mode, pin_dir, sizes)


def _load_locked(ifaces, mode: str, pin_dir: str, sizes: Sizes | None) -> dict[str, str]:
    fresh = not is_loaded(pin_dir)
    if fresh:
        _remove_pins(pin_dir)  # leftovers of an interrupted load
        _load_and_pin(pin_dir, sizes or Sizes())
    else:  # reused only if this build can use it: the check every opener of the pins runs
        check_pins(pin_dir)
    attached: dict[str, str] = {}
    try:
        for iface in ifaces:
            attached[iface] = _attach(pin_dir, iface, mode)
    except BaseException:
        # A failed load leaves the host as it found it: nothing new attached or pinned.
        for iface in attached:
            for p in _link_pins(pin_dir):
                if _link_name(p)[1] == iface:
                    p.unlink()
        if fresh:
            _remove_pins(pin_dir)
        raise
    return attached


def check_pins(pin_dir: str) -> None:
    """The pins' compatibility check (maps.open_checked) with nothing kept open: MapMismatch or
    NotLoaded, naming the fix, unless this build can use what is pinned in `pin_dir`."""
    open_checked(pin_dir)


def unload(iface: str, pin_dir: str = DEFAULT_PIN_DIR) -> bool:
    """Detach from `iface`; remove every pin when no interface is left. True if pins were removed."""
    with _lock(pin_dir):
        return _unload_locked(iface, pin_dir)


def _unload_locked(iface: str, pin_dir: str) -> bool:
    links = [p for p in _link_pins(pin_dir) if _link_name(p)[1] == iface]
    if not links:
        if not is_loaded(pin_dir):
            raise NotLoaded(f"no xdpguard program pinned in {pin_dir}")
        raise NotLoaded(f"xdpguard is not attached to {iface}")
    for p in links:
        p.unlink()  # the last reference to the link: the kernel detaches the program
    if not _link_pins(pin_dir):
        _remove_pins(pin_dir)
        return True
    return False


def unload_all(pin_dir: str) -> None:
    """Detach everywhere and remove every pin (tests, `unload --all`)."""
    with _lock(pin_dir):
        _remove_pins(pin_dir)


def status(pin_dir: str = DEFAULT_PIN_DIR) -> dict:
    """What is pinned and attached: loaded, prog_id, attached [{iface, ifindex, mode, live}]."""
    if not is_loaded(pin_dir):
        return {"loaded": False, "pin_dir": pin_dir, "prog_id": 0, "attached": []}
    fd = prog_fd(pin_dir)
    try:
        pid = bpfsys.prog_id(fd)
    finally:
        os.close(fd)
    attached = []
    for p in _link_pins(pin_dir):
        mode, iface = _link_name(p)
        lfd = bpfsys.obj_get(str(p))
        try:
            info = bpfsys.link_info(lfd)
        finally:
            os.close(lfd)
        attached.append({"iface": iface, "ifindex": info["ifindex"], "mode": mode,
                         "live": info["ifindex"] != 0 and info["prog_id"] == pid})
    return {"loaded": True, "pin_dir": pin_dir, "prog_id": pid, "attached": attached}
