"""The maps of bpf/xdpguard.c, listed once for user space: name, type, key and value, size, flags.

xdpguard.c declares the maps with BCC's macros; this table is the only place user space names
them. The loader pins exactly these; Datapath.open and the ring readers open them through
`open_pinned`, which checks a pinned map against its spec before the first read or write (like
cilium/ebpf's MapSpec.Compatible) and names every difference;
tests/unit/test_dp_map_table.py checks the table against the C declarations and
tests/kernel/test_dp_structs.py against the maps the kernel creates when the program loads.

Max entries are fixed at load (`xdpguard load --exact-max ...`) and recorded in the `config`
map, so a spec names the Config field that holds its size rather than a number.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from services.common.errors import MapMismatch, NotLoaded

from . import bpfsys
from .bpfsys import (MAP_TYPE_ARRAY, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE, MAP_TYPE_PERCPU_ARRAY,
                     MAP_TYPE_PERCPU_HASH, MAP_TYPE_RINGBUF, MapInfo)
from .structs import (XG_FILTER_SLOTS, XG_HOST_SLOTS, XG_MAGIC, Addr4Key, AddrKey, AllowVal, Config, Counter,
                      FilterSlot, Flow4Key, Flow6Fold, Flow6Key, HostSlot, LimitDst,
                      LimitKey, LimitVal, Lpm4Key, LpmKey, Rule6Val, RuleVal, Stats)

BPF_F_NO_PREALLOC = 1  # LPM tries require it (BCC's BPF_LPM_TRIE sets it)

_TYPE_NAMES = {MAP_TYPE_HASH: "hash", MAP_TYPE_ARRAY: "array", MAP_TYPE_PERCPU_HASH: "per-CPU hash",
               MAP_TYPE_PERCPU_ARRAY: "per-CPU array", MAP_TYPE_LPM_TRIE: "LPM trie",
               MAP_TYPE_RINGBUF: "ring buffer"}


@dataclass(frozen=True)
class MapSpec:
    """One map of the program. `key`/`value` are ctypes types (None for the ring buffer, which
    has neither); `size` is the Config field holding max entries (None: a single entry; a
    number: that many, whatever the load's sizes)."""
    name: str
    type: int
    key: type | None
    value: type | None
    size: str | int | None
    flags: int = 0

    @property
    def key_size(self) -> int:
        return ctypes.sizeof(self.key) if self.key is not None else 0

    @property
    def value_size(self) -> int:
        return ctypes.sizeof(self.value) if self.value is not None else 0

    @property
    def percpu(self) -> bool:
        """Lookups and updates carry one value per possible CPU."""
        return self.type in (MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY)

    def max_entries(self, cfg: Config) -> int:
        """Max entries the program was loaded with (for the ring buffer: its size in bytes)."""
        if isinstance(self.size, int):
            return self.size
        return 1 if self.size is None else getattr(cfg, self.size)

    def differences(self, info: MapInfo, cfg: Config | None = None) -> list[str]:
        """Every way a kernel map (its bpf_map_info) differs from this spec; [] when compatible.
        Max entries are compared only when `cfg` (the sizes recorded at load) is given."""
        want = {"type": self.type, "key size": self.key_size, "value size": self.value_size,
                "flags": self.flags}
        got = {"type": info.type, "key size": info.key_size, "value size": info.value_size,
               "flags": info.map_flags}
        if cfg is not None:
            want["max entries"], got["max entries"] = self.max_entries(cfg), info.max_entries
        out = []
        for what in want:
            if got[what] != want[what]:
                if what == "type":
                    out.append(f"type {_TYPE_NAMES.get(got[what], got[what])} (expected "
                               f"{_TYPE_NAMES.get(want[what], want[what])})")
                else:
                    out.append(f"{what} {got[what]} (expected {want[what]})")
        return out


MAPS: tuple[MapSpec, ...] = (
    MapSpec("config", MAP_TYPE_ARRAY, ctypes.c_uint32, Config, None),
    MapSpec("stats", MAP_TYPE_PERCPU_ARRAY, ctypes.c_uint32, Stats, None),
    MapSpec("allow", MAP_TYPE_LPM_TRIE, LpmKey, AllowVal, "allow_max", BPF_F_NO_PREALLOC),
    MapSpec("exact4", MAP_TYPE_PERCPU_HASH, Flow4Key, RuleVal, "exact_max"),
    MapSpec("exact6", MAP_TYPE_PERCPU_HASH, Flow6Fold, Rule6Val, "exact_max"),
    MapSpec("exact6x", MAP_TYPE_PERCPU_HASH, Flow6Key, RuleVal, "exact_max", BPF_F_NO_PREALLOC),
    MapSpec("src_prefix4", MAP_TYPE_PERCPU_HASH, Lpm4Key, RuleVal, "prefix_max"),
    MapSpec("src_prefix", MAP_TYPE_PERCPU_HASH, LpmKey, RuleVal, "prefix_max"),
    MapSpec("src_host4", MAP_TYPE_PERCPU_HASH, Addr4Key, RuleVal, "prefix_max"),
    MapSpec("src_host6", MAP_TYPE_PERCPU_HASH, AddrKey, RuleVal, "prefix_max"),
    MapSpec("src_host_slot", MAP_TYPE_PERCPU_ARRAY, ctypes.c_uint32, HostSlot, XG_HOST_SLOTS),
    MapSpec("src_filter", MAP_TYPE_ARRAY, ctypes.c_uint32, FilterSlot, XG_FILTER_SLOTS),
    MapSpec("src_pfx_filter", MAP_TYPE_ARRAY, ctypes.c_uint32, ctypes.c_uint32, XG_FILTER_SLOTS),
    MapSpec("dst_limit", MAP_TYPE_HASH, LimitKey, LimitVal, "limit_max"),
    MapSpec("limit_dst", MAP_TYPE_HASH, AddrKey, LimitDst, "limit_max"),
    MapSpec("limit_stats", MAP_TYPE_PERCPU_HASH, LimitKey, Counter, "limit_max"),
    MapSpec("events", MAP_TYPE_RINGBUF, None, None, "ring_bytes"),
)
SPECS: dict[str, MapSpec] = {m.name: m for m in MAPS}
MAP_NAMES: tuple[str, ...] = tuple(SPECS)
RULE_MAPS = ("exact4", "exact6", "exact6x", "src_host4", "src_host6", "src_prefix4", "src_prefix", "allow", "dst_limit")  # what `status` reports


def fix_text(pin_dir: str) -> str:
    """How to get rid of pins this build cannot use (every MapMismatch/NotLoaded about them ends
    with it)."""
    return (f"run `xdpguard unload --all` and `xdpguard load -i IFACE` again (pins in {pin_dir}; "
            f"the enforcer reinstalls its rules from the `rules` topic)")


def open_pinned(pin_dir: str, name: str, cfg: Config | None = None) -> tuple[int, MapInfo]:
    """(fd, info) of the pinned map `name`, checked against its spec (max entries too when `cfg`
    is given); the caller closes the fd. NotLoaded if the pin is missing, MapMismatch naming every
    difference if the map is not the one this build expects."""
    path = os.path.join(pin_dir, name)
    if not os.path.exists(path):
        raise NotLoaded(f"{path} is missing: no xdpguard program loaded there, or its pins are "
                        f"incomplete; {fix_text(pin_dir)}")
    fd = bpfsys.obj_get(path)
    try:
        info = bpfsys.map_info(fd)
        diff = SPECS[name].differences(info, cfg)
        if diff:
            raise MapMismatch(f"pinned map {path} has {', '.join(diff)}: it was loaded by another "
                              f"xdpguard build; {fix_text(pin_dir)}")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def read_config(fd: int, pin_dir: str) -> Config:
    """The `config` map's entry, refused with MapMismatch unless its magic is this build's."""
    cfg = Config()
    bpfsys.lookup(fd, ctypes.c_uint32(0), cfg)
    if cfg.magic != XG_MAGIC:
        raise MapMismatch(f"the program pinned in {pin_dir} was loaded by another xdpguard build "
                          f"(config magic {cfg.magic:#x}, this build's is {XG_MAGIC:#x}); "
                          f"{fix_text(pin_dir)}")
    return cfg


def open_checked(pin_dir: str, names: tuple[str, ...] | list[str] = ()
                 ) -> tuple[Config, dict[str, tuple[int, MapInfo]]]:
    """The one compatibility check every verb and service that opens the pins runs (load,
    Datapath.open, the ring readers): the `config` magic is this build's and EVERY pinned map of
    MAPS matches its spec, max entries included. Returns the config and (fd, info) of each map
    in `names` (the caller closes them; the others are closed here). NotLoaded if a pin is
    missing, MapMismatch naming every difference; both end with fix_text()."""
    opened: dict[str, tuple[int, MapInfo]] = {}
    try:
        opened["config"] = open_pinned(pin_dir, "config")
        cfg = read_config(opened["config"][0], pin_dir)
        for spec in MAPS[1:]:
            opened[spec.name] = open_pinned(pin_dir, spec.name, cfg)
    except BaseException:
        for fd, _ in opened.values():
            os.close(fd)
        raise
    for name in [n for n in opened if n not in names]:
        os.close(opened.pop(name)[0])
    return cfg, opened
