"""A source's own evidence measures over its recent windows (evidence.SRC_OWN). Pure.

Kept where all of a source's packets are: the replay, and stage 1 of the scorer (one
`SourceWatch` per `packets` partition, in memory like features.SourceHorizon). What it counts is
described with the measures in services.detection.evidence.
"""
from __future__ import annotations

import ipaddress
from itertools import chain, islice
from typing import Container, Iterable, Mapping

from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST

from .features import HORIZON_WINDOWS, WindowedSources
from .outage import OUTAGE_MEMORY_S, AnsweredMemory
from .ports import LOGIN_PORTS, TRACEROUTE_PORTS, probe_target  # noqa: F401  (re-exported)

LOGIN_WINDOWS = 3
OPEN_WINDOWS = 16  # a login SYN waits this many windows for its ACK (SYN-ACK retries: 1, 3, 7, 15 s)
OPENING_MAX = 4096  # login SYNs kept per window for that, sources with the most SYNs first (a
# spoofed SYN flood to port 22, one SYN per source, cannot push a guesser's out)
PORT_FAN_WEIGHT = 0.5  # a UDP/ICMP probe of another port of the same host (`_largest_groups`)
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


def _net(addr: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address lies in, as text."""
    if ":" not in addr:
        return addr.rsplit(".", 1)[0]
    return str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)


def _largest_groups(probes: Iterable[tuple]) -> tuple[float, float]:
    """(largest TCP group, largest other group) of a set of distinct probes (dst, proto, dport):
    a group is one host and protocol (members: ports) or one net, port and protocol (members:
    hosts). A UDP/ICMP group of ports of one host counts PORT_FAN_WEIGHT per member: media
    sessions, NAT traversal and games open many ports of one peer (up to 22 ports of one host
    in the horizon in one benign capture of the shared corpora, android.pcap), while a host
    sweep on one port is what scanners do (at most 3 hosts of one /24 in any of them)."""
    groups: dict[tuple, int] = {}
    for dst, proto, dport in probes:
        for g in ((0, dst, proto), (1, _net(dst), dport, proto)):
            groups[g] = groups.get(g, 0) + 1
    best = [0.0, 0.0]
    for g, n in groups.items():
        i = 0 if g[-1] == PROTO_TCP else 1
        v = n * PORT_FAN_WEIGHT if i and g[0] == 0 else n
        if v > best[i]:
            best[i] = v
    return best[0], best[1]


def _flags(state) -> int:
    """The TCP flags of a flow state: the replay's dict (features) or the scorer's list."""
    return state["flags"] if isinstance(state, dict) else state[4]


def _syn(state) -> int:
    """The SYN-without-ACK packets of a flow state: the replay's dict or the scorer's list."""
    return state.get("syn", 0) if isinstance(state, dict) else state[5]


def _entry(entries: dict[str, list], src: str) -> list:
    """The source's entry of a window (created empty: half-open, probes, logins, unsettled,
    handshakes to a login service that may complete in the next window)."""
    e = entries.get(src)
    if e is None:
        e = entries[src] = [None, None, None, None, None]
    return e


def _add_half_open(e: list, dst: str) -> None:
    """Count a half-open flow towards `dst` in an entry."""
    if e[0] is None:
        e[0] = {}
    e[0][dst] = e[0].get(dst, 0) + 1


def _add_login(e: list, dst: str, dport: int) -> None:
    """Count a login session towards service (`dst`, `dport`) in an entry."""
    if e[2] is None:
        e[2] = {}
    g = (dst, dport)
    e[2][g] = e[2].get(g, 0) + 1


def _settle(entries: dict[str, list], key: tuple) -> None:
    """Count an earlier window's SYN-only flow, settled without an ACK, as a half-open probe."""
    src, dst, _, dport, proto = key
    e = _entry(entries, src)
    _add_half_open(e, dst)
    _add_probe(e, (dst, proto, dport))


def _add_probe(e: list, target: tuple) -> None:
    """Add a probe target (dst, proto, dport) to an entry: one stays a tuple, more a set."""
    if e[1] is None:
        e[1] = target
    elif type(e[1]) is tuple:
        if e[1] != target:
            e[1] = {e[1], target}
    else:
        e[1].add(target)


def merge_fates(into: dict[tuple, bool], fates: Mapping[tuple, bool]) -> None:
    """Target -> unanswered `fates` merged into `into` (the same shape), in place: a target
    answered in either is answered. The one rule for every join of probe fates: the parts of a
    window held by different stage 2 partitions, and the windows of a horizon."""
    for target, unanswered in fates.items():
        into[target] = into.get(target, True) and unanswered


class SourceWatch(WindowedSources):
    """Every source's probes and login sessions over the last `span` windows (SRC_OWN). Kept
    per window like features.SourceHorizon, so expiry drops whole windows; a probe is its
    (dst, proto, dport), and a source with a single probe in a window (a spoofed SYN) keeps
    that tuple, not a set. Nothing is hashed: target groups are formed only for a source with
    more than one probe in the horizon. Windows are added oldest first.

    A TCP target the source completed a handshake with (its SYN and its own ACK in one flow)
    within `memory_s` (outage.AnsweredMemory) is left out of its half-open probes: a health
    checker's backends that accepted it for an hour and then went silent are an outage. One
    value feeds both the model rows and the decisions (stage 1 ships it), alike in the replay
    and the scorer."""

    # windows: window start -> source -> [half-open flows to its busiest destination, probes
    # (tuple | set | None), logins (dict | None), None]; `pending`: window start -> 5-tuples
    # of its unsettled SYN-only flows, judged when the next window is added; `memory`: the
    # TCP targets each source completed a handshake with lately
    __slots__ = ("pending", "opening", "memory")

    def __init__(self, width_ns: int, span: int = HORIZON_WINDOWS,
                 memory_s: float = OUTAGE_MEMORY_S) -> None:
        super().__init__(width_ns, span)
        self.pending: dict[int, list[tuple]] = {}
        self.opening: dict[int, list[tuple]] = {}
        self.memory = AnsweredMemory(memory_s)

    @staticmethod
    def count(entries: dict[str, list], key: tuple, packets: int, flags: int, syn: int,
              done: bool, handshakes: dict[str, list] | None = None) -> None:
        """Count one flow into a window's `entries` (key = 5-tuple; the flow's packets, flags,
        SYN-without-ACK packets, and whether it is `settled`). A DHCP server's offer or ack
        (UDP 67 -> 68) is no probe: it goes to the address it offers, whose client answers by
        broadcast from 0.0.0.0, so a server offering to 10 new clients of its /24 read as a UDP
        sweep (a capture with dnsmasq under a DISCOVER flood: its own source dropped for 600 s).
        A SYN-only flow that is not settled yet is noted in the entry's fourth slot
        (`add_entries` settles it later). A flow to a login service counts as a login session
        when it completes its handshake: its SYN and its own ACK in this window, or its SYN here
        (noted in the last slot) and its ACK in one of the next OPEN_WINDOWS - 1 windows
        (`add_entries`; a client that delays its ACK, or ACKs a retransmitted SYN-ACK, still
        counts, once). A SYN refused (RST) or never
        answered is no login attempt (an app pool retrying a database that is down): SYN floods
        and probes are half_open's and probe_tcp's. A completed
        handshake (SYN and ACK) is noted in `handshakes` (source -> targets), if given."""
        src, dst, _, dport, proto = key
        if handshakes is not None and proto == PROTO_TCP and syn and flags & TCP_ACK:
            t = handshakes.get(src)
            if t is None:
                handshakes[src] = [(dst, proto, dport)]
            else:
                t.append((dst, proto, dport))
        syn_only = proto == PROTO_TCP and syn and not flags & TCP_ACK
        half_open = syn_only and done
        # a login session needs a completed handshake: a SYN refused (RST) or never answered
        # guesses nothing (an app pool retrying a database that is down); SYN floods and
        # probes are half_open's and probe_tcp's
        login_port = proto == PROTO_TCP and dport in LOGIN_PORTS
        login = login_port and syn and flags & TCP_ACK
        opening = login_port and syn_only and not is_group(dst)
        probe = (packets <= 2 and (half_open or proto != PROTO_TCP) and not is_group(dst)
                 and not (proto == PROTO_UDP and key[2] == 67 and dport == 68))  # a DHCP offer
        unsettled = syn_only and not done and packets <= 2 and not is_group(dst)
        if not (half_open or login or probe or unsettled or opening):
            return
        e = _entry(entries, src)
        if opening:
            if e[4] is None:
                e[4] = []
            e[4].append(key)
        if unsettled:
            if e[3] is None:
                e[3] = []
            e[3].append(key)
            if not login:
                return
        if half_open:
            _add_half_open(e, dst)
        if probe:
            _add_probe(e, probe_target(key))
        if login:
            _add_login(e, dst, dport)

    def _opened(self, ws: int) -> list[tuple]:
        """Login SYNs of the OPEN_WINDOWS - 1 windows before `ws` still waiting for their ACK (a
        client may ACK a retransmitted SYN-ACK, 1, 3, 7 or 15 s later: it is counted then)."""
        return [k for w, ks in self.opening.items() if ws - OPEN_WINDOWS * self.width_ns < w < ws
                for k in ks]

    def add_entries(self, ws: int, entries: dict[str, list], flows: Container | None = None,
                    handshakes: Mapping[str, list] | None = None) -> None:
        """Window `ws` as `count` built it (replacing an earlier copy); drops old windows.
        `flows` (the window's 5-tuples) settles the previous window's unsettled SYN-only flows:
        one with no packet in `ws` got no ACK and counts here as a half-open probe; one that went
        on is judged in `ws` by its own packets. The unsettled flow of a source with nothing else
        counted in the horizon (a spoofed SYN) is not kept: one probe is never evidence (its login
        session, `count`, is). `handshakes` (count's) go to the outage memory."""
        self._forget(ws)
        memory = self.memory
        for src, targets in (handshakes or {}).items():
            memory.note(src, targets, ws)
        memory.expire(ws)
        seen = self.seen
        earlier = self.pending.get(ws - self.width_ns) if flows is not None else None
        for key in earlier or ():
            if key not in flows:
                _settle(entries, key)
        gone: set[tuple] = set()  # login SYNs of earlier windows answered or reset in this one
        for key in self._opened(ws) if isinstance(flows, dict) else ():
            st = flows.get(key)
            if st is None:
                continue
            flags, syn = _flags(st), _syn(st)
            if not (flags & (TCP_ACK | TCP_RST) or syn):
                continue  # a segment without SYN, ACK or RST ends no wait (the server drops it)
            gone.add(key)
            if flags & TCP_ACK and not syn:  # its ACK came here: a login session (with a SYN
                _add_login(_entry(entries, key[0]), key[1], key[3])  # here, `count` counted it)
        mine = []
        for src in [s for s, e in entries.items() if e[3] is not None]:
            e = entries[src]
            k = e[3][0]
            alone = (len(e[3]) == 1 and e[0] is None and e[1] is None and src not in seen
                     and e[2] in (None, {(k[1], k[3]): 1}))  # that SYN is all the source did
            if alone and e[2] is None and e[4] is None:
                del entries[src]
                continue
            if not alone:
                mine += e[3]
            e[3] = None
        self.pending = {w: p for w, p in self.pending.items() if w == ws - self.width_ns}
        if mine:
            self.pending[ws] = mine
        waiting = []
        for e in entries.values():
            if e[4] is not None:
                waiting.append(e[4])
                e[4] = None
        # the sources with most SYNs first, at most OPENING_MAX (not every SYN of a flood copied)
        opening = list(islice(chain.from_iterable(sorted(waiting, key=len, reverse=True)),
                              OPENING_MAX))
        keep = {w: [k for k in ks if k not in gone] for w, ks in self.opening.items()
                if ws - OPEN_WINDOWS * self.width_ns < w < ws}
        self.opening = {w: ks for w, ks in keep.items() if ks}
        if opening:
            self.opening[ws] = opening
        for src, e in entries.items():  # half-open flows: the busiest destination's count is kept
            e[0] = max(e[0].values()) if e[0] else 0
            seen[src] = seen.get(src, 0) + 1
        self._keep(ws, entries)

    def measures(self, ws: int, srcs: Iterable[str]) -> dict[str, list[float]]:
        """SRC_OWN of each source with anything counted (others: absent, all zero)."""
        span = [d for w in range(ws - (self.span - 1) * self.width_ns, ws + 1, self.width_ns)
                if (d := self.windows.get(w)) is not None]
        login_from = ws - (LOGIN_WINDOWS - 1) * self.width_ns
        logins = [d for w, d in self.windows.items() if login_from <= w <= ws]
        current, seen = self.windows.get(ws, {}), self.seen
        remembered, answered = self.memory.sources, self.memory.answered
        out = {}
        for src in srcs:
            e = current.get(src)
            if e is None and src not in seen:  # nothing counted for it in the span
                out[src] = [0, 0, 0, 0]
                continue
            if e is not None and seen[src] == 1 and type(e[1]) is not set:  # this window only
                p = e[1]
                tcp = p is not None and p[1] == PROTO_TCP
                if tcp and src in remembered and answered(src, p, ws):
                    tcp = False
                out[src] = [e[0], int(tcp), int(p is not None and p[1] != PROTO_TCP),
                            max(e[2].values()) if e[2] else 0]
                continue
            probes: set = set()
            for d in span:
                x = d.get(src)
                if x is not None and x[1] is not None:
                    if type(x[1]) is tuple:
                        probes.add(x[1])
                    else:
                        probes |= x[1]
            if src in remembered:  # a TCP target that accepted the source lately: an outage
                probes = {p for p in probes if p[1] != PROTO_TCP or not answered(src, p, ws)}
            if len(probes) > 1:
                tcp, other = _largest_groups(probes)
            else:
                tcp = other = 0
                for p in probes:
                    tcp, other = (1, 0) if p[1] == PROTO_TCP else (0, 1)
            sessions: dict = {}
            for d in logins:
                x = d.get(src)
                if x is not None and x[2]:
                    for g, n in x[2].items():
                        sessions[g] = sessions.get(g, 0) + n
            out[src] = [e[0] if e else 0, tcp, other, max(sessions.values(), default=0)]
        return out


class ProbeFates(WindowedSources):
    """The fate of every non-TCP probe target (dst, proto, dport) of a candidate source over
    the last `span` windows: answered or not (evidence.hold_tallied, at decision time). A
    target answered in any kept window counts as answered (merge_fates). Kept in the replay,
    and in every stage 2 partition of the scorer from the tallies of ALL partitions (each
    holds the answers to its own destinations only; dst_windows.DstPartition.settle). Only
    sources whose probe group (SourceWatch) has 2 or more members are kept: one probe is
    never a group, so a spoofed flood's sources cost nothing here.

    Why: probe_other is the largest target group over the horizon, weighted by the share of
    the source's probes nobody answered. Weighted by the current window's share alone, a
    window of retries towards one dead device (net-snmp retries 5 times, 1 s apart) reads as
    "every probe unanswered" while the group holds the devices that answered windows before:
    an SNMP station with one device down looked like a sweep of 20 hosts.

    A target that answered the source within `memory_s` (outage.AnsweredMemory, noted from
    every window added) counts as answered too, after it left the kept windows: a station's
    targets that answered for an hour and then went down are an outage, not a sweep."""

    __slots__ = ("memory",)

    def __init__(self, width_ns: int, span: int = HORIZON_WINDOWS,
                 memory_s: float = OUTAGE_MEMORY_S) -> None:
        super().__init__(width_ns, span)
        self.memory = AnsweredMemory(memory_s)

    def add(self, ws: int, fates: dict[str, dict[tuple, bool]]) -> None:
        """Window `ws`'s known fates: source -> target -> unanswered, merged into what the window
        holds already (the scorer adds each window's fates from every stage 2 partition, which
        hold disjoint targets; a target added twice keeps answered if either copy says so)."""
        kept = self.windows.get(ws)
        if kept is None:
            kept = {}
            self._keep(ws, kept)
        seen, memory = self.seen, self.memory
        for src, targets in fates.items():
            t = kept.get(src)
            if t is None:
                kept[src] = dict(targets)
                seen[src] = seen.get(src, 0) + 1
            else:
                merge_fates(t, targets)
            answered = [x for x, quiet in targets.items() if not quiet]
            if answered:
                memory.note(src, answered, ws)
        memory.expire(ws)

    def add_tally(self, ws: int, tally: Mapping[str, list]) -> None:
        """Window `ws`'s probe tally (evidence.probe_tally: source -> [probes, unanswered,
        {target: unanswered}]) added as its fates (`add`)."""
        self.add(ws, {s: c[2] for s, c in tally.items()})

    def unanswered_share(self, src: str, ws: int | None = None) -> float | None:
        """Distinct targets of `src` nobody answered over the kept windows / the distinct
        targets with a known fate; None if it has none. With `ws` (the window decided), a
        target that answered `src` within the memory period before it counts as answered."""
        if src not in self.seen:
            return None
        merged: dict[tuple, bool] = {}
        for d in self.windows.values():
            t = d.get(src)
            if t:
                merge_fates(merged, t)
        if not merged:
            return None
        if ws is None or src not in self.memory.sources:
            return sum(merged.values()) / len(merged)
        answered = self.memory.answered
        return sum(q and not answered(src, t, ws) for t, q in merged.items()) / len(merged)
