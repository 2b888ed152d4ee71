"""The live maps of a loaded xdpguard program, opened from their pins.

`Datapath.open(pin_dir)` checks every pinned map's type, key size, value size and max entries
against this build's structs (and the sizes recorded in the config map at load) before the
first write, and refuses a mismatch with MapMismatch. Rules go in and out as
services.records.rules.Rule; expiry is converted between Unix epoch ns (rules) and kernel
monotonic ns (maps). Safe to use from several processes: each write is one map update.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import time
from dataclasses import dataclass

from . import bpfsys
from .bpfsys import (MAP_TYPE_ARRAY, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE, MAP_TYPE_PERCPU_ARRAY,
                     MAP_TYPE_PERCPU_HASH, MAP_TYPE_RINGBUF)
from services.common.errors import ConfigError, KernelError, MapFull, MapMismatch, NotLoaded
from services.records.rules import Action, Origin, Rule, Scope
from .structs import (ACT_DROP, ACT_PASS, ORIGIN_MANUAL, ORIGIN_MODEL, STAT_FIELDS, XG_LIMIT_MASKS,
                      XG_MAGIC, Addr16, AddrKey, AllowVal, Config, Counter, Flow4Key, Flow6Key, LimitDst,
                      LimitKey, LimitVal, LpmKey, PrefixVal, RuleVal, Stats, addr_bytes, addr_text,
                      lpm_key, lpm_text)

_ORIGIN = {Origin.MANUAL: ORIGIN_MANUAL, Origin.MODEL: ORIGIN_MODEL}
_ORIGIN_BACK = {v: k for k, v in _ORIGIN.items()}
_ACTION = {Action.DROP: ACT_DROP, Action.PASS: ACT_PASS}
_ACTION_BACK = {v: k for k, v in _ACTION.items()}
LIMIT_BURST_S = 0.1  # a limit rule lets a burst of rate/10 packets through at once


@dataclass(frozen=True)
class RuleStats:
    rule: Rule
    hits: int
    bytes: int
    dropped: int = 0


def mono_offset_ns() -> int:
    """Unix epoch ns minus kernel monotonic ns (CLOCK_MONOTONIC = bpf_ktime_get_ns)."""
    return time.time_ns() - time.monotonic_ns()


def to_mono(epoch_ns: int) -> int:
    return 0 if not epoch_ns else max(1, epoch_ns - mono_offset_ns())


def to_epoch(mono_ns: int) -> int:
    return 0 if not mono_ns else mono_ns + mono_offset_ns()


def pinned_maps_id(pin_dir: str) -> int:
    """Kernel id of the `config` map pinned in `pin_dir`: a new id each time the program is loaded
    (the loader pins `config` first and `prog` last), 0 when none can be opened. Raises
    KernelError only if the pinned object cannot be described."""
    try:
        fd = bpfsys.obj_get(os.path.join(pin_dir, "config"))
    except KernelError:
        return 0
    try:
        return bpfsys.map_info(fd).id
    finally:
        os.close(fd)


class _Map:
    def __init__(self, name: str, fd: int, key, value, percpu: bool):
        self.name, self.fd, self.key, self.value, self.percpu = name, fd, key, value, percpu
        self.max_entries = 0


class Datapath:
    # name -> (map type, key struct, value struct, config field holding max entries)
    LAYOUT = {
        "config": (MAP_TYPE_ARRAY, ctypes.c_uint32, Config, None),
        "stats": (MAP_TYPE_PERCPU_ARRAY, ctypes.c_uint32, Stats, None),
        "allow": (MAP_TYPE_LPM_TRIE, LpmKey, AllowVal, "allow_max"),
        "exact4": (MAP_TYPE_PERCPU_HASH, Flow4Key, RuleVal, "exact_max"),
        "exact6": (MAP_TYPE_PERCPU_HASH, Flow6Key, RuleVal, "exact_max"),
        "src_prefix": (MAP_TYPE_LPM_TRIE, LpmKey, PrefixVal, "prefix_max"),
        "src_stats": (MAP_TYPE_PERCPU_HASH, LpmKey, Counter, "prefix_max"),
        "dst_limit": (MAP_TYPE_HASH, LimitKey, LimitVal, "limit_max"),
        "limit_dst": (MAP_TYPE_HASH, AddrKey, LimitDst, "limit_max"),
        "limit_stats": (MAP_TYPE_PERCPU_HASH, LimitKey, Counter, "limit_max"),
    }

    def __init__(self, pin_dir: str, maps: dict[str, _Map]):
        self.pin_dir, self._maps, self._ncpu = pin_dir, maps, bpfsys.possible_cpus()

    @classmethod
    def open(cls, pin_dir: str = "/sys/fs/bpf/xdpguard") -> "Datapath":
        if not os.path.exists(os.path.join(pin_dir, "prog")):
            raise NotLoaded(f"no xdpguard program pinned in {pin_dir}; run `xdpguard load -i IFACE`")
        maps: dict[str, _Map] = {}
        try:
            for name, (mtype, key, value, _) in cls.LAYOUT.items():
                path = os.path.join(pin_dir, name)
                if not os.path.exists(path):
                    raise NotLoaded(f"{path} is missing: the program's pins are incomplete; reload it")
                m = _Map(name, bpfsys.obj_get(path), key, value, mtype in (5, 6))
                maps[name] = m
                info = bpfsys.map_info(m.fd)
                want = (mtype, ctypes.sizeof(key), ctypes.sizeof(value))
                got = (info.type, info.key_size, info.value_size)
                if got != want:
                    raise MapMismatch(
                        f"pinned map {path} has type/key/value sizes {got}, this build expects "
                        f"{want}: it was loaded by another xdpguard version; unload and load again")
                m.max_entries = info.max_entries
            dp = cls(pin_dir, maps)
            dp._check_config()
            return dp
        except BaseException:
            for m in maps.values():
                os.close(m.fd)
            raise

    def _check_config(self) -> None:
        cfg = self._config()
        if cfg.magic != XG_MAGIC:
            raise MapMismatch(f"{self.pin_dir}/config has magic {cfg.magic:#x}, this build expects "
                              f"{XG_MAGIC:#x}: unload and load again")
        for name, (_, _, _, field) in self.LAYOUT.items():
            if field and self._maps[name].max_entries != getattr(cfg, field):
                raise MapMismatch(f"pinned map {self.pin_dir}/{name} holds {self._maps[name].max_entries} "
                                  f"entries but the program was loaded with {getattr(cfg, field)}")

    def close(self) -> None:
        for m in self._maps.values():
            os.close(m.fd)
        self._maps = {}

    def __enter__(self) -> "Datapath":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- per-CPU helpers -------------------------------------------------------------
    def _percpu(self, vtype):
        # per-CPU values are copied one per possible CPU, each padded to 8 bytes
        assert ctypes.sizeof(vtype) % 8 == 0
        return (vtype * self._ncpu)()

    def _write(self, name: str, key, value, what: str) -> None:
        m = self._maps[name]
        if m.percpu:
            arr = self._percpu(m.value)
            for i in range(self._ncpu):
                arr[i] = value
            value = arr
        try:
            bpfsys.update(m.fd, key, value)
        except bpfsys.BpfErrno as exc:
            if exc.errno in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM):
                raise MapFull(f"{what} map is full ({m.max_entries} entries): delete rules or "
                              f"load with a larger size") from None
            raise

    def _read_sum(self, name: str, key):
        """The value of `key` (per-CPU values summed field by field for counters)."""
        m = self._maps[name]
        if not m.percpu:
            v = m.value()
            return v if bpfsys.lookup(m.fd, key, v) else None
        arr = self._percpu(m.value)
        if not bpfsys.lookup(m.fd, key, arr):
            return None
        total = m.value.from_buffer_copy(arr[0])
        for f, _ in m.value._fields_:
            if f in ("packets", "bytes", "dropped") or m.value is Stats:
                setattr(total, f, sum(getattr(arr[i], f) for i in range(self._ncpu)))
        return total

    # -- config ----------------------------------------------------------------------
    def _config(self) -> Config:
        cfg = Config()
        bpfsys.lookup(self._maps["config"].fd, ctypes.c_uint32(0), cfg)
        return cfg

    def sample_rate(self) -> int:
        return self._config().sample_rate

    def set_sample_rate(self, n: int) -> None:
        if not 0 <= n < 2**32:
            raise ConfigError(f"sample rate {n} out of range (0 = off, N = 1 in N)")
        cfg = self._config()
        cfg.sample_rate = n
        bpfsys.update(self._maps["config"].fd, ctypes.c_uint32(0), cfg)

    def stats(self) -> dict[str, int]:
        s = self._read_sum("stats", ctypes.c_uint32(0)) or Stats()
        return {f: getattr(s, f) for f in STAT_FIELDS}

    def occupancy(self) -> dict[str, tuple[int, int]]:
        """{map: (entries, max entries)} for the rule maps."""
        return {n: (len(bpfsys.keys(self._maps[n].fd, self._maps[n].key)), self._maps[n].max_entries)
                for n in ("exact4", "exact6", "src_prefix", "allow", "dst_limit")}

    # -- rules -----------------------------------------------------------------------
    @staticmethod
    def _flow_key(rule: Rule):
        """(map name, key) of an exact rule: IPv4 and IPv6 live in separate maps."""
        src, dst = ipaddress.ip_address(rule.src), ipaddress.ip_address(rule.dst)
        if src.version != dst.version:
            raise ConfigError(f"source {rule.src} and destination {rule.dst} are different IP versions")
        if src.version == 4:
            return "exact4", Flow4Key((ctypes.c_uint8 * 4)(*src.packed), (ctypes.c_uint8 * 4)(*dst.packed),
                                      rule.sport, rule.dport, rule.proto)
        return "exact6", Flow6Key(Addr16(*src.packed), Addr16(*dst.packed), rule.sport, rule.dport,
                                  rule.proto)

    @staticmethod
    def _limit_key(rule: Rule) -> LimitKey:
        return LimitKey(Addr16(*addr_bytes(rule.dst)), rule.dport, rule.proto, rule.tcp_flags)

    def add_rule(self, rule: Rule) -> None:
        """Insert or replace `rule` (replacing resets its counters). MapFull when there is no room."""
        origin = _ORIGIN[rule.origin]
        exp = to_mono(rule.expires_ns)
        if rule.scope is Scope.FLOW:
            if rule.action not in _ACTION:
                raise ConfigError("an exact rule's action is drop or pass")
            name, key = self._flow_key(rule)
            self._write(name, key, RuleVal(exp, rule.created_ns, 0, 0, _ACTION[rule.action], origin),
                        f"exact-rule ({'IPv4' if name == 'exact4' else 'IPv6'})")
        elif rule.scope is Scope.SRC_PREFIX:
            if rule.action not in _ACTION:
                raise ConfigError("a source-prefix rule's action is drop or pass")
            key = lpm_key(rule.src)
            self._write("src_stats", key, Counter(), "source-prefix counter")
            self._write("src_prefix", key, PrefixVal(exp, rule.created_ns, key.prefixlen,
                                                     _ACTION[rule.action], origin), "source-prefix")
        else:
            if rule.tcp_flags and rule.proto not in (0, 6):
                raise ConfigError("TCP-flag masks apply to TCP only")
            if rule.dport and not rule.proto:
                raise ConfigError("a limit on a port needs a protocol")
            key = self._limit_key(rule)
            if rule.tcp_flags and not rule.proto:
                key.proto = 6
            interval = max(1, 1_000_000_000 // rule.rate_pps)
            burst = max(interval, int(LIMIT_BURST_S * 1e9))
            self._write("limit_stats", key, Counter(), "limit counter")
            self._write("dst_limit", key, LimitVal(exp, rule.created_ns, interval, burst, 0,
                                                   rule.rate_pps, origin), "limit")
            try:
                self._sync_limit_dst(key.daddr)
            except ConfigError:
                bpfsys.delete(self._maps["dst_limit"].fd, key)
                raise

    def delete_rule(self, rule: Rule) -> bool:
        if rule.scope is Scope.FLOW:
            name, key = self._flow_key(rule)
            return bpfsys.delete(self._maps[name].fd, key)
        if rule.scope is Scope.SRC_PREFIX:
            key = lpm_key(rule.src)
            found = bpfsys.delete(self._maps["src_prefix"].fd, key)
            bpfsys.delete(self._maps["src_stats"].fd, key)
            return found
        key = self._limit_key(rule)
        if rule.tcp_flags and not rule.proto:
            key.proto = 6
        found = bpfsys.delete(self._maps["dst_limit"].fd, key)
        bpfsys.delete(self._maps["limit_stats"].fd, key)
        self._sync_limit_dst(key.daddr)
        return found

    def _sync_limit_dst(self, daddr) -> None:
        """Recompute which TCP-flag masks the kernel tries for one destination."""
        raw = bytes(daddr)
        masks = {k.tcp_flags for k in bpfsys.keys(self._maps["dst_limit"].fd, LimitKey)
                 if bytes(k.daddr) == raw}
        akey = AddrKey(Addr16(*raw))
        if not masks:
            bpfsys.delete(self._maps["limit_dst"].fd, akey)
            return
        if len(masks) > XG_LIMIT_MASKS:
            raise ConfigError(f"at most {XG_LIMIT_MASKS} distinct TCP-flag masks per destination")
        # most specific (most bits) first, "no flags" (0) last
        order = sorted(masks, key=lambda m: (-bin(m).count("1"), m))
        val = LimitDst()
        for i, m in enumerate(order):
            val.masks[i] = m
        val.nmasks = len(order)
        self._write("limit_dst", akey, val, "limit")

    def rules(self) -> list[RuleStats]:
        out: list[RuleStats] = []
        for name, ktype in (("exact4", Flow4Key), ("exact6", Flow6Key)):
            out.extend(self._exact_rules(name, ktype))
        for key in bpfsys.keys(self._maps["src_prefix"].fd, LpmKey):
            v = self._read_sum("src_prefix", key)
            if v is None:
                continue
            c = self._read_sum("src_stats", key) or Counter()
            rule = Rule(Scope.SRC_PREFIX, _ACTION_BACK.get(v.action, Action.DROP), src=lpm_text(key),
                        origin=_ORIGIN_BACK.get(v.origin, Origin.MODEL), created_ns=v.created_ns,
                        expires_ns=to_epoch(v.expires_ns))
            out.append(RuleStats(rule, c.packets, c.bytes, c.dropped))
        for key in bpfsys.keys(self._maps["dst_limit"].fd, LimitKey):
            v = self._read_sum("dst_limit", key)
            if v is None:
                continue
            c = self._read_sum("limit_stats", key) or Counter()
            rule = Rule(Scope.DST_LIMIT, Action.LIMIT, dst=addr_text(key.daddr), dport=key.dport,
                        proto=key.proto, tcp_flags=key.tcp_flags, rate_pps=v.rate_pps,
                        origin=_ORIGIN_BACK.get(v.origin, Origin.MODEL), created_ns=v.created_ns,
                        expires_ns=to_epoch(v.expires_ns))
            out.append(RuleStats(rule, c.packets, c.bytes, c.dropped))
        return out

    def _exact_rules(self, name: str, ktype) -> list[RuleStats]:
        out = []
        for key in bpfsys.keys(self._maps[name].fd, ktype):
            v = self._read_sum(name, key)
            if v is None:
                continue
            if name == "exact4":
                src, dst = str(ipaddress.IPv4Address(bytes(key.saddr))), str(ipaddress.IPv4Address(bytes(key.daddr)))
            else:
                src, dst = addr_text(key.saddr), addr_text(key.daddr)
            rule = Rule(Scope.FLOW, _ACTION_BACK.get(v.action, Action.DROP), src=src, dst=dst,
                        sport=key.sport, dport=key.dport, proto=key.proto,
                        origin=_ORIGIN_BACK.get(v.origin, Origin.MODEL), created_ns=v.created_ns,
                        expires_ns=to_epoch(v.expires_ns))
            out.append(RuleStats(rule, v.packets, v.bytes, v.packets if v.action == ACT_DROP else 0))
        return out

    # -- allowlist -------------------------------------------------------------------
    def allow_add(self, cidr: str, origin: Origin = Origin.MANUAL) -> None:
        try:
            key = lpm_key(cidr)
        except ValueError as exc:
            raise ConfigError(f"bad prefix {cidr!r}: {exc}") from None
        self._write("allow", key, AllowVal(time.time_ns(), _ORIGIN[Origin(origin)]), "allowlist")

    def allow_del(self, cidr: str) -> bool:
        try:
            key = lpm_key(cidr)
        except ValueError as exc:
            raise ConfigError(f"bad prefix {cidr!r}: {exc}") from None
        return bpfsys.delete(self._maps["allow"].fd, key)

    def allowlist(self) -> list[str]:
        return [lpm_text(k) for k in bpfsys.keys(self._maps["allow"].fd, LpmKey)]
