"""Host rules (/32, /128) in their inline slots (map src_host_slot), the part of Datapath
(services/dataplane/datapath.py) that decides where a host rule lives and reads the slots back.

A host rule lives in exactly one place: its src_host_slot slot or the src_host4 / src_host6
hash. It goes to the hash when the hash holds its address already (replaced there) or its slot
holds another address; else to the slot. Its src_filter slot counts it wherever it is (it gates
both lookups); config's n_host4 / n_host6 count the hash entries only (they gate the hash
lookup). The slot of an address is the top XG_HOST_SLOT_BITS bits of its src_filter slot
(structs.host_slot), as the program computes it.

Torn reads: a slot is written with one update of its per-CPU copies, while the program may read
the copy of the CPU it runs on, without a lock. A packet that meets a copy being written may see
a mix of the old and the new value (the address of one, the action, expiry or counters of the
other; a slot being emptied may look like a rule with action 0 and no expiry, which passes), and
its counter increment may be lost. That is at most the one packet per CPU that runs during the
few-ns copy of that CPU's 64 bytes, as with the in-place updates of the per-CPU hashes (their
values are copied over in place the same way).
"""
from __future__ import annotations

import ctypes
import ipaddress

from services.records.rules import Rule

from . import bpfsys
from .entries import host_addr
from .structs import Addr16, HostSlot, RuleVal, host_slot


class HostSlots:
    """Mixed into Datapath: uses its _maps, _percpu, _read_sum, _write, _books, _insert, _remove."""

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
        was written there, False if it goes to the hash. Replacing resets its counters."""
        if self._exists(name, key):
            return False
        idx = host_slot(host_addr(rule))
        cur = self._read_sum("src_host_slot", ctypes.c_uint32(idx))
        addr = _slot_addr(rule, name)
        fam = 4 if name == "src_host4" else 6
        if cur is not None and cur.family and (cur.family, bytes(cur.addr)) != (fam, addr):
            return False
        new = not (cur is not None and cur.family)
        if new:
            self._books(None, (host_addr(rule), "host"), None, 1)
        try:
            self._write("src_host_slot", ctypes.c_uint32(idx), HostSlot(Addr16(*addr), value, fam),
                        "host slot")
        except BaseException:
            if new:
                self._books(None, (host_addr(rule), "host"), None, -1)
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
        return True

    def _slot_occupancy(self) -> tuple[int, int]:
        """(inline slots holding a rule, slots)."""
        return (sum(1 for _, v in self._host_slots() if v.family), self._maps["src_host_slot"].max_entries)

    def _exists(self, name: str, key) -> bool:
        m = self._maps[name]
        return bpfsys.lookup(m.fd, key, self._percpu(m.value) if m.percpu else m.value())

    def _host_slots(self) -> list[tuple[int, HostSlot]]:
        """Every inline slot (index, value with counters summed over CPUs)."""
        return [(i, self._read_sum("src_host_slot", ctypes.c_uint32(i)) or HostSlot())
                for i in range(self._maps["src_host_slot"].max_entries)]


def sum_slot_counters(total, percpu) -> None:
    """If `total` is a HostSlot, set total.rule's packets and bytes to their sums over the
    per-CPU copies `percpu` (any other value: nothing)."""
    if not isinstance(total, HostSlot):
        return
    for f in ("packets", "bytes"):
        setattr(total.rule, f, sum(getattr(v.rule, f) for v in percpu))


def _slot_addr(rule: Rule, name: str) -> bytes:
    """The 16 addr bytes of host rule `rule` in its inline slot: IPv4 (src_host4) in the first
    4, the rest 0; IPv6 as is."""
    packed = ipaddress.ip_address(host_addr(rule)).packed
    return packed + b"\0" * (16 - len(packed))
