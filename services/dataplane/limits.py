"""Destination limit rules (dst_limit, its counter in limit_stats, the per-destination mask list
in limit_dst), the part of Datapath (services/dataplane/datapath.py) that writes and deletes
them. Callers hold the pin-directory lock (Datapath's add_rule / delete_rule)."""
from __future__ import annotations

import errno

from services.common.errors import ConfigError
from services.records.rules import Rule

from . import bpfsys
from .entries import expired_mono, limit_key
from .structs import XG_LIMIT_MASKS, Addr16, AddrKey, Counter, LimitDst, LimitKey, LimitVal

LIMIT_BURST_S = 0.1  # a limit rule lets a burst of rate/10 packets through at once


class LimitRules:
    """Mixed into Datapath: uses its _maps, _write, _read_sum, _insert, _remove."""

    def _add_limit(self, rule: Rule, origin: int, exp: int) -> None:
        """Insert or replace limit rule `rule` (origin and monotonic expiry `exp` as the map
        holds them): its counter (limit_stats: a new rule's from 0; a replaced rule keeps its
        own, one missing is made from 0), the rule (dst_limit: the new value; a replaced rule
        keeps its GCRA state, the theoretical arrival time `tat`, so a REFRESH does not let a
        fresh burst through; a new rule's tat is 0, and so is that of a rule written over an
        expired entry of its key, whose counter starts at 0 too), then the destination's mask
        list (limit_dst) rebuilt from a full scan of dst_limit; if that list would exceed
        XG_LIMIT_MASKS the rule is taken out again (ConfigError)."""
        key = limit_key(rule)
        interval = max(1, 1_000_000_000 // rule.rate_pps)
        burst = max(interval, int(LIMIT_BURST_S * 1e9))
        held = self._read_sum("dst_limit", key)  # a replace keeps the bucket where it is
        if held is not None and expired_mono(held.expires_ns):
            held = None  # an expired entry: the new rule starts afresh (review 17 F1)
        try:
            self._write("limit_stats", key, Counter(), "limit counter",
                        bpfsys.BPF_ANY if held is None else bpfsys.BPF_NOEXIST)
        except bpfsys.BpfErrno as exc:  # a replace: its counter is there, kept as it is
            if exc.errno != errno.EEXIST:
                raise
        tat = held.tat if held is not None else 0
        self._insert("dst_limit", key, LimitVal(exp, rule.created_ns, interval, burst, tat,
                                                rule.rate_pps, origin), "limit", "n_limit")
        try:
            self._sync_limit_dst(key.daddr)
        except ConfigError:  # one mask too many: the new rule (never a replaced one) goes
            self._remove("dst_limit", key, "n_limit")
            bpfsys.delete(self._maps["limit_stats"].fd, key)
            raise

    def _delete_limit(self, rule: Rule) -> bool:
        """Remove limit rule `rule` and its counter, rebuild limit_dst; False if it was not in
        dst_limit."""
        key = limit_key(rule)
        found = self._remove("dst_limit", key, "n_limit")
        bpfsys.delete(self._maps["limit_stats"].fd, key)
        self._sync_limit_dst(key.daddr)
        return found

    def _sync_limit_dst(self, daddr) -> None:
        """Recompute which TCP-flag masks the kernel tries for one destination from a scan of
        dst_limit (callers hold the lock, or a concurrent writer's mask could be lost)."""
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
