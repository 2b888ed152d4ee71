"""The enforcer's security policy, as pure logic: no kernel, no Kafka, no clock of its own.

`RulePolicy.decide(order, now_ns)` answers what to do with one verdict: apply a rule (perhaps
after evicting older model rules to stay within the bound), refresh one already installed, or
refuse it with a reason. `RulePolicy.expire(now_ns)` lists the rules whose TTL ran out. The map
actuator (actuator.py) carries the decisions out on the pinned maps and the `rules` topic;
dry-run mode only logs them. (The scorer's policy, which windows become verdicts, is another
thing.)

The promises (issue 7): the allowlist and this host's own addresses can never be targeted; every
model rule has a TTL; model rules are capped per second, per minute and per source; the model rule
set is bounded, the oldest model rules are evicted first and manual rules never; each verdict id is
acted on at most once. Every refusal and eviction carries a reason so it can be counted and logged.
"""
from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable

from services.records.rules import Origin, Rule, Scope
from services.records.verdict import targets

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RulePolicyConfig:
    """What a RulePolicy protects and how far it lets verdicts go (addresses and CIDRs as text)."""
    node_id: str
    allowlist: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    local_addresses: tuple[str, ...] = ()
    ttl_s: float = 600.0            # model rules without a TTL of their own
    max_ttl_s: float = 3600.0       # a verdict cannot ask for more
    max_per_second: int = 50
    max_per_minute: int = 1000
    max_per_source: int = 32        # installed model rules whose target is one source address
    max_model_rules: int = 50_000   # bound on installed model rules (well below the map sizes)
    seen_ids: int = 100_000         # verdict ids remembered for at-most-once


@dataclass(frozen=True)
class Order:
    """What the enforcer needs from a verdict (the adapter builds it from the codec's record)."""
    id: str
    node: str
    rule: Rule
    ttl_s: float = 0.0
    reason: str = ""


class Outcome(str, Enum):
    APPLY = "apply"        # install `rule` (after removing `evict`)
    REFRESH = "refresh"    # same rule already installed: extend its expiry
    IGNORE = "ignore"      # not for this node, or a verdict id seen before
    REFUSE = "refuse"      # against the policy; `reason` says which part


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str = ""
    rule: Rule | None = None
    evict: tuple[Rule, ...] = ()
    code: str = ""         # short label for metrics: allowlisted, local, rate, per_source, manual


@dataclass
class _Installed:
    rule: Rule
    source: str  # the address the rule targets, for the per-source cap ("" if none)
    home: tuple[str, int] = ("", -1)  # model rules: where the maps hold it (RuleMaps.placement)


def _one_map(rule: Rule) -> tuple[str, int]:
    """The placement of a policy without maps: every rule in one map, no slot."""
    return "", -1


@dataclass
class RulePolicy:
    """The enforcer's view of the installed rule set and the rules of issue 7 over it (pure: the
    caller passes the time, in Unix epoch ns, and carries decisions out). `home` is the maps'
    RuleMaps.placement: model rules are kept grouped by it, so a full map's eviction looks only
    at the rules in that map (evict_for_full_map)."""
    config: RulePolicyConfig
    home: Callable[[Rule], tuple[str, int]] = _one_map
    _allow: list[Network] = field(default_factory=list)
    _local: set[str] = field(default_factory=set)
    _rules: "OrderedDict[str, _Installed]" = field(default_factory=OrderedDict)  # oldest first
    _per_source: dict[str, int] = field(default_factory=dict)
    _recent: deque = field(default_factory=deque)  # install times (ns) within the last minute
    _seen: "OrderedDict[str, None]" = field(default_factory=OrderedDict)
    # model rule keys by placement: map name -> slot (-1: none) -> keys
    _homes: dict[str, dict[int, dict[str, None]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._base = [ipaddress.ip_network(c, strict=False) for c in self.config.allowlist]
        self._allow = list(self._base)
        self._local = {str(_unmap(ipaddress.ip_address(a))) for a in self.config.local_addresses}

    # -- state the service feeds in ------------------------------------------------------------
    def allow(self, cidr: str) -> None:
        self._base.append(ipaddress.ip_network(cidr, strict=False))
        self._allow.append(self._base[-1])

    def set_kernel_allowlist(self, cidrs: list[str]) -> None:
        """The kernel allowlist as it is now (`xdpguard allow add|del` while we run)."""
        nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self._allow = list(dict.fromkeys(self._base + nets))

    def allowlist(self) -> list[str]:
        return [str(n) for n in self._allow]

    def track(self, rule: Rule) -> None:
        """Record a rule known to be installed (restored, or found in the maps at start)."""
        self._forget(rule.key())
        if rule.origin is not Origin.MODEL:
            self._rules[rule.key()] = _Installed(rule, _target(rule))
            return
        home = self.home(rule)
        self._rules[rule.key()] = _Installed(rule, _target(rule), home)
        self._homes.setdefault(home[0], {}).setdefault(home[1], {})[rule.key()] = None
        src = self._rules[rule.key()].source
        if src:
            self._per_source[src] = self._per_source.get(src, 0) + 1

    def tracked(self, key: str) -> Rule | None:
        """The rule tracked under `key`, None if none."""
        old = self._rules.get(key)
        return None if old is None else old.rule

    def untrack(self, rule: Rule) -> None:
        self._forget(rule.key())

    def installed(self) -> list[Rule]:
        return [i.rule for i in self._rules.values()]

    def model_count(self) -> int:
        return sum(1 for i in self._rules.values() if i.rule.origin is Origin.MODEL)

    # -- decisions -----------------------------------------------------------------------------
    def decide(self, order: Order, now_ns: int) -> Decision:
        if not targets(order.node, self.config.node_id):
            return Decision(Outcome.IGNORE, "for another node")
        if order.id:
            if order.id in self._seen:
                return Decision(Outcome.IGNORE, "verdict already handled")
            self._seen[order.id] = None
            while len(self._seen) > self.config.seen_ids:
                self._seen.popitem(last=False)
        refusal = self.protected(order.rule)
        if refusal:
            code = "local" if "local" in refusal else "allowlisted"
            return Decision(Outcome.REFUSE, refusal, code=code)
        ttl = order.ttl_s if order.ttl_s > 0 else self.config.ttl_s
        ttl = min(ttl, self.config.max_ttl_s)
        rule = replace(order.rule, origin=Origin.MODEL).with_times(now_ns, ttl)
        current = self._rules.get(rule.key())
        if current is not None:
            if current.rule.origin is Origin.MANUAL:
                return Decision(Outcome.REFUSE, "a manual rule with this key exists", code="manual")
            if current.rule.action is rule.action:
                # Only rewrite when half the TTL is gone, so a verdict every window is not a write.
                left = current.rule.expires_ns - now_ns
                if current.rule.expires_ns and left > (rule.expires_ns - now_ns) / 2:
                    return Decision(Outcome.IGNORE, "already installed")
                return Decision(Outcome.REFRESH, "extended",
                                replace(rule, created_ns=current.rule.created_ns))
        cap = self._rate_refusal(now_ns)
        if cap:
            return Decision(Outcome.REFUSE, cap, code="rate")
        src = _target(rule)
        if src and current is None and self._per_source.get(src, 0) >= self.config.max_per_source:
            return Decision(Outcome.REFUSE, f"per-source cap ({self.config.max_per_source}) for {src}",
                            code="per_source")
        evict = self._evictions(1 if current is None else 0)
        return Decision(Outcome.APPLY, order.reason, rule, tuple(evict))

    def protected(self, rule: Rule) -> str:
        """Why `rule` may not be installed from a verdict ("" if it may)."""
        for addr in _addresses(rule):
            if isinstance(addr, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                for net in self._allow:
                    if any(n.version == net.version and n.overlaps(net) for n in _views(addr)):
                        return f"{addr} overlaps allowlisted {net}"
                for local in self._local:
                    ip = ipaddress.ip_address(local)
                    if any(ip.version == n.version and ip in n for n in _views(addr)):
                        return f"{addr} contains local address {local}"
            else:
                ip = _unmap(addr)
                for net in self._allow:
                    if ip.version == net.version and ip in net:
                        return f"{addr} is allowlisted ({net})"
                if rule.scope is not Scope.DST_LIMIT and str(ip) in self._local:
                    return f"{addr} is a local address"
        return ""

    def commit(self, decision: Decision, now_ns: int) -> None:
        """Record that `decision` was carried out (or would have been, in dry run)."""
        for old in decision.evict:
            self._forget(old.key())
        if decision.rule is None:
            return
        if decision.outcome is Outcome.APPLY:
            self._recent.append(now_ns)
        self.track(decision.rule)

    def expire(self, now_ns: int) -> list[Rule]:
        """Rules whose expiry has passed, removed from the policy's view."""
        gone = [i.rule for i in self._rules.values() if i.rule.expired(now_ns)]
        for rule in gone:
            self._forget(rule.key())
        return gone

    def evict_for_full_map(self, rule: Rule,
                           frees: Callable[[Rule], bool] = lambda r: True) -> Rule | None:
        """The map said full for `rule` although the bound was not reached: the oldest model rule
        to drop among those for which `frees(victim)` holds (RuleMaps.frees_room: it sits where
        `rule` needs room), None if there is none. Only the model rules placed in `rule`'s map
        (any slot), and those of other maps in `rule`'s slot (a host rule's inline slot), are
        candidates, so the cost is bounded by the rules in that map, not by every model rule;
        `frees` is asked of them oldest first, until it holds."""
        name, slot = self.home(rule)
        keys = [k for group in self._homes.get(name, {}).values() for k in group]
        if slot >= 0:
            keys += [k for m, slots in self._homes.items() if m != name for k in slots.get(slot, ())]
        heap = [(self._rules[k].rule.created_ns, k) for k in keys]
        heapq.heapify(heap)
        while heap:
            victim = self._rules[heapq.heappop(heap)[1]].rule
            if frees(victim):
                return victim
        return None

    # -- internals -----------------------------------------------------------------------------
    def _rate_refusal(self, now_ns: int) -> str:
        while self._recent and now_ns - self._recent[0] >= 60_000_000_000:
            self._recent.popleft()
        if len(self._recent) >= self.config.max_per_minute:
            return f"rate cap ({self.config.max_per_minute}/min)"
        last_second = sum(1 for t in self._recent if now_ns - t < 1_000_000_000)
        if last_second >= self.config.max_per_second:
            return f"rate cap ({self.config.max_per_second}/s)"
        return ""

    def _evictions(self, incoming: int, force: bool = False) -> list[Rule]:
        excess = self.model_count() + incoming - self.config.max_model_rules
        if force:
            excess = max(excess, 1)
        if excess <= 0:
            return []
        # Oldest first by creation time; manual rules are never evicted.
        model = (i.rule for i in self._rules.values() if i.rule.origin is Origin.MODEL)
        return heapq.nsmallest(excess, model, key=lambda r: r.created_ns)

    def _forget(self, key: str) -> None:
        old = self._rules.pop(key, None)
        if old is None or old.rule.origin is not Origin.MODEL:
            return
        slots = self._homes.get(old.home[0], {})
        group = slots.get(old.home[1], {})
        group.pop(key, None)
        if not group:
            slots.pop(old.home[1], None)
            if not slots:
                self._homes.pop(old.home[0], None)
        if old.source:
            left = self._per_source.get(old.source, 0) - 1
            if left > 0:
                self._per_source[old.source] = left
            else:
                self._per_source.pop(old.source, None)


def _target(rule: Rule) -> str:
    """The source a rule acts against (per-source cap), '' for destination limits."""
    if rule.scope is Scope.FLOW:
        return str(_unmap(ipaddress.ip_address(rule.src)))
    if rule.scope is Scope.SRC_PREFIX:
        return rule.src.split("/")[0] if rule.src.endswith(("/32", "/128")) else rule.src
    return ""


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _unmap(ip):
    """The IPv4 address an IPv4-mapped IPv6 address stands for (the kernel keys both alike)."""
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip


def _views(net) -> list:
    """`net` and, for IPv6 prefixes that reach into ::ffff:0:0/96, the IPv4 range they cover."""
    views = [net]
    if net.version == 6:
        if net.subnet_of(_MAPPED):
            views.append(ipaddress.IPv4Network(
                (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)))
        elif _MAPPED.subnet_of(net):
            views.append(ipaddress.IPv4Network("0.0.0.0/0"))
    return views


def _addresses(rule: Rule):
    if rule.scope is Scope.FLOW:
        return [ipaddress.ip_address(rule.src)]
    if rule.scope is Scope.SRC_PREFIX:
        return [ipaddress.ip_network(rule.src, strict=False)]
    return [ipaddress.ip_address(rule.dst)]
