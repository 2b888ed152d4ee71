"""Host rules (/32, /128) in their inline slots (map src_host_slot), the part of Datapath
(services/dataplane/datapath.py) that decides where a host rule lives and reads the slots back.

A host rule lives in exactly one place: its src_host_slot slot or the src_host4 / src_host6
hash. It goes to the hash when the hash holds its address already (replaced there) or its slot
holds another address; else to the slot. Its src_filter slot counts it wherever it is (it gates
both lookups); config's n_host4 / n_host6 count the hash entries only (they gate the hash
lookup). The slot of an address is the top XG_HOST_SLOT_BITS bits of its src_filter slot
(structs.host_slot), as the program computes it.

The slot directory: config's n_host_slot counts the slots that hold a rule (the program skips
the slot lookup while it is 0) and config's host_slot_used has a bit per slot, set before a
slot is written and cleared after it is emptied (the two kept together, in one write of the
config, under the pin-directory lock like every count). occupancy() reads n_host_slot (no slot
read) and rules() reads only the slots whose bit is set, so neither costs the 4,096 reads of
every slot's per-CPU copies that a scan takes; recount() alone scans every slot and rebuilds the
directory (after slots were written by other means than this class, or a write was interrupted
after its update returned: the counts raised for it are lowered only when the update failed);
the enforcer runs recount() at start.

Eviction (frees_room): a host rule meets MapFull only when its slot holds another address and
its family's hash is full; deleting a rule frees room for it only if that rule is in the same
hash or is the one in its slot. An enforcer making room for it asks frees_room for each
candidate, so it never lifts a block that frees nothing.

Torn reads: a slot is written with one update of its per-CPU copies, while the program may read
the copy of the CPU it runs on, without a lock. A packet that meets a copy being written may see
a mix of the old and the new value (the address of one, the action, expiry or counters of the
other; a slot being emptied may look like a rule with action 0 and no expiry, which passes), and
its counter increment may be lost. That is at most the one packet per CPU that runs during the
few-ns copy of that CPU's 64 bytes, as with the in-place updates of the per-CPU hashes (their
values are copied over in place the same way). A replace of a rule (slot or hash) carries its
counters over from a read of its per-CPU copies made just before the update (Datapath._write's
`counts`): the increments the program makes between that read and the update (a syscall apart,
microseconds) are lost too.
"""
from __future__ import annotations

import ctypes
import functools
import ipaddress
import struct

from services.common.errors import KernelError
from services.records.rules import Origin, Rule, Scope

from . import bpfsys
from .entries import ORIGIN_BACK, flow_key, host_addr, limit_key, prefix_slot
from .structs import Addr16, Config, HostSlot, RuleVal, host_slot


class HostSlots:
    """Mixed into Datapath: uses its _maps, _percpu, _read_percpu, _read_sum, _write, _books,
    _insert, _remove, _config, _put_config."""

    def _add_host(self, rule: Rule, name: str, key, field: str, value: RuleVal) -> None:
        """Insert or replace host rule `rule` (hash `name`, key `key`, config count `field`):
        in its inline slot if it belongs there (_slot_host), else in the hash."""
        if not self._slot_host(rule, name, key, value):
            self._insert(name, key, value, "source-host", field, (host_addr(rule), "host"))

    def _delete_host(self, rule: Rule, name: str, key, field: str) -> bool:
        """Remove host rule `rule` from wherever it is; False if it was in neither place."""
        return self._unslot_host(rule, name) or self._remove(name, key, field, (host_addr(rule), "host"))

    def _host_slot_of(self, rule: Rule, name: str) -> tuple[int, HostSlot]:
        """(index, value) of the inline slot of host rule `rule` (whose hash is `name`,
        src_host4 or src_host6): the slot's value (counters summed over CPUs) if it holds
        `rule`'s address, else an empty HostSlot() (family 0)."""
        idx = host_slot(host_addr(rule))
        cur = self._read_sum("src_host_slot", ctypes.c_uint32(idx)) or HostSlot()
        fam = 4 if name == "src_host4" else 6
        return idx, cur if (cur.family, bytes(cur.addr)) == (fam, _slot_addr(rule, name)) else HostSlot()

    def _slot_host(self, rule: Rule, name: str, key, value: RuleVal) -> bool:
        """Write host rule `rule` (hash `name`, key `key`) to its inline slot if it belongs there
        (the hash does not hold it and the slot is empty or holds its address): True if it
        was written there, False if it goes to the hash. A replace (the slot holds its address)
        keeps each CPU's packets and bytes and takes the rest from `value`: one read of the
        slot's per-CPU copies, then one update (an increment the program makes on a CPU between
        the two is lost, see "Torn reads"); a rule new to the slot starts at 0."""
        if self._exists(name, key):
            return False
        idx = host_slot(host_addr(rule))
        old = self._read_percpu("src_host_slot", ctypes.c_uint32(idx))
        cur = old[0] if old is not None else None  # address and family: alike on every CPU
        addr = _slot_addr(rule, name)
        fam = 4 if name == "src_host4" else 6
        if cur is not None and cur.family and (cur.family, bytes(cur.addr)) != (fam, addr):
            return False
        new = not (cur is not None and cur.family)
        if new:
            self._books(None, (host_addr(rule), "host"), None, 1)
            self._slot_dir(idx, True)
        try:
            self._write("src_host_slot", ctypes.c_uint32(idx), HostSlot(Addr16(*addr), value, fam),
                        "host slot", counts=None if new else old)
        except KernelError:  # the update failed: nothing written (not after it returned)
            if new:
                self._books(None, (host_addr(rule), "host"), None, -1)
                self._slot_dir(idx, False)
            raise
        return True

    def _unslot_host(self, rule: Rule, name: str) -> bool:
        """Empty the inline slot of host rule `rule` (zeros on every CPU) and lower its counts if
        the slot holds it: True, else False (it may be in the hash)."""
        idx, slot = self._host_slot_of(rule, name)
        if not slot.family:
            return False
        self._write("src_host_slot", ctypes.c_uint32(idx), HostSlot(), "host slot")
        self._books(None, (host_addr(rule), "host"), None, -1)
        self._slot_dir(idx, False)
        return True

    def _slot_dir(self, idx: int, used: bool) -> None:
        """Set (`used`) or clear slot `idx`'s bit in config's directory and set n_host_slot to
        the bits set, in one config write (callers hold the lock)."""
        cfg = self._config()
        bit = 1 << idx % 32
        cfg.host_slot_used[idx // 32] = (cfg.host_slot_used[idx // 32] | bit if used
                                         else cfg.host_slot_used[idx // 32] & ~bit)
        cfg.n_host_slot = _bits(cfg)
        self._put_config(cfg)

    def _slot_occupancy(self) -> tuple[int, int]:
        """(inline slots holding a rule, slots): config's n_host_slot, no slot read."""
        return self._config().n_host_slot, self._maps["src_host_slot"].max_entries

    def _rule_keys(self, name: str, ktype) -> list:
        """The keys of rule map `name` (for entries.read_rules): of src_host_slot only the slots
        the directory marks, of the others every key."""
        return self._slot_keys() if name == "src_host_slot" else bpfsys.keys(self._maps[name].fd, ktype)

    def _slot_keys(self, cfg: Config | None = None) -> list[ctypes.c_uint32]:
        """The indexes of the slots the directory marks as used (of `cfg`, else read)."""
        words = (cfg or self._config()).host_slot_used
        return [ctypes.c_uint32(w * 32 + b) for w in range(len(words)) if words[w]
                for b in range(32) if words[w] >> b & 1]

    def _host_slots(self, every: bool = False) -> list[tuple[int, HostSlot]]:
        """(index, value with counters summed over CPUs) of the slots the directory marks, or
        (`every`) of every slot: XG_HOST_SLOTS reads of every CPU's copy (recount, tests)."""
        idx = (range(self._maps["src_host_slot"].max_entries) if every
               else [k.value for k in self._slot_keys()])
        return [(i, self._read_sum("src_host_slot", ctypes.c_uint32(i)) or HostSlot()) for i in idx]

    def _rescan_slots(self) -> None:
        """Rebuild the directory and n_host_slot from a read of every slot (recount(); callers
        hold the lock): the one place that reads all XG_HOST_SLOTS slots."""
        slots = self._host_slots(every=True)
        cfg = self._config()
        for w in range(len(cfg.host_slot_used)):
            cfg.host_slot_used[w] = 0
        for i, v in slots:
            if v.family:
                cfg.host_slot_used[i // 32] |= 1 << i % 32
        cfg.n_host_slot = _bits(cfg)
        self._put_config(cfg)

    def _exists(self, name: str, key) -> bool:
        m = self._maps[name]
        return bpfsys.lookup(m.fd, key, self._percpu(m.value) if m.percpu else m.value())

    def placement(self, rule: Rule) -> tuple[str, int]:
        """(map, slot) where `rule` needs room when add_rule meets MapFull, from the rule alone
        (no map read): a host rule's family hash and its inline slot, any other rule its map
        and -1. The enforcer's policy groups model rules by it (evict_for_full_map)."""
        return rule_placement(rule)

    def origin(self, rule: Rule) -> Origin | None:
        """The origin of the entry the maps hold under `rule`'s key (Origin.MANUAL or
        Origin.MODEL, read as rules() reads it), None if there is none: one lookup (a host rule
        not in its inline slot: two), no scan. The enforcer reads it under the lock before it
        deletes or overwrites a rule it tracks as a model rule: `xdpguard add` may have written a
        manual rule over that key since (docs/enforcer.md)."""
        if rule.scope is Scope.FLOW:
            name, key = self._exact_place(rule)
        elif rule.scope is Scope.SRC_PREFIX:
            name, key, _ = prefix_slot(rule)
            if name in ("src_host4", "src_host6"):
                slot = self._host_slot_of(rule, name)[1]
                if slot.family:
                    return ORIGIN_BACK.get(slot.rule.origin, Origin.MODEL)
        else:
            name, key = "dst_limit", limit_key(rule)
        value = self._read_sum(name, key)
        value = getattr(value, "rule", value)  # exact6's Rule6Val
        return None if value is None else ORIGIN_BACK.get(value.origin, Origin.MODEL)

    def frees_room(self, victim: Rule, rule: Rule) -> bool:
        """Whether deleting the installed rule `victim` makes room for `rule`, whose add_rule
        raised MapFull: `victim` sits in the map `rule` goes to (exact4; exact6 or exact6x, read
        from the maps: ExactPlace._frees_exact6; src_prefix4 / src_prefix, dst_limit), or, for
        a host rule, in the same family's hash (src_host4 / src_host6) or in `rule`'s inline
        slot (`rule` takes the slot then); a host rule in another slot frees nothing for it.
        The rules' placements are parsed once (_placed)."""
        name, _, slot = _placed(rule)
        vname, vkey, vslot = _placed(victim)
        if name == vname == "exact6":  # either may be in exact6x, the collisions' map
            return self._frees_exact6(victim, rule)
        if slot < 0 or vslot < 0:
            return slot < 0 and vslot < 0 and vname == name
        if vslot == slot and self._host_slot_of(victim, vname)[1].family:
            return True  # the address in rule's slot
        return vname == name and self._exists(vname, vkey)


def sum_slot_counters(total, percpu) -> None:
    """If `total` is a HostSlot, set total.rule's packets and bytes to their sums over the
    per-CPU copies `percpu` (any other value: nothing). Read with struct from the copies'
    buffer: a ctypes proxy per CPU and field cost rules() ~10% with 2,000 host rules."""
    if not isinstance(total, HostSlot):
        return
    packets = nbytes = 0
    for at in range(_COUNTS_AT, ctypes.sizeof(percpu), ctypes.sizeof(HostSlot)):
        p, b = _COUNTS.unpack_from(percpu, at)
        packets += p
        nbytes += b
    total.rule.packets, total.rule.bytes = packets, nbytes


# an xg_host_slot's rule packets and bytes: two u64 in this machine's order, where they sit
_COUNTS = struct.Struct("=QQ")
_COUNTS_AT = HostSlot.rule.offset + RuleVal.packets.offset
assert RuleVal.bytes.offset == RuleVal.packets.offset + 8


def _bits(cfg: Config) -> int:
    """Slots config's directory marks as used."""
    return sum(bin(w).count("1") for w in cfg.host_slot_used)


def rule_placement(rule: Rule) -> tuple[str, int]:
    """HostSlots.placement, as a function of the rule alone: read from the rule's text, which
    Rule keeps in its one form (an IPv4 address or prefix has no ':', a v4-mapped one is written
    as IPv4), without building the map key (the policy asks it of every model rule it tracks:
    _placed's lpm_key took ~65 us per IPv6 host rule). Equal to _placed's (unit-tested)."""
    if rule.scope is Scope.FLOW:
        return ("exact6" if ":" in rule.src else "exact4"), -1
    if rule.scope is not Scope.SRC_PREFIX:
        return "dst_limit", -1
    addr, _, length = rule.src.rpartition("/")
    v6 = ":" in addr
    if int(length) == (128 if v6 else 32):
        return ("src_host6" if v6 else "src_host4"), host_slot(addr)
    return ("src_prefix" if v6 else "src_prefix4"), -1


@functools.lru_cache(maxsize=1 << 16)
def _placed(rule: Rule) -> tuple[str, object, int]:
    """(map, key, slot) of `rule`: a host rule's family hash, its key there and its inline
    slot; any other rule's map, None and -1 (cached: an eviction asks it of many victims)."""
    if rule.scope is Scope.FLOW:
        return flow_key(rule)[0], None, -1
    if rule.scope is not Scope.SRC_PREFIX:
        return "dst_limit", None, -1
    name, key, _ = prefix_slot(rule)
    if name in ("src_host4", "src_host6"):
        return name, key, host_slot(host_addr(rule))
    return name, None, -1


def _slot_addr(rule: Rule, name: str) -> bytes:
    """The 16 addr bytes of host rule `rule` in its inline slot: IPv4 (src_host4) in the first
    4, the rest 0; IPv6 as is."""
    packed = ipaddress.ip_address(host_addr(rule)).packed
    return packed + b"\0" * (16 - len(packed))
