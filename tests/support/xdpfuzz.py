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
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, AH = 0, 43, 44, 60, 51
IPV6_EXT = (HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, AH)  # what the parser walks past
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
        Rule(Scope.FLOW, Action.DROP, src="fd77::1", dst="fd00::2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.FLOW, Action.PASS, src="10.66.0.1", dst="10.2.0.2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.FLOW, Action.DROP, src="10.66.7.7", dst="10.2.0.2", sport=1000, dport=80, proto=TCP),
        Rule(Scope.SRC_PREFIX, Action.DROP, src="10.66.0.0/16"),
        Rule(Scope.SRC_PREFIX, Action.PASS, src="10.66.5.0/24"),
        Rule(Scope.SRC_PREFIX, Action.DROP, src="fd66::/32"),
        Rule(Scope.SRC_PREFIX, Action.PASS, src="fd66:0:5::/48"),
        Rule(Scope.SRC_PREFIX, Action.DROP, src="2001:db8::1/128"),
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
    # "ok": the whole 5-tuple; "partial": addresses only (transport header cut, or an IPv6
    # chain longer than followed: protocol 0 then); "bad_frag": a fragment hiding or
    # overlapping its transport header (dropped unless allowlisted)
    state: str = "ok"


def _v4mapped(raw4: bytes) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + raw4


def _l4(f: bytes, cur: int, p: Parsed) -> bool:
    """Ports and flags of p.proto's header at `cur` into p; False if the header is cut."""
    end = len(f)
    if p.proto == TCP:
        if cur + 20 > end:
            return False
        p.sport, p.dport = struct.unpack_from("!HH", f, cur)
        p.tcp_flags = f[cur + 13]
    elif p.proto == UDP:
        if cur + 8 > end:
            return False
        p.sport, p.dport = struct.unpack_from("!HH", f, cur)
    elif p.proto in (ICMP, ICMP6):
        if cur + 4 > end:
            return False
    return True


def l4_hdr_len(proto: int) -> int:
    """Bytes of a transport header the parser reads: a first fragment must hold them, a later
    one must not start inside them."""
    return {TCP: 20, UDP: 8, ICMP: 4, ICMP6: 4}.get(proto, 0)


def _ipv4(f: bytes, cur: int) -> Parsed | str:
    end = len(f)
    if cur + 20 > end:
        return "fail"
    ver, hlen = f[cur] >> 4, (f[cur] & 0x0F) * 4
    if ver != 4 or hlen < 20 or cur + hlen > end:
        return "fail"
    p = Parsed(_v4mapped(f[cur + 12:cur + 16]), _v4mapped(f[cur + 16:cur + 20]), proto=f[cur + 9])
    frag = struct.unpack_from("!H", f, cur + 6)[0]
    if frag & 0x1FFF:
        p.fragment = True
        if (frag & 0x1FFF) * 8 < l4_hdr_len(p.proto):
            p.state = "bad_frag"
        return p
    if not _l4(f, cur + hlen, p):
        p.state = "bad_frag" if frag & 0x2000 else "partial"
    return p


def _ipv6(f: bytes, cur: int) -> Parsed | str:
    end = len(f)
    if cur + 40 > end:
        return "fail"
    p = Parsed(bytes(f[cur + 8:cur + 24]), bytes(f[cur + 24:cur + 40]))
    nh = f[cur + 6]
    cur += 40
    first = False
    for _ in range(XG_IPV6_EXT_MAX):
        if nh not in IPV6_EXT:
            break
        if cur + 8 > end:
            p.state = "bad_frag" if first else "partial"
            return p
        if nh == FRAGMENT:
            off = struct.unpack_from("!H", f, cur + 2)[0]
            nh, cur = f[cur], cur + 8
            if off & 0xFFF8:
                p.proto, p.fragment = nh, True
                if (off & 0xFFF8) < l4_hdr_len(nh):
                    p.state = "bad_frag"
                return p
            first = first or bool(off & 1)
        elif nh == AH:
            nh, cur = f[cur], cur + (f[cur + 1] + 2) * 4
        else:
            nh, cur = f[cur], cur + (f[cur + 1] + 1) * 8
    if nh in IPV6_EXT:  # more headers than followed
        p.state = "partial"
        return p
    p.proto = nh
    if not _l4(f, cur, p):
        p.state = "bad_frag" if first else "partial"
    return p


def parse(f: bytes) -> Parsed | str:
    """Parsed fields (see Parsed.state), or "fail" (no addresses read) or "non_ip"; both pass."""
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
        return _ipv4(f, cur)
    if proto == ETH_IP6:
        return _ipv6(f, cur)
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
        """(verdicts allowed, why, parsed or None): the kernel's answer must be in the set.
        `why` names the counter the frame lands in: fail, non_ip, allow, drop_frag, exact,
        prefix, limit, partial (passed unmatched, counted in parse_fail) or unmatched."""
        p = parse(f)
        if isinstance(p, str):
            return {XDP_PASS}, p, None
        fields = (addr_text(p.saddr), addr_text(p.daddr), p.sport, p.dport, p.proto, p.tcp_flags)
        if any(a.covers(*fields) for a in self._allow):
            return {XDP_PASS}, "allow", p
        if p.state == "bad_frag":
            return {XDP_DROP}, "drop_frag", p
        # a frame meets the rules whose fields were read: exact rules need the ports
        levels = (("exact", self._exact), ("prefix", self._prefix)) if p.state == "ok" else \
            (("prefix", self._prefix),)
        for level, rules in levels:
            r = next((r for r in rules if r.covers(*fields)), None)
            if r is not None:
                return {XDP_DROP if r.action is Action.DROP else XDP_PASS}, level, p
        # partial: ports, flags (and an unknown protocol) are 0, so only port-less limits match
        if any(r.covers(*fields) for r in self._limits):
            return {XDP_PASS, XDP_DROP}, "limit", p
        return {XDP_PASS}, "partial" if p.state == "partial" else "unmatched", p


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
    {frames, drop, fail, non_ip, unmatched, partial, drop_frag, events}: `fail` counts every
    frame passed as a parse failure (no addresses, or partial and unmatched), `partial` every
    frame parsed to its addresses only, whatever became of it."""
    tally = {"frames": 0, "drop": 0, "fail": 0, "non_ip": 0, "unmatched": 0, "partial": 0,
             "drop_frag": 0, "events": 0}
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
        tally["partial"] += p is not None and p.state == "partial"
        if why in ("fail", "partial"):
            tally["fail"] += 1
        elif why in ("non_ip", "unmatched", "drop_frag"):
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
    assert delta["drop_exact"] + delta["drop_prefix"] + delta["drop_limit"] + delta["drop_frag"] \
        == tally["drop"]
    assert delta["drop_frag"] == tally["drop_frag"] and delta["partial"] == tally["partial"]
    assert delta["passed"] == n - tally["drop"]
    assert delta["parse_fail"] == tally["fail"] and delta["non_ip"] == tally["non_ip"]
    assert delta["unmatched"] == tally["unmatched"]
    if check_events:
        assert delta["events_lost"] == 0
    return tally


# --- frame building blocks (the generator and the tests' crafted frames) -----------------

def ip6_ext(kind: int, nexthdr: int, arg: int = 0) -> bytes:
    """One IPv6 extension header naming `nexthdr`. `arg`: for a fragment header its 16-bit
    offset/flags field (offset in bytes | M); for AH its length field ((arg + 2) * 4 bytes);
    for the others their length field ((arg + 1) * 8 bytes)."""
    if kind == FRAGMENT:
        return struct.pack("!BBHI", nexthdr, 0, arg, 0x1234)
    size = (arg + 2) * 4 if kind == AH else (arg + 1) * 8
    return struct.pack("!BB", nexthdr, arg) + bytes(size - 2)


def ipv6_head(src: str, dst: str, chain: list[tuple[int, int]], proto: int, l4_len: int) -> bytes:
    """IPv6 header + extension headers `chain` ([(kind, arg)], outermost first, see ip6_ext)
    leading to `proto`, for a transport part of `l4_len` bytes."""
    ext, nh = b"", proto
    for kind, arg in reversed(chain):
        ext = ip6_ext(kind, nh, arg) + ext
        nh = kind
    return struct.pack("!IHBB", 6 << 28, len(ext) + l4_len, nh, 64) + addr_bytes(src) + \
        addr_bytes(dst) + ext


# --- frame generation -----------------------------------------------------------------------

class Frames:
    """A seeded stream of frames: well-formed ones aimed at the rules (VLAN tags, IPv4 options,
    IPv6 chains of 0-10 extension headers of every kind, fragments first, later and
    overlapping), tiny first fragments (cut inside the transport header, or IPv6 inside the
    chain), the well-formed ones mutated (truncated, bytes flipped, trailers added), and raw
    garbage with IP-ish EtherTypes."""

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
        if kind < 0.14:  # a first fragment cut inside its header chain or transport header
            f, l4_at = self.frame(first_fragment=True)
            return f[:max(MIN_FRAME, rng.randrange(l4_at - 16, l4_at + 20))]
        f = bytearray(self.frame()[0])
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
        return self.frame()[0]

    def frame(self, first_fragment: bool = False) -> tuple[bytes, int]:
        """(a well-formed frame, where its transport header starts). `first_fragment`: the IP
        layer says more fragments follow (IPv4 MF, or an IPv6 fragment header with M set)."""
        rng = self.rng
        v6 = rng.random() < 0.35
        pool = V6 if v6 else V4
        src, dst = rng.choice(pool), rng.choice(pool)
        proto = rng.choice((TCP, TCP, UDP, UDP, ICMP6 if v6 else ICMP, rng.randrange(256)))
        l4 = self.transport(proto)
        frag_later = not first_fragment and rng.random() < 0.1
        if v6:
            head, l4_at = self.ipv6(src, dst, proto, len(l4), first_fragment, frag_later)
        else:
            head, l4_at = self.ipv4(src, dst, proto, len(l4), first_fragment, frag_later)
        eth = self.ethernet(ETH_IP6 if v6 else ETH_IP)
        return eth + head + l4, len(eth) + l4_at

    def transport(self, proto: int) -> bytes:
        rng = self.rng
        sport = rng.choice((1000, 53, 0, rng.randrange(65536)))
        dport = rng.choice((80, 53, 0, rng.randrange(65536)))
        flags = rng.choice((0x02, 0x12, 0x10, 0x04, rng.randrange(256)))
        payload = rng.randbytes(rng.choice((0, 0, 8, 40, rng.randrange(1, 1200))))
        if proto == TCP:
            return struct.pack("!HHIIBBHHH", sport, dport, rng.getrandbits(32), 0, 5 << 4, flags,
                               1024, 0, 0) + payload
        if proto == UDP:
            return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        return struct.pack("!BBH", 8, 0, 0) + payload

    def fragment_offset(self) -> int:
        """A later fragment's offset in 8-byte units, often inside a transport header."""
        return self.rng.choice((1, 1, 2, 3, self.rng.randrange(1, 8192)))

    def ipv4(self, src, dst, proto, l4_len, first_fragment, frag_later) -> tuple[bytes, int]:
        rng = self.rng
        opts = bytes(4 * rng.choice((0, 0, 0, 1, 10)))
        ihl = 5 + len(opts) // 4
        if frag_later:
            frag = self.fragment_offset() | rng.choice((0, 0x2000))
        else:
            frag = 0x2000 if first_fragment else rng.choice((0, 0, 0x4000, 0x2000))
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + l4_len, rng.getrandbits(16),
                         frag, 64, proto, 0, ipaddress.IPv4Address(src).packed,
                         ipaddress.IPv4Address(dst).packed) + opts
        return ip, len(ip)

    def ipv6(self, src, dst, proto, l4_len, first_fragment, frag_later) -> tuple[bytes, int]:
        """IPv6 header + a chain of 0-10 extension headers of every kind (the fragment header,
        if any, says first/later as asked)."""
        rng = self.rng
        n = rng.choice((0, 0, 0, 1, 2, 3, 4, 5, 7, 8, 9, 10))
        chain = [(rng.choice(IPV6_EXT), 0) for _ in range(n)]
        for i, (kind, _) in enumerate(chain):  # AH: 12 or 24 bytes, others 8 or 16
            chain[i] = (kind, rng.choice((1, 4)) if kind == AH else rng.choice((0, 0, 1)))
        if first_fragment or frag_later:
            off, m = (self.fragment_offset(), rng.choice((0, 1))) if frag_later else (0, 1)
            chain.insert(rng.randrange(len(chain) + 1), (FRAGMENT, off << 3 | m))
        for i, (kind, arg) in enumerate(chain):
            if kind == FRAGMENT and not (first_fragment or frag_later):
                chain[i] = (kind, rng.choice((0, 0, 1)))  # atomic or first, offset 0
        head = ipv6_head(src, dst, chain, proto, l4_len)
        return head, len(head)

    def ethernet(self, ethertype: int) -> bytes:
        rng = self.rng
        eth = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
        tags = b""
        for _ in range(rng.choice((0, 0, 0, 0, 1, 2, 3))):
            tags += struct.pack("!HH", rng.choice((ETH_VLAN, ETH_QINQ)), rng.randrange(4096))
        # each tag is TPID + TCI; the inner EtherType follows the last tag
        return eth + tags + struct.pack("!H", ethertype)
