"""`xdpguard load|unload|status`: attach the XDP program, detach it, show what is loaded.

The pins must land on the host's BPF filesystem. `ip netns exec NS` mounts a /sys of its own,
which hides it, so `load` checks first and says what to do instead: `--netns NS` (or
`nsenter --net=/var/run/netns/NS xdpguard load ...`) switches only the network namespace.
"""
from __future__ import annotations

import contextlib
import json
import os

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.common.errors import ConfigError
from services.common.settings import load_common
from services.manager.ruleargs import bounded


def pin_dir() -> str:
    return load_common().pin_dir


def register(sub) -> None:
    p = sub.add_parser("load", help="load the XDP program and attach it to interfaces")
    p.add_argument("-i", "--iface", action="append", default=[], help="interface (repeatable)")
    p.add_argument("--mode", choices=("native", "generic", "auto"), default="auto",
                   help="driver (native) or generic (skb) XDP; auto tries native first")
    p.add_argument("--netns", metavar="NS", help="the interfaces are in network namespace NS "
                   "(ip netns add NS); the pins stay on the host's bpffs")
    d, entries = loader.Sizes(), bounded(int, 1, loader.MAX_ENTRIES)
    p.add_argument("--exact-max", type=entries, default=d.exact, help=f"exact rules (default {d.exact})")
    p.add_argument("--prefix-max", type=entries, default=d.prefix, help=f"source prefixes (default {d.prefix})")
    p.add_argument("--allow-max", type=entries, default=d.allow, help=f"allowlist prefixes (default {d.allow})")
    p.add_argument("--limit-max", type=entries, default=d.limit, help=f"limit rules (default {d.limit})")
    p.add_argument("--ring-pages", type=bounded(int, 1, loader.MAX_RING_PAGES), default=d.ring_pages,
                   help=f"ring buffer size in 4 KiB pages, power of two (default {d.ring_pages})")
    p.add_argument("--print-c", action="store_true",
                   help="print the C source and the -D flags it would be compiled with, then exit")
    p.set_defaults(func=cmd_load)

    u = sub.add_parser("unload", help="detach from interfaces (pins go when none is left)")
    u.add_argument("-i", "--iface", action="append", default=[], help="interface (repeatable)")
    u.add_argument("--all", action="store_true", help="detach everywhere and remove every pin")
    u.set_defaults(func=cmd_unload)

    s = sub.add_parser("status", help="program, interfaces, sample rate and map occupancy")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)


def cmd_load(args) -> int:
    sizes = loader.Sizes(exact=args.exact_max, prefix=args.prefix_max, allow=args.allow_max,
                         limit=args.limit_max, ring_pages=args.ring_pages)
    if args.print_c:
        print(f"// cflags: -I{loader.BPF_DIR} {' '.join(sizes.cflags())}")
        print(loader.SOURCE.read_text(), end="")
        return 0
    if not args.iface:
        raise ConfigError("name at least one interface with -i IFACE")
    check_bpffs(pin_dir())
    was_loaded = loader.is_loaded(pin_dir())
    with _netns(args.netns):
        modes = loader.load(args.iface, mode=args.mode, pin_dir=pin_dir(), sizes=sizes)
    if was_loaded:
        print(f"program already loaded in {pin_dir()} (map sizes unchanged)")
    for iface, mode in modes.items():
        print(f"attached to {iface} ({mode})")
    return 0


@contextlib.contextmanager
def _netns(name: str | None):
    if name is None:
        yield
        return
    from .netns import in_netns
    if not os.path.exists(f"/var/run/netns/{name}"):
        raise ConfigError(f"no network namespace named {name!r} (ip netns list)")
    with in_netns(name):
        yield


def mount_of(path: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount `path` is on, from /proc/self/mounts."""
    best = ("/", "")
    path = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                    len(point) >= len(best[0]):
                best = (point, fields[2])
    return best


def check_bpffs(path: str, verb: str = "load") -> None:
    """ConfigError unless `path` (XDPGUARD_PIN_DIR) is on a BPF filesystem here; `verb` (load,
    status, unload) is the command the hint tells how to run."""
    point, fstype = mount_of(path)
    if fstype == "bpf":
        return
    ns = _named_netns()
    how = (f"xdpguard load --netns {ns} -i IFACE", "xdpguard load -i IFACE") if verb == "load" \
        else (f"xdpguard {verb}", f"xdpguard {verb}")
    hint = (f"inside network namespace {ns} (`ip netns exec` mounts a /sys of its own, hiding "
            f"the host's bpffs): run `{how[0]}` from the host (or "
            f"`nsenter --net=/var/run/netns/{ns} {how[1]}`)"
            if ns else "mount it: mount -t bpf bpf /sys/fs/bpf")
    raise ConfigError(f"XDPGUARD_PIN_DIR={path} is not on a BPF filesystem here ({fstype or '?'} "
                      f"at {point}); {hint}")


def _named_netns() -> str:
    """The `ip netns` name of this process's network namespace ("" for none)."""
    try:
        own = os.stat("/proc/self/ns/net")
        for name in sorted(os.listdir("/var/run/netns")):
            st = os.stat(f"/var/run/netns/{name}")
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                return name
    except OSError:
        pass
    return ""


def cmd_unload(args) -> int:
    check_bpffs(pin_dir(), "unload")  # elsewhere "pins removed" would be said of hidden pins
    if args.all:
        loader.unload_all(pin_dir())
        print(f"detached everywhere, pins removed from {pin_dir()}")
        return 0
    if not args.iface:
        raise ConfigError("name an interface with -i IFACE (or --all)")
    for iface in args.iface:
        removed = loader.unload(iface, pin_dir())
        print(f"detached from {iface}" + (f"; no interface left, pins removed from {pin_dir()}"
                                          if removed else ""))
    return 0


def cmd_status(args) -> int:
    check_bpffs(pin_dir(), "status")  # elsewhere "not loaded" would be said of hidden pins
    st = loader.status(pin_dir())
    if st["loaded"]:
        with Datapath.open(pin_dir()) as dp:
            st["sample_rate"] = dp.sample_rate()
            st["maps"] = {k: {"entries": n, "max": m} for k, (n, m) in dp.occupancy().items()}
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    if not st["loaded"]:
        print(f"not loaded (nothing pinned in {st['pin_dir']})")
        return 0
    print(f"loaded: program id {st['prog_id']}, pins in {st['pin_dir']}")
    for a in st["attached"] or [{"iface": "(none)", "mode": "-", "ifindex": 0, "live": True}]:
        state = "" if a["live"] else "  (device gone: run unload)"
        print(f"  interface {a['iface']:<16} mode {a['mode']:<8} ifindex {a['ifindex']}{state}")
    rate = st["sample_rate"]
    print(f"sampling: {'off' if rate == 0 else f'1 in {rate}'} unmatched packets")
    for name, m in st["maps"].items():
        print(f"  map {name:<11} {m['entries']:>8} / {m['max']}")
    return 0
