"""Evidence of hostility in one window, per rule scope. Pure; shared by replay, training and the
scorer's two stages.

The model's score says how unlike the benign training data a flow looks (novelty); it does not
say the traffic does harm. A rule needs both (services.detection.detect): a score at or above
the threshold AND one of the measures below at or above its bound for the rule's scope. Every
measure counts something the data plane can see on ingress and benign applications do not do
in bulk; its bound is calibrated on benign captures (`bounds.EvidenceBounds`).

A flow S->D is ANSWERED when the reverse 5-tuple (D, S, dport, sport, proto) carried a packet in
this window or the one before. An answer to a reflector port is SOLICITED when D itself sent
from that port pair (to anyone: discovery goes to multicast or broadcast addresses). A flow whose
last packet came in the window's last GRACE_NS is SETTLED only later: its answer or its ACK may
fall into the next window, so it counts as neither half-open nor unanswered.

Source scope (stage 1 of the scorer holds all of a source's flows: `SourceWatch`, `SRC_OWN`):
  half_open    TCP flows of the source in the window with a SYN and no ACK, towards its busiest
               destination: a SYN flood from one address. Benign: a client's connection
               attempts to dead peers (a P2P node) are spread over many hosts.
  probe_tcp    half-open flows of <= 2 packets over the horizon (10 windows), largest TARGET
               GROUP: distinct ports of one host (port scan) or distinct hosts of one /24
               (IPv6 /64) on one port (sweep). Benign fan-out is spread over the Internet
               (P2P peers, CDN servers) and completes its handshakes.
  probe_other  the same for UDP / ICMP / other flows of <= 2 packets; at decision time weighted
               by the share of the source's such flows nobody answered (`src_measures`): a DNS
               prober's resolvers answer, a swept /24's empty addresses do not.
  login        TCP sessions started by the source towards ONE login service (LOGIN_PORTS) of one
               host, summed over the last 3 windows (password guessing). Benign: a mail client
               polling, one SSH or database session; web ports are not login services (a client
               that reconnects per request is ordinary).
Destination scope (stage 2 holds all flows towards a destination: `dst_measures`):
  half_open_srcs  distinct sources with a half-open flow to the destination (spoofed SYN flood)
  synack_srcs     distinct sources sending it bare, unanswered SYN-ACKs (SYN-ACK reflection)
  rst_srcs        distinct sources sending it unanswered RSTs (RST storm, backscatter)
  reflector_srcs  distinct sources sending it unsolicited UDP from a reflector port (REFLECTOR_PORTS)
  fragments       non-first IP fragments (TCP/UDP with both ports 0) towards it
  dhcp            DHCP client packets (UDP 68 -> 67) towards it: a DISCOVER flood to broadcast
  unsolicited_srcs distinct sources whose flows to it nobody answered
  packets         packets towards it nobody answered (one-sided volume far above any benign
                  destination's: a download or a call is answered, a flood is not)
and per source the same one-sided volume (`src_measures`; partition-local in the scorer).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping

from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

from .features import HORIZON_WINDOWS, hash64

# UDP source ports of well-known amplification vectors (US-CERT TA14-017A and later advisories):
# QOTD, chargen, DNS, TFTP, portmap, NTP, NetBIOS, SNMP, CLDAP, SLP, ISAKMP, RIP, IPMI, OpenVPN,
# MS-SQL, Citrix, SSDP, ARD, WS-Discovery, SIP, NAT-PMP, mDNS, CoAP, BitTorrent, Ubiquiti,
# memcached, VxWorks, Quake, Steam, Lantronix, Plex, Jenkins, DVR (37810), BACnet
REFLECTOR_PORTS = frozenset({17, 19, 53, 69, 111, 123, 137, 161, 389, 427, 500, 520, 623, 1194,
                             1434, 1604, 1900, 3283, 3702, 5060, 5351, 5353, 5683, 6881, 10001,
                             11211, 17185, 26000, 27015, 27960, 30718, 32414, 33848, 37810, 47808})
# TCP services that password guessers target: FTP, SSH, telnet, SMTP (submission), POP3, IMAP,
# LDAP, SMB, MS-SQL, Oracle, MySQL, RDP, PostgreSQL, VNC, Redis, MongoDB
LOGIN_PORTS = frozenset({21, 22, 23, 25, 110, 143, 389, 445, 465, 587, 636, 993, 995, 1433, 1521,
                         3306, 3389, 5432, 5900, 6379, 27017})
LOGIN_WINDOWS = 3
GRACE_NS = 250_000_000  # an answer or an ACK comes within this (round-trip times are shorter)
UNSPECIFIED = ("0.0.0.0", "::")  # a DHCP client before its lease: never a blockable source

SRC_OWN: tuple[str, ...] = ("half_open", "probe_tcp", "probe_other", "login")
SRC_MEASURES: tuple[str, ...] = ("half_open", "probe_tcp", "probe_other", "login", "packets")
DST_MEASURES: tuple[str, ...] = ("half_open_srcs", "synack_srcs", "rst_srcs", "reflector_srcs",
                                 "fragments", "dhcp", "unsolicited_srcs", "packets")

# flow marks (bit set per flow, `flow_marks`)
HALF_OPEN, INITIATED, PROBE, UNANSWERED, ANSWERED, GROUP = 1, 2, 4, 8, 512, 1024
SYNACK, RST_ONLY, REFLECTED, FRAGMENT, DHCP = 16, 32, 64, 128, 256
_BARE = TCP_FIN | TCP_RST | TCP_PSH


def reverse_key(key: tuple) -> tuple:
    """The 5-tuple an answer to flow `key` has."""
    return (key[1], key[0], key[3], key[2], key[4])


def sent_from_key(key: tuple) -> tuple:
    """(address, sport, dport, proto) of a flow: what `solicited` looks up."""
    return (key[0], key[2], key[3], key[4])


def asked_key(key: tuple) -> tuple:
    """The `sent_from_key` of a request that flow `key` answers, whoever it was sent to."""
    return (key[1], key[3], key[2], key[4])


class Answers:
    """What was sent in this window and the one before, for `answered` / `solicited`: flows as
    5-tuples and `sent_from_key`s. The replay gives the tuples; the scorer's stage 2 gives
    their `hash64` (the source partitions ship them, windows.py) and sets `hashed`."""

    __slots__ = ("current_flows", "current_senders", "flows", "senders", "hashed")

    def __init__(self, flows: Iterable, senders: Iterable, previous: "Answers | None" = None,
                 hashed: bool = False) -> None:
        self.current_flows, self.current_senders = set(flows), set(senders)
        self.flows, self.senders, self.hashed = self.current_flows, self.current_senders, hashed
        if previous is not None:
            self.flows = self.current_flows | previous.current_flows
            self.senders = self.current_senders | previous.current_senders

    @classmethod
    def of_keys(cls, keys: Iterable[tuple], previous: "Answers | None" = None) -> "Answers":
        keys = list(keys)
        return cls(keys, map(sent_from_key, keys), previous)

    def _key(self, t: tuple):
        return hash64(t) if self.hashed else t

    def answered(self, key: tuple) -> bool:
        return self._key(reverse_key(key)) in self.flows

    def solicited(self, key: tuple) -> bool:
        return self._key(asked_key(key)) in self.senders or self.answered(key)


_GROUP_CACHE: dict[str, bool] = {}


def is_group(addr: str) -> bool:
    """A multicast or broadcast address (x.x.x.255 taken as a directed broadcast): traffic to it
    is one-way by design (discovery, announcements), never a probe or a flood target here."""
    got = _GROUP_CACHE.get(addr)
    if got is None:
        if len(_GROUP_CACHE) >= 1 << 16:
            _GROUP_CACHE.clear()
        got = _GROUP_CACHE[addr] = (addr.endswith(".255") or addr.startswith("ff")
                                    or ipaddress.ip_address(addr).is_multicast)
    return got


def settled(last_ns: int, window_end_ns: int) -> bool:
    """A flow whose last packet is GRACE_NS before the window's end has had time for its answer."""
    return last_ns <= window_end_ns - GRACE_NS


def flow_marks(key: tuple, st: Mapping, answers: Answers, window_end_ns: int) -> int:
    """The marks of one flow (features flow-state form: packets, flags, syn, last)."""
    proto, packets, flags = key[4], st["packets"], st["flags"]
    m = 0
    group = is_group(key[1])
    answered = answers.answered(key)
    done = settled(st["last"], window_end_ns)
    if answered:
        m |= ANSWERED
    elif group:
        m |= GROUP  # nobody answers a group address: neither answered nor unanswered
    elif done:
        m |= UNANSWERED
    if packets <= 2 and not group:
        m |= PROBE
    if proto == PROTO_TCP:
        if st.get("syn", 0):
            m |= INITIATED
            if not flags & TCP_ACK and done:
                m |= HALF_OPEN
        elif not answered:
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK and not flags & _BARE:
                m |= SYNACK
            elif flags & TCP_RST and not flags & TCP_SYN:
                m |= RST_ONLY
    elif proto == PROTO_UDP:
        if key[2] in REFLECTOR_PORTS and not answers.solicited(key):
            m |= REFLECTED
        if key[2] == 68 and key[3] == 67:
            m |= DHCP
    if proto in (PROTO_TCP, PROTO_UDP) and key[2] == 0 and key[3] == 0:
        m |= FRAGMENT
    return m


def dst_measures(keys: Iterable[tuple], flows: Mapping[tuple, Mapping],
                 marks: Mapping[tuple, int]) -> dict[str, list[float]]:
    """DST_MEASURES of every destination of `keys` (all flows towards it must be there)."""
    sets: dict[str, list[set]] = {}
    counts: dict[str, list[int]] = {}
    for k in keys:
        m, d = marks[k], k[1]
        s = sets.get(d)
        if s is None:
            s = sets[d] = [set(), set(), set(), set(), set()]
            counts[d] = [0, 0, 0]
        if not m & (ANSWERED | GROUP):
            counts[d][2] += flows[k]["packets"]
        if m & HALF_OPEN:
            s[0].add(k[0])
        if m & SYNACK:
            s[1].add(k[0])
        if m & RST_ONLY:
            s[2].add(k[0])
        if m & REFLECTED:
            s[3].add(k[0])
        if m & UNANSWERED:
            s[4].add(k[0])
        if m & (FRAGMENT | DHCP):
            n = flows[k]["packets"]
            counts[d][0] += n if m & FRAGMENT else 0
            counts[d][1] += n if m & DHCP else 0
    return {d: [len(s[0]), len(s[1]), len(s[2]), len(s[3]), counts[d][0], counts[d][1], len(s[4]),
                float(counts[d][2])] for d, s in sets.items()}


def src_measures(keys: Iterable[tuple], flows: Mapping[tuple, Mapping], marks: Mapping[tuple, int],
                 own: Mapping[str, list]) -> dict[str, list[float]]:
    """SRC_MEASURES of every source of `keys`: its stage-1 measures (`own`, SRC_OWN order) with
    probe_other weighted by the share of its non-TCP probes here that nobody answered (of those
    whose fate is known: answered, or settled without an answer), and its packets here that
    nobody answered."""
    probes: dict[str, list[int]] = {}
    volume: dict[str, int] = {}
    for k in keys:
        m = marks[k]
        if not m & (ANSWERED | GROUP):
            volume[k[0]] = volume.get(k[0], 0) + flows[k]["packets"]
        if m & PROBE and k[4] != PROTO_TCP and m & (ANSWERED | UNANSWERED):  # settled: known
            c = probes.get(k[0])
            if c is None:
                c = probes[k[0]] = [0, 0]
            c[0] += 1
            c[1] += bool(m & UNANSWERED)
    out = {}
    for k in keys:
        s = k[0]
        if s in out:
            continue
        o = own.get(s) or (0, 0, 0, 0)
        c = probes.get(s)
        share = c[1] / c[0] if c else 0.0
        out[s] = [float(o[0]), float(o[1]), o[2] * share, float(o[3]), float(volume.get(s, 0))]
    return out


# --- stage 1: a source's own measures over its recent windows ------------------------------------

def _net(addr: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address lies in, as text."""
    if ":" not in addr:
        return addr.rsplit(".", 1)[0]
    return str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)


def probe_code(dst: str, proto: int, dport: int) -> int:
    """One probe as an int: host hash (32 bits) | net hash (32) | proto (8) | port (16), so a
    set of them counts distinct targets and both target groups can be read back."""
    return ((hash64(dst) >> 32) << 56 | (hash64(_net(dst) + f"|{dport}") >> 32) << 24
            | proto << 16 | dport)


def _largest_groups(codes: Iterable[int]) -> tuple[int, int]:
    """(largest TCP group, largest other group) of a set of distinct probe codes: a group is
    one host and protocol (members: ports) or one net, port and protocol (members: hosts)."""
    groups: dict[tuple, int] = {}
    for c in codes:
        proto = (c >> 16) & 0xFF
        for g in ((0, c >> 56, proto), (1, (c >> 24) & 0xFFFFFFFF, proto)):
            groups[g] = groups.get(g, 0) + 1
    best = [0, 0]
    for (_, _, proto), n in groups.items():
        i = 0 if proto == PROTO_TCP else 1
        if n > best[i]:
            best[i] = n
    return best[0], best[1]


class SourceWatch:
    """Every source's probes and login sessions over the last `span` windows (SRC_OWN). Kept
    per window like features.SourceHorizon, so expiry drops whole windows; a source with a
    single probe in a window (a spoofed SYN) costs one int. Windows are added oldest first."""

    __slots__ = ("width_ns", "span", "windows")

    def __init__(self, width_ns: int, span: int = HORIZON_WINDOWS) -> None:
        self.width_ns, self.span = width_ns, span
        # window start -> source -> [half-open flows to its busiest destination, probe codes
        # (int | set | None), logins (dict | None)]
        self.windows: dict[int, dict[str, list]] = {}

    @staticmethod
    def count(entries: dict[str, list], key: tuple, packets: int, flags: int, syn: int,
              done: bool) -> None:
        """Count one flow into a window's `entries` (key = 5-tuple; the flow's packets, flags,
        SYN-without-ACK packets, and whether it is `settled`)."""
        src, dst, _, dport, proto = key
        half_open = proto == PROTO_TCP and syn and not flags & TCP_ACK and done
        login = proto == PROTO_TCP and syn and dport in LOGIN_PORTS
        probe = packets <= 2 and (half_open or proto != PROTO_TCP) and not is_group(dst)
        if not (half_open or login or probe):
            return
        e = entries.get(src)
        if e is None:
            e = entries[src] = [None, None, None]
        if half_open:
            if e[0] is None:
                e[0] = {}
            e[0][dst] = e[0].get(dst, 0) + 1
        if probe:
            code = probe_code(dst, proto, dport)
            if e[1] is None:
                e[1] = code
            elif type(e[1]) is int:
                e[1] = {e[1], code}
            else:
                e[1].add(code)
        if login:
            if e[2] is None:
                e[2] = {}
            g = (dst, dport)
            e[2][g] = e[2].get(g, 0) + 1

    def add_entries(self, ws: int, entries: dict[str, list]) -> None:
        """Window `ws` as `count` built it (replacing an earlier copy); drops old windows."""
        for e in entries.values():  # half-open flows: only the busiest destination's count is kept
            e[0] = max(e[0].values()) if e[0] else 0
        self.windows[ws] = entries
        oldest = ws - (self.span - 1) * self.width_ns
        for w in [w for w in self.windows if w < oldest]:
            del self.windows[w]

    def measures(self, ws: int, srcs: Iterable[str]) -> dict[str, list[float]]:
        """SRC_OWN of each source with anything counted (others: absent, all zero)."""
        span = [d for w in range(ws - (self.span - 1) * self.width_ns, ws + 1, self.width_ns)
                if (d := self.windows.get(w)) is not None]
        login_from = ws - (LOGIN_WINDOWS - 1) * self.width_ns
        logins = [d for w, d in self.windows.items() if login_from <= w <= ws]
        current = self.windows.get(ws, {})
        out = {}
        for src in srcs:
            e = current.get(src)
            codes: set = set()
            for d in span:
                x = d.get(src)
                if x is not None and x[1] is not None:
                    if type(x[1]) is int:
                        codes.add(x[1])
                    else:
                        codes |= x[1]
            if len(codes) > 1:
                tcp, other = _largest_groups(codes)
            else:
                tcp = other = 0
                for c in codes:
                    tcp, other = (1, 0) if (c >> 16) & 0xFF == PROTO_TCP else (0, 1)
            sessions: dict = {}
            for d in logins:
                x = d.get(src)
                if x is not None and x[2]:
                    for g, n in x[2].items():
                        sessions[g] = sessions.get(g, 0) + n
            out[src] = [e[0] if e else 0, tcp, other, max(sessions.values(), default=0)]
        return out


# --- one window, assessed ------------------------------------------------------------------------

@dataclass
class WindowEvidence:
    """Marks of every flow and the measures of every source and destination of one window."""
    marks: dict[tuple, int]
    src: dict[str, list[float]]   # SRC_MEASURES
    dst: dict[str, list[float]]   # DST_MEASURES

    def model_inputs(self) -> tuple[dict, dict]:
        """(source, destination) values of features.SRC_ / DST_EVIDENCE_FEATURES: the measures
        but packets (the model has those as src_packets / dst_packets)."""
        return ({s: v[:len(SRC_MEASURES) - 1] for s, v in self.src.items()},
                {d: v[:len(DST_MEASURES) - 1] for d, v in self.dst.items()})


def assess(keys: Iterable[tuple], flows: Mapping[tuple, Mapping], answers: Answers,
           window_end_ns: int, src_own: Mapping[str, list]) -> WindowEvidence:
    """Evidence of one window: `flows` in features flow-state form by 5-tuple, `src_own` the
    sources' SourceWatch measures."""
    keys = list(keys)
    marks = {k: flow_marks(k, flows[k], answers, window_end_ns) for k in keys}
    return WindowEvidence(marks, src_measures(keys, flows, marks, src_own),
                          dst_measures(keys, flows, marks))


def assess_window(window, window_end_ns: int, previous: Answers | None = None,
                  watch: "SourceWatch | None" = None) -> tuple[WindowEvidence, Answers]:
    """Evidence of a features.WindowState (all its flows in one place, as in the replay).
    `watch` must not hold this window yet (it is added here); without one, the source
    measures cover this window alone. Returns the Answers for the next window's call."""
    flows = window.flows
    answers = Answers.of_keys(flows, previous)
    if watch is None:
        watch = SourceWatch(max(window_end_ns - window.start_ns, 1), span=1)
    entries: dict[str, list] = {}
    for k, st in flows.items():
        SourceWatch.count(entries, k, st["packets"], st["flags"], st.get("syn", 0),
                          settled(st["last"], window_end_ns))
    watch.add_entries(window.start_ns, entries)
    own = watch.measures(window.start_ns, window.srcs)
    ev = assess(flows, flows, answers, window_end_ns, own)
    return ev, answers
