"""Differential fuzzing of the XDP program: random, mutated and truncated frames, a rule set, and
a reference model (pure Python, written from docs/dataplane.md's precedence and parse rules and
bpf/xdpguard.c) that says what the kernel must answer for each frame.

The invariant the reliability promise needs is "nothing without a matching rule is dropped";
the model checks more: allowlisted sources always pass, exact and prefix rules give their action,
a rate-limited destination may pass or drop, everything else passes, and every sampled event
carries exactly the 5-tuple the reference parser reads. Used by
tests/kernel/test_rel_fuzz_xdp.py (a seeded few thousand frames) and bench/fuzz_xdp.py (>= 1e6).
"""
from __future__ import annotations

import ipaddress
import random
import struct
import time
from dataclasses import dataclass, field

from services.dataplane import loader
from services.dataplane.structs import XG_IPV6_EXT_MAX, XG_VLAN_MAX, addr_bytes, addr_text
from services.records.rules import Action, Rule, Scope
from tests.support.dp_env import Env

XDP_ABORTED, XDP_DROP, XDP_PASS = 0, 1, 2
ETH_IP, ETH_IP6, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS = 0, 43, 44, 60
TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
MIN_FRAME = 14      # BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header
MAX_FRAME = 3000    # and longer than a page minus head/tail room
FUZZ_SIZES = loader.Sizes(exact=64, prefix=64, allow=64, limit=16, ring_pages=64)

# Address pools: rules target some of them, frames draw from all of them.
V4 = ["10.66.0.1", "10.66.5.9", "10.66.7.7", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.2.0.2",
      "10.2.0.3", "10.77.1.1", "192.0.2.1", "198.51.100.4", "10.9.9.9"]
V6 = ["fd66::1", "fd66:0:5::9", "fd00::1", "fd00::2", "fd00::3", "2001:db8::1", "fd77::1"]


def rule_set(now_ns: int) -> tuple[list[Rule], list[str]]:
    """Rules of every scope and action (one already expired) and an allowlist overlapping them."""
    past = now_ns - 10**9
    rules = [
        Rule(Scope.FLOW, Action.DROP, src="10.1.0.1", dst="10.2.0.2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.FLOW, Action.DROP, src="10.1.0.2", dst="10.2.0.2", sport=53, dport=53, proto=UDP),
        Rule(Scope.FLOW, Action.DROP, src="10.1.0.3", dst="10.2.0.2", proto=UDP),  # fragments
        Rule(Scope.FLOW, Action.DROP, src="10.1.0.1", dst="10.2.0.3", proto=ICMP),
        Rule(Scope.FLOW, Action.DROP, src="fd00::1", dst="fd00::2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.FLOW, Action.DROP, src="fd00::3", dst="fd00::2", proto=UDP),
        Rule(Scope.FLOW, Action.PASS, src="10.66.0.1", dst="10.2.0.2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.FLOW, Action.DROP, src="10.66.7.7", dst="10.2.0.2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.SRC_PREFIX, Action.DROP, src="10.66.0.0/16"),
        Rule(Scope.SRC_PREFIX, Action.PASS, src="10.66.5.0/24"),
        Rule(Scope.SRC_PREFIX, Action.DROP, src="fd66::/32"),
        Rule(Scope.SRC_PREFIX, Action.PASS, src="fd66:0:5::/48"),
        Rule(Scope.SRC_PREFIX, Action.DROP, src="10.77.0.0/16", created_ns=past - 10**9,
             expires_ns=past),
        Rule(Scope.FLOW, Action.DROP, src="10.9.9.9", dst="10.2.0.2", sport=1000, dport=80,
             proto=TCP, created_ns=past - 10**9, expires_ns=past),
        Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", dport=80, proto=TCP, tcp_flags=0x02,
             rate_pps=1000),
        Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", proto=UDP, rate_pps=5),
        Rule(Scope.DST_LIMIT, Action.LIMIT, dst="2001:db8::1", rate_pps=1),
    ]
    allow = ["10.66.7.0/24", "fd00::1/128"]
    return rules, allow


@dataclass
class Parsed:
    saddr: bytes
    daddr: bytes
    sport: int = 0
    dport: int = 0
    proto: int = 0
    tcp_flags: int = 0
    fragment: bool = False


def _v4mapped(raw4: bytes) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + raw4


def _l4(f: bytes, cur: int, p: Parsed) -> Parsed | None:
    end = len(f)
    if p.proto == TCP:
        if cur + 20 > end:
            return None
        p.sport, p.dport = struct.unpack_from("!HH", f, cur)
        p.tcp_flags = f[cur + 13]
    elif p.proto == UDP:
        if cur + 8 > end:
            return None
        p.sport, p.dport = struct.unpack_from("!HH", f, cur)
    elif p.proto in (ICMP, ICMP6):
        if cur + 4 > end:
            return None
    return p


def parse(f: bytes) -> Parsed | str:
    """Parsed fields, or "fail" (truncated/malformed) or "non_ip"; both must pass."""
    end = len(f)
    if end < 14:
        return "fail"
    proto = struct.unpack_from("!H", f, 12)[0]
    cur = 14
    for _ in range(XG_VLAN_MAX):
        if proto not in (ETH_VLAN, ETH_QINQ):
            break
        if cur + 4 > end:
            return "fail"
        proto = struct.unpack_from("!H", f, cur + 2)[0]
        cur += 4
    if proto == ETH_IP:
        if cur + 20 > end:
            return "fail"
        ver, hlen = f[cur] >> 4, (f[cur] & 0x0F) * 4
        if ver != 4 or hlen < 20 or cur + hlen > end:
            return "fail"
        p = Parsed(_v4mapped(f[cur + 12:cur + 16]), _v4mapped(f[cur + 16:cur + 20]), proto=f[cur + 9])
        if struct.unpack_from("!H", f, cur + 6)[0] & 0x1FFF:
            p.fragment = True
            return p
        return _l4(f, cur + hlen, p) or "fail"
    if proto == ETH_IP6:
        if cur + 40 > end:
            return "fail"
        p = Parsed(bytes(f[cur + 8:cur + 24]), bytes(f[cur + 24:cur + 40]))
        nh = f[cur + 6]
        cur += 40
        for _ in range(XG_IPV6_EXT_MAX):
            if nh in (HOPOPTS, ROUTING, DSTOPTS):
                if cur + 8 > end:
                    return "fail"
                nh, cur = f[cur], cur + (f[cur + 1] + 1) * 8
            elif nh == FRAGMENT:
                if cur + 8 > end:
                    return "fail"
                nh, off = f[cur], struct.unpack_from("!H", f, cur + 2)[0] & 0xFFF8
                cur += 8
                if off:
                    p.proto, p.fragment = nh, True
                    return p
            else:
                break
        if nh in (HOPOPTS, ROUTING, DSTOPTS, FRAGMENT):
            return "fail"
        p.proto = nh
        return _l4(f, cur, p) or "fail"
    return "non_ip"


@dataclass
class Model:
    """What the kernel must answer, from the same rules the maps hold: precedence allowlist >
    exact flow > longest source prefix > destination limit > pass (docs/dataplane.md), each
    level asking `Rule.covers` whether a rule matches."""
    rules: list[Rule]
    allow: list[str]
    now_ns: int
    _exact: list = field(default_factory=list)
    _prefix: list = field(default_factory=list)
    _allow: list = field(default_factory=list)
    _limits: list = field(default_factory=list)

    def __post_init__(self) -> None:
        for r in self.rules:
            if r.expired(self.now_ns):
                continue
            if r.scope is Scope.FLOW:
                self._exact.append(r)
            elif r.scope is Scope.SRC_PREFIX:
                self._prefix.append(r)
            else:
                self._limits.append(r)
        # an allowlist entry matches as a source prefix does
        self._allow = [Rule(Scope.SRC_PREFIX, Action.PASS, src=cidr) for cidr in self.allow]
        self._prefix.sort(key=lambda r: -ipaddress.ip_network(r.src).prefixlen)  # longest first

    def expect(self, f: bytes) -> tuple[set[int], str, Parsed | None]:
        """(verdicts allowed, why, parsed or None): the kernel's answer must be in the set."""
        p = parse(f)
        if isinstance(p, str):
            return {XDP_PASS}, p, None
        fields = (addr_text(p.saddr), addr_text(p.daddr), p.sport, p.dport, p.proto, p.tcp_flags)
        if any(a.covers(*fields) for a in self._allow):
            return {XDP_PASS}, "allow", p
        for level, rules in (("exact", self._exact), ("prefix", self._prefix)):
            r = next((r for r in rules if r.covers(*fields)), None)
            if r is not None:
                return {XDP_DROP if r.action is Action.DROP else XDP_PASS}, level, p
        if any(r.covers(*fields) for r in self._limits):
            return {XDP_PASS, XDP_DROP}, "limit", p
        return {XDP_PASS}, "unmatched", p


# --- the program under test ---------------------------------------------------------------

class FuzzEnv(Env):
    """A loaded, unattached program (tests/support/dp_env.py) holding the fuzz rule set, and the
    reference model of the same rules. Needs root, bpffs and BCC; `close()` unloads it."""

    def __init__(self) -> None:
        super().__init__(FUZZ_SIZES)
        now = time.time_ns()
        rules, allow = rule_set(now)
        for r in rules:
            self.dp.add_rule(r if r.expires_ns else r.with_times(now, None))
        for cidr in allow:
            self.dp.allow_add(cidr)
        self.model = Model(rules, allow, now)


def run_fuzz(env: FuzzEnv, frames, n: int, check_events: bool = True) -> dict:
    """Run n frames of `frames` through the program, each answer checked against the reference
    model and (check_events) every sampled event against the reference parse; the counters'
    deltas must add up. Raises AssertionError at the first wrong answer. Returns the tallies
    {frames, drop, fail, non_ip, unmatched, events}."""
    tally = {"frames": 0, "drop": 0, "fail": 0, "non_ip": 0, "unmatched": 0, "events": 0}
    expected_events: list[tuple] = []
    before = env.dp.stats()
    for i in range(n):
        f = next(frames)
        verdict = env.run(f)
        allowed, why, p = env.model.expect(f)
        assert verdict in allowed, (f"frame {i} ({why}): kernel said {verdict}, model allows "
                                    f"{sorted(allowed)}; frame={f.hex()}")
        tally["frames"] += 1
        tally["drop"] += verdict == XDP_DROP
        if why in ("fail", "non_ip", "unmatched"):
            tally[why] += 1
        if why == "unmatched" and check_events:
            expected_events.append((addr_text(p.saddr), addr_text(p.daddr), p.sport, p.dport,
                                    p.proto, p.tcp_flags, len(f), f.hex()))
        if check_events and (len(expected_events) >= 200 or i == n - 1):
            got = env.events()
            assert len(got) == len(expected_events), "sampled events lost or invented"
            for ev, want in zip(got, expected_events):
                assert (ev.src, ev.dst, ev.sport, ev.dport, ev.proto, ev.tcp_flags, ev.length) \
                    == want[:7], f"event differs from the reference parse of {want[7]}"
            tally["events"] += len(got)
            expected_events = []
    after = env.dp.stats()
    delta = {k: after[k] - before[k] for k in after}
    assert delta["seen"] == n
    assert delta["drop_exact"] + delta["drop_prefix"] + delta["drop_limit"] == tally["drop"]
    assert delta["passed"] == n - tally["drop"]
    assert delta["parse_fail"] == tally["fail"] and delta["non_ip"] == tally["non_ip"]
    assert delta["unmatched"] == tally["unmatched"]
    if check_events:
        assert delta["events_lost"] == 0
    return tally


# --- frame generation -----------------------------------------------------------------------

class Frames:
    """A seeded stream of frames: well-formed ones aimed at the rules, the same mutated
    (truncated, bytes flipped, trailers added), and raw garbage with IP-ish EtherTypes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.08:  # garbage
            n = rng.randrange(MIN_FRAME, 200)
            f = bytearray(rng.randbytes(n))
            f[12:14] = struct.pack("!H", rng.choice((ETH_IP, ETH_IP6, ETH_VLAN, ETH_QINQ, 0x0806,
                                                     rng.randrange(65536))))
            return bytes(f)
        f = bytearray(self.wellformed())
        if kind < 0.45:
            return bytes(f)
        if kind < 0.70:  # truncated anywhere from the Ethernet header on
            return bytes(f[:rng.randrange(MIN_FRAME, len(f) + 1)])
        if kind < 0.93:  # a few bytes flipped (headers only: that is where parsing happens)
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(12, min(len(f), 14 + 8 + 40 + 24 + 20))
                f[i] = rng.randrange(256) if rng.random() < 0.5 else f[i] ^ (1 << rng.randrange(8))
            return bytes(f[:MAX_FRAME])
        f += rng.randbytes(rng.randrange(0, MAX_FRAME - len(f)))  # oversized payload
        return bytes(f)

    def wellformed(self) -> bytes:
        rng = self.rng
        v6 = rng.random() < 0.35
        pool = V6 if v6 else V4
        src, dst = rng.choice(pool), rng.choice(pool)
        proto = rng.choice((TCP, TCP, UDP, UDP, ICMP6 if v6 else ICMP, rng.randrange(256)))
        sport = rng.choice((1000, 53, 0, rng.randrange(65536)))
        dport = rng.choice((80, 53, 0, rng.randrange(65536)))
        flags = rng.choice((0x02, 0x12, 0x10, 0x04, rng.randrange(256)))
        payload = rng.randbytes(rng.choice((0, 0, 8, 40, rng.randrange(1, 1200))))
        if proto == TCP:
            l4 = struct.pack("!HHIIBBHHH", sport, dport, rng.getrandbits(32), 0, 5 << 4, flags,
                             1024, 0, 0) + payload
        elif proto == UDP:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        else:
            l4 = struct.pack("!BBH", 8, 0, 0) + payload
        frag_later = rng.random() < 0.1
        if v6:
            nh, ext = proto, b""
            for _ in range(rng.choice((0, 0, 0, 1, 2, 5))):
                kind = rng.choice((HOPOPTS, ROUTING, DSTOPTS, FRAGMENT))
                if kind == FRAGMENT:
                    off = rng.randrange(1, 8192) if frag_later else 0
                    ext = struct.pack("!BBHI", nh, 0, off << 3, rng.getrandbits(32)) + ext
                else:
                    n = rng.choice((0, 0, 1))
                    ext = struct.pack("!BB", nh, n) + bytes(6 + 8 * n) + ext
                nh = kind
            body = ext + l4
            ip = struct.pack("!IHBB", 6 << 28, len(body), nh, 64) + addr_bytes(src) + addr_bytes(dst)
            ethertype = ETH_IP6
        else:
            opts = bytes(4 * rng.choice((0, 0, 0, 1, 10)))
            ihl = 5 + len(opts) // 4
            frag = rng.randrange(1, 8192) if frag_later else rng.choice((0, 0, 0x2000))
            ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(l4), rng.getrandbits(16),
                             frag, 64, proto, 0, ipaddress.IPv4Address(src).packed,
                             ipaddress.IPv4Address(dst).packed) + opts
            body = l4
            ethertype = ETH_IP
        eth = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
        tags = b""
        for _ in range(rng.choice((0, 0, 0, 0, 1, 2, 3))):
            tags += struct.pack("!HH", rng.choice((ETH_VLAN, ETH_QINQ)), rng.randrange(4096))
        if tags:  # each tag is TPID + TCI; the inner EtherType follows the last tag
            first_tpid = tags[:2]
            tags = tags[2:] + struct.pack("!H", ethertype)
            return eth + first_tpid + tags + ip + body
        return eth + struct.pack("!H", ethertype) + ip + body
