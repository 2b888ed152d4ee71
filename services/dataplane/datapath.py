"""The live maps of a loaded xdpguard program, opened from their pins.

`Datapath.open(pin_dir)` runs the pins' compatibility check (services.dataplane.maps.open_checked:
the config map's magic, every pinned map's type, key and value size, flags and max entries)
before the first write, and refuses a mismatch with MapMismatch.
Rules go in and out as services.records.rules.Rule; expiry is converted between Unix epoch ns
(rules) and kernel monotonic ns (maps).

Every rule map has a rule count in the config map (xg_config.n_*: the program skips a map whose
count is 0; the inline host slots have n_host_slot and a directory: hostslots.py), every exact or
host rule's source a slot in `src_filter` (a packet whose source's slot is 0 skips the exact and
host lookups), every shorter source prefix its length in the config's per-length counts and
bitmaps (plens4/plens6: one hash per length in use) and, if at least /16 (IPv4) or /32 (IPv6), a
slot in `src_pfx_filter`; these methods keep them all, raising them before an entry is written and
lowering them after one is deleted, so none is ever below the truth (`recount()` rebuilds them).

Several processes may edit the same maps (the enforcer, the CLI): every mutating method holds the
pin directory's flock (services.dataplane.pinlock) for its whole update, which may span maps (a
limit rule writes limit_stats and dst_limit, then rebuilds limit_dst from a scan of dst_limit), so
each update is atomic with respect to every other xdpguard writer. `with dp.locked():` holds the
lock across several calls. Reads take no lock. The XDP program reads without a lock too: it may
see a multi-map update half done (docs/dataplane.md, "Concurrent edits").
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import time
from dataclasses import dataclass

from services.common.errors import ConfigError, MapFull, NotLoaded
from services.common.paths import DEFAULT_PIN_DIR
from services.records.rules import Origin, Rule, Scope

from . import bpfsys
from .maps import MAPS, RULE_MAPS, SPECS, MapSpec, open_checked
from .entries import (ACTION, ORIGIN, RuleStats, count_length, expired_mono, filter_counts,
                      flow6, mono_offset_ns, prefix_slot, read_rules, to_mono)
from .exactplace import ExactPlace
from .hostslots import HostSlots, sum_slot_counters
from .limits import LimitRules
from .pinlock import PinLock
from .structs import (COUNT_FIELDS, STAT_FIELDS, AllowVal, Config, FilterSlot, HostSlot, Lpm4Key,
                      LpmKey, Rule6Val, RuleVal, Stats, band_add, bands_at_least, filter_slot, lpm_key,
                      lpm_text, pfx_filter_band, pfx_filter_slot)

__all__ = ["Datapath", "RuleStats", "mono_offset_ns", "pinned_maps_id"]

def pinned_maps_id(pin_dir: str) -> int:
    """Kernel id of the `config` map pinned in `pin_dir`: a new id each time the program is loaded
    (the loader pins `config` first and `prog` last), 0 when none can be opened. Raises
    KernelError only if the pinned object cannot be described."""
    return bpfsys.pinned_map_id(os.path.join(pin_dir, "config"))


@dataclass
class _Map:
    spec: MapSpec
    fd: int
    max_entries: int

    @property
    def key(self):
        return self.spec.key

    @property
    def value(self):
        return self.spec.value

    @property
    def percpu(self) -> bool:
        return self.spec.percpu


def _writes(method):
    """Run a mutating method under the pin directory's lock (re-entrant: see pinlock)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


class Datapath(HostSlots, LimitRules, ExactPlace):
    """Rules, allowlist, counters and sampling of the program pinned in `pin_dir`.

    Errors: NotLoaded (nothing pinned), MapMismatch (another layout), MapFull, ConfigError (a rule
    the maps cannot hold), PinDirBusy (another writer held the lock past `lock_timeout_s`)."""

    def __init__(self, pin_dir: str, maps: dict[str, _Map], lock_timeout_s: float | None = 5.0):
        self.pin_dir, self._maps, self._ncpu = pin_dir, maps, bpfsys.possible_cpus()
        self._lock = PinLock(pin_dir, lock_timeout_s)

    @classmethod
    def open(cls, pin_dir: str = DEFAULT_PIN_DIR, lock_timeout_s: float | None = 5.0) -> "Datapath":
        """Open and check every map but the ring buffer (services.dataplane.ringbuf reads that)."""
        if not os.path.exists(os.path.join(pin_dir, "prog")):
            raise NotLoaded(f"no xdpguard program pinned in {pin_dir}; run `xdpguard load -i IFACE`")
        _, opened = open_checked(pin_dir, [s.name for s in MAPS if s.name != "events"])
        maps = {name: _Map(SPECS[name], fd, info.max_entries) for name, (fd, info) in opened.items()}
        try:
            return cls(pin_dir, maps, lock_timeout_s)
        except BaseException:
            for m in maps.values():
                os.close(m.fd)
            raise

    def locked(self) -> PinLock:
        """`with dp.locked():` keeps other writers out across several calls (re-entrant)."""
        return self._lock

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

    def _write(self, name: str, key, value, what: str, flags: int = bpfsys.BPF_ANY,
               counts=None) -> None:
        """Write key -> value (in a per-CPU map: on every CPU). `counts`, the per-CPU copies of
        the entry being replaced (_read_percpu) or None: each CPU's copy keeps that CPU's
        packets and bytes (a RuleVal's, a HostSlot's .rule's), every other field is `value`'s;
        unless that entry has expired (entries.expired_mono: review 17 F1), when it starts at 0.
        An increment the program makes on a CPU between the read of `counts` and this update is
        lost, as with every in-place update of a per-CPU value (hostslots.py, "Torn reads")."""
        m = self._maps[name]
        nested = m.value in (HostSlot, Rule6Val)  # the rule with its counters is .rule
        if counts is not None and expired_mono((counts[0].rule if nested
                                                else counts[0]).expires_ns):
            counts = None  # an expired entry's hits are not the new rule's: it starts at 0
        if m.percpu:
            arr = self._percpu(m.value)
            for i in range(self._ncpu):
                arr[i] = value
                if counts is not None:
                    new, old = (arr[i].rule, counts[i].rule) if nested else (arr[i], counts[i])
                    new.packets, new.bytes = old.packets, old.bytes
            value = arr
        try:
            bpfsys.update(m.fd, key, value, flags)
        except bpfsys.BpfErrno as exc:
            if exc.errno in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM):
                raise MapFull(f"{what} map is full ({m.max_entries} entries): delete rules or "
                              f"load with a larger size") from None
            raise

    def _read_percpu(self, name: str, key):
        """The per-CPU copies of `key` in per-CPU map `name` (one lookup), None if absent."""
        m = self._maps[name]
        arr = self._percpu(m.value)
        return arr if bpfsys.lookup(m.fd, key, arr) else None

    def _read_sum(self, name: str, key):
        """The value of `key` (per-CPU values summed field by field for counters)."""
        m = self._maps[name]
        if not m.percpu:
            v = m.value()
            return v if bpfsys.lookup(m.fd, key, v) else None
        arr = self._read_percpu(name, key)
        if arr is None:
            return None
        total = m.value.from_buffer_copy(arr[0])
        for f, _ in m.value._fields_:
            if f in ("packets", "bytes", "dropped") or (m.value is Stats and f in STAT_FIELDS):
                setattr(total, f, sum(getattr(arr[i], f) for i in range(self._ncpu)))
        sum_slot_counters(total, arr)  # an inline host rule's counters are in .rule
        if m.value is Rule6Val:  # so are exact6's
            total.rule.packets = sum(arr[i].rule.packets for i in range(self._ncpu))
            total.rule.bytes = sum(arr[i].rule.bytes for i in range(self._ncpu))
        return total

    # -- config ----------------------------------------------------------------------
    def _config(self) -> Config:
        cfg = Config()
        bpfsys.lookup(self._maps["config"].fd, ctypes.c_uint32(0), cfg)
        return cfg

    def _put_config(self, cfg: Config) -> None:
        bpfsys.update(self._maps["config"].fd, ctypes.c_uint32(0), cfg)

    def sample_rate(self) -> int:
        return self._config().sample_rate

    @_writes
    def set_sample_rate(self, n: int) -> None:
        """Sample 1 in `n` unmatched packets to the ring (0 = off). ConfigError if out of range."""
        if not 0 <= n < 2**32:
            raise ConfigError(f"sample rate {n} out of range (0 = off, N = 1 in N)")
        cfg = self._config()
        cfg.sample_rate = n
        self._put_config(cfg)

    def _count(self, field: str, delta: int, prefix: Lpm4Key | LpmKey | None = None) -> None:
        """Add `delta` to the config map's rule count `field`, and for a source `prefix` (its
        src_prefix4 / src_prefix key) to its length's count and bit, in one write (callers hold
        the lock)."""
        cfg = self._config()
        setattr(cfg, field, max(0, getattr(cfg, field) + delta))
        if prefix is not None:
            count_length(cfg, isinstance(prefix, Lpm4Key), prefix.prefixlen, delta)
        self._put_config(cfg)

    def _slot(self, src: tuple[str, str] | None, delta: int) -> None:
        """Add `delta` to one counter ("exact" or "host") of the src_filter slot of a source
        address: `src` is (address, counter), None for a rule of neither kind."""
        if src is None:
            return
        fd, key, slot = self._maps["src_filter"].fd, ctypes.c_uint32(filter_slot(src[0])), FilterSlot()
        bpfsys.lookup(fd, key, slot)
        setattr(slot, src[1], max(0, getattr(slot, src[1]) + delta))
        bpfsys.update(fd, key, slot)

    def _pfx_slot(self, cidr: str | None, delta: int) -> None:
        """Add `delta` to a source prefix's band of its src_pfx_filter slot (band_add; none for a
        prefix shorter than the filter's length, or `cidr` None)."""
        s = None if cidr is None else pfx_filter_slot(cidr)
        if s is None:
            return
        fd, key, n = self._maps["src_pfx_filter"].fd, ctypes.c_uint32(s), ctypes.c_uint32()
        bpfsys.lookup(fd, key, n)
        bpfsys.update(fd, key, ctypes.c_uint32(band_add(n.value, pfx_filter_band(cidr), delta)))

    def _books(self, field: str, src: tuple[str, str] | None, prefix: tuple[str, object] | None,
               delta: int) -> None:
        """Every count a rule entry is in: config's `field` (None: none), the src_filter slot of
        `src`, and for a shorter source prefix ((cidr, key) in `prefix`) its length and slot."""
        if field is not None:
            self._count(field, delta, prefix and prefix[1])
        self._slot(src, delta)
        self._pfx_slot(prefix and prefix[0], delta)

    def _insert(self, name: str, key, value, what: str, field: str,
                src: tuple[str, str] | None = None, prefix: tuple[str, object] | None = None) -> None:
        """Write key -> value in a rule map, raising its counts (_books) first if the key is
        new; a replaced entry leaves them as they were, and in a per-CPU map keeps its per-CPU
        packets and bytes (one lookup, then the update: _write's `counts`). MapFull as _write."""
        self._books(field, src, prefix, 1)
        try:
            self._write(name, key, value, what, bpfsys.BPF_NOEXIST)
            return
        except (bpfsys.BpfErrno, MapFull) as exc:  # the update failed (not an interrupt after it)
            self._books(field, src, prefix, -1)
            if not (isinstance(exc, bpfsys.BpfErrno) and exc.errno == errno.EEXIST):
                raise
        counts = self._read_percpu(name, key) if self._maps[name].percpu else None
        self._write(name, key, value, what, counts=counts)

    def _remove(self, name: str, key, field: str, src: tuple[str, str] | None = None,
                prefix: tuple[str, object] | None = None) -> bool:
        """Delete key from a rule map, then lower its counts (_books) if it was there."""
        found = bpfsys.delete(self._maps[name].fd, key)
        if found:
            self._books(field, src, prefix, -1)
        return found

    def counts(self) -> dict[str, int]:
        """The rule counts the program reads from the config map ({"n_exact4": 3, ...})."""
        cfg = self._config()
        return {f: getattr(cfg, f) for f in COUNT_FIELDS}

    @_writes
    def recount(self) -> dict[str, int]:
        """Set every rule count (and the per-length counts and bitmaps of source prefixes) from
        the maps themselves (after entries were written or deleted by other means than this
        class) and return the n_* counts; raise every src_filter slot and src_pfx_filter band
        of a rule to at least its true count (a slot left above it costs a lookup, never a rule;
        clearing all XG_FILTER_SLOTS would take a syscall each)."""
        self._rescan_slots()  # the slot directory first: rules() reads the slots it marks
        want, want_pfx = filter_counts([rs.rule for rs in self.rules()])
        fd = self._maps["src_filter"].fd
        for s, n in want.items():
            slot = FilterSlot()
            bpfsys.lookup(fd, ctypes.c_uint32(s), slot)
            if slot.exact < n.exact or slot.host < n.host:
                bpfsys.update(fd, ctypes.c_uint32(s), FilterSlot(max(slot.exact, n.exact),
                                                                 max(slot.host, n.host)))
        fd = self._maps["src_pfx_filter"].fd
        for s, bands in want_pfx.items():
            got = ctypes.c_uint32()
            bpfsys.lookup(fd, ctypes.c_uint32(s), got)
            if (word := bands_at_least(got.value, bands)) != got.value:
                bpfsys.update(fd, ctypes.c_uint32(s), ctypes.c_uint32(word))
        maps = dict(n_allow="allow", n_exact4="exact4", n_exact6="exact6", n_exact6x="exact6x", n_host4="src_host4",
                    n_host6="src_host6", n_prefix4="src_prefix4", n_prefix6="src_prefix", n_limit="dst_limit")
        keys = {m: bpfsys.keys(self._maps[m].fd, self._maps[m].key) for m in maps.values()}
        cfg = self._config()  # n_host_slot as _rescan_slots set it
        got = {f: len(keys[m]) for f, m in maps.items()} | {"n_host_slot": cfg.n_host_slot}
        for f, n in got.items():
            setattr(cfg, f, n)
        cfg.plens4, cfg.plens6, cfg.n_len4, cfg.n_len6 = 0, type(cfg.plens6)(), type(cfg.n_len4)(), type(cfg.n_len6)()
        for name in ("src_prefix4", "src_prefix"):
            for k in keys[name]:
                count_length(cfg, name == "src_prefix4", k.prefixlen, 1)
        self._put_config(cfg)
        return got

    def stats(self) -> dict[str, int]:
        s = self._read_sum("stats", ctypes.c_uint32(0)) or Stats()
        return {f: getattr(s, f) for f in STAT_FIELDS}

    def occupancy(self) -> dict[str, tuple[int, int]]:
        """{map: (entries, max entries)} for the rule maps (src_host_slot: the slots in use)."""
        return {**{n: (len(bpfsys.keys(self._maps[n].fd, self._maps[n].key)), self._maps[n].max_entries)
                   for n in RULE_MAPS}, "src_host_slot": self._slot_occupancy()}

    # -- rules -----------------------------------------------------------------------
    @_writes
    def add_rule(self, rule: Rule) -> None:
        """Insert or replace `rule`, under the pin-dir lock. A replaced rule (the same key: an
        enforcer REFRESH with a later expiry, a manual rule over a model one) takes the new
        value's expiry, creation time, action and origin and keeps its counters: each CPU's
        packets and bytes in the per-CPU rule maps and inline slots (read, then written back with
        the new value: an increment the program makes on a CPU between the two syscalls is
        lost), a limit rule's limit_stats counter and GCRA state as they are. A new rule's
        counters start at 0, and so do those of a rule written over an expired entry of its key.

        Each new entry raises its map's rule count in config first. An exact rule is one update
        (exact4 or exact6), a host rule (/32, /128) too (its inline slot in src_host_slot, else
        src_host4 or src_host6: hostslots.py; counters in the value). A shorter source-prefix
        rule too (src_prefix4 for IPv4, src_prefix for IPv6, by length and network address,
        counters in the value), after its length's count and bit and its src_pfx_filter band
        are raised. A limit rule is three or more: its counter (limit_stats), the rule
        (dst_limit), then the destination's mask list (limit_dst) rebuilt from a full scan of
        dst_limit; if that list would exceed XG_LIMIT_MASKS the rule is taken out again
        (ConfigError; limits.py). The lock makes the sequence atomic for other xdpguard
        writers. MapFull when a map has no room (maps written before it keep their new entry)."""
        origin = ORIGIN[rule.origin]
        exp = to_mono(rule.expires_ns)
        if rule.scope is Scope.FLOW:  # Rule has checked the action, flags and families
            value = RuleVal(exp, rule.created_ns, 0, 0, ACTION[rule.action], origin)
            name, key = self._exact_place(rule)
            if name == "exact6":
                value = Rule6Val(value, *flow6(rule)[2:])
            self._insert(name, key, value, f"exact-rule ({'IPv4' if name == 'exact4' else 'IPv6'})",
                         "n_" + name, (rule.src, "exact"))
        elif rule.scope is Scope.SRC_PREFIX:
            name, key, field = prefix_slot(rule)
            value = RuleVal(exp, rule.created_ns, 0, 0, ACTION[rule.action], origin)
            if name in ("src_host4", "src_host6"):
                self._add_host(rule, name, key, field, value)
            else:
                self._insert(name, key, value, "source-prefix", field, None, (rule.src, key))
        else:
            self._add_limit(rule, origin, exp)

    @_writes
    def delete_rule(self, rule: Rule) -> bool:
        """Remove `rule` and its counter (a limit rule also rebuilds limit_dst), under the
        pin-dir lock. False if no such rule was in the map."""
        if rule.scope is Scope.FLOW:
            name, key = self._exact_place(rule)
            return self._remove(name, key, "n_" + name, (rule.src, "exact"))
        if rule.scope is Scope.SRC_PREFIX:
            name, key, field = prefix_slot(rule)
            if name in ("src_host4", "src_host6"):
                return self._delete_host(rule, name, key, field)
            return self._remove(name, key, field, None, (rule.src, key))
        return self._delete_limit(rule)

    def rules(self) -> list[RuleStats]:
        """Every rule in the maps with its counters (expiry in Unix epoch ns). An entry that
        makes no valid Rule (written by something other than this build) is left out, logged."""
        return read_rules(self._rule_keys, self._read_sum)

    # -- allowlist -------------------------------------------------------------------
    @_writes
    def allow_add(self, cidr: str, origin: Origin = Origin.MANUAL) -> None:
        """Allowlist a source prefix (one update of `allow`). ConfigError on a bad prefix."""
        try:
            key = lpm_key(cidr)
        except ValueError as exc:
            raise ConfigError(f"bad prefix {cidr!r}: {exc}") from None
        self._insert("allow", key, AllowVal(time.time_ns(), ORIGIN[Origin(origin)]), "allowlist",
                     "n_allow")

    @_writes
    def allow_del(self, cidr: str) -> bool:
        try:
            key = lpm_key(cidr)
        except ValueError as exc:
            raise ConfigError(f"bad prefix {cidr!r}: {exc}") from None
        return self._remove("allow", key, "n_allow")

    def allowlist(self) -> list[str]:
        return [lpm_text(k) for k in bpfsys.keys(self._maps["allow"].fd, LpmKey)]
