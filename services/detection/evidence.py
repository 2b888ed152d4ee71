"""Evidence of hostility in one window, per rule scope. Pure; shared by replay, training and the
scorer's two stages.

The model's score says how unlike the benign training data a flow looks (novelty); it does not
say the traffic does harm. A rule needs both (services.detection.detect): a score at or above
the threshold AND one of the measures below at or above its bound for the rule's scope. Every
measure counts something the data plane can see on ingress and benign applications do not do
in bulk; its bound is calibrated on benign captures (`bounds.EvidenceBounds`).

A flow S->D is ANSWERED when the reverse 5-tuple (D, S, dport, sport, proto) carried a packet in
this window or the one before. A UDP flow from a reflector port is SOLICITED when D itself sent
from that port pair to a multicast or broadcast address (discovery; answers.asks) in this
window or the SOLICIT_WINDOWS - 1 before; it then counts as answered too (an SSDP device answers
an M-SEARCH sent to the group by unicast, to a searcher that never sends to it). A flow whose
last packet came in the window's last GRACE_NS is SETTLED only later: its answer or its ACK may
fall into the next window, so in its own window it counts as neither half-open nor unanswered.
A source's SYN-only flow of that kind with no packet in the next window is counted there as a
half-open probe (`SourceWatch.add_entries`); the marks below judge each window on its own.

Source scope (stage 1 of the scorer holds all of a source's flows: `SourceWatch`, `SRC_OWN`):
  half_open    TCP flows of the source in the window with a SYN and no ACK, towards its busiest
               destination: a SYN flood from one address. Benign: a client's connection
               attempts to dead peers (a P2P node) are spread over many hosts.
  probe_tcp    half-open flows of <= 2 packets over the horizon (10 windows), largest TARGET
               GROUP: distinct ports of one host (port scan) or distinct hosts of one /24
               (IPv6 /64) on one port (sweep). Benign fan-out is spread over the Internet
               (P2P peers, CDN servers) and completes its handshakes. A target the source
               completed a handshake with within the outage memory's period is left out
               (services.detection.outage: a health checker's backends going down).
  probe_other  the same for UDP / ICMP / other flows of <= 2 packets, weighted by the share of
               the source's such flows here nobody answered (`src_measures`): a DNS prober's
               resolvers answer, a swept /24's empty addresses do not (UDP to traceroute's ports
               of one host, TRACEROUTE_PORTS, is one target: a traceroute run is no port fan,
               a sweep on 33434 still a sweep). Decisions take the lower
               of that and the share of its distinct targets nobody answered over the horizon
               (`ProbeFates`): retries to one dead device are not a sweep; a target that
               answered the source within the outage memory's period counts as answered
               there (services.detection.outage: a station's targets going down).
  login        TCP sessions started by the source towards ONE login service (LOGIN_PORTS) of one
               host, summed over the last 3 windows (password guessing); a session is a completed
               handshake, its ACK in the SYN's window or one of the OPEN_WINDOWS - 1 after it,
               counted in the ACK's window (watch.SourceWatch.count; a refused or unanswered SYN
               guesses nothing: an app pool retrying a database that is down). Benign: a mail client
               polling, one SSH session; web ports are not login services (a client
               that reconnects per request is ordinary).
Destination scope (stage 2 holds all flows towards a destination: `dst_measures`):
  half_open_srcs  distinct sources with a half-open flow to the destination (spoofed SYN flood)
  synack_srcs     distinct sources sending it bare, unanswered SYN-ACKs (SYN-ACK reflection)
  rst_srcs        distinct sources sending it unanswered RSTs (RST storm, backscatter)
  reflector_srcs  distinct sources sending it unsolicited UDP from a reflector port (REFLECTOR_PORTS);
                  never a multicast or broadcast destination: a reflector answers the (spoofed)
                  source address of a query, a victim's unicast address, while devices announce
                  themselves to a group (mDNS answers to 224.0.0.251:5353, SSDP NOTIFYs)
  fragments       non-first IP fragments (TCP/UDP with both ports 0) towards it, beyond
                  FRAGMENTS_PER_DATAGRAM per first fragment the same source's port-bearing UDP
                  flows to it can hold (packets of FIRST_FRAGMENT_BYTES or more), unless such
                  a flow is REFLECTED: the rest of datagrams the destination asked for (a
                  resolver's large answers) or of a stream sent to it (iperf3 -u, RTP video)
  dhcp            DHCP client packets (UDP 68 -> 67) towards it: a DISCOVER flood to broadcast
  unsolicited_srcs distinct sources whose flows to it nobody answered (not counting flows to a
                  port of a one-way protocol, ONE_WAY_PORTS: syslog, traps, flow export, metrics,
                  while their packets to it stay at or below ONE_WAY_VOLUME a window)
  packets         packets towards it nobody answered (one-sided volume far above any benign
                  destination's: a download or a call is answered, a flood is not)
and per source the same one-sided volume (`src_measures`; partition-local in the scorer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

from .answers import (SOLICIT_WINDOWS, SOLICITED_PACKETS, SOLICITED_SOURCES,  # noqa: F401
                      SOLICITED_VOLUME, Answers, asked_key, asks, crowded, reverse_key,
                      sent_from_key)
from .ports import (LOGIN_PORTS, ONE_WAY_PORTS, REFLECTOR_PORTS,  # noqa: F401 (re-exported)
                    TRACEROUTE_PORTS, probe_target)
from .watch import (ProbeFates, SourceWatch,  # noqa: F401
                    is_group)  # (re-exported)
from .watch import merge_fates

from .fragments import (FIRST_FRAGMENT_BYTES, FRAGMENTS_PER_DATAGRAM,  # noqa: F401 (re-exported)
                        UNANSWERED_FIRST_MIN, pair_budgets)
from .marks import (ANSWERED, DHCP, FRAGMENT, GROUP, HALF_OPEN, INITIATED,  # noqa: F401 (re-exported)
                    ONE_WAY, PROBE, REFLECTED, RST_ONLY, SOLICITED, SYNACK, UNANSWERED)

ONE_WAY_VOLUME = 2000  # the `packets` floor: the exemption ends where one-sided volume is evidence
GRACE_NS = 250_000_000  # an answer or an ACK comes within this (round-trip times are shorter)
UNSPECIFIED = ("0.0.0.0", "::")  # a DHCP client before its lease: never a blockable source

SRC_OWN: tuple[str, ...] = ("half_open", "probe_tcp", "probe_other", "login")
SRC_MEASURES: tuple[str, ...] = ("half_open", "probe_tcp", "probe_other", "login", "packets")
DST_MEASURES: tuple[str, ...] = ("half_open_srcs", "synack_srcs", "rst_srcs", "reflector_srcs",
                                 "fragments", "dhcp", "unsolicited_srcs", "packets")

_BARE = TCP_FIN | TCP_RST | TCP_PSH


def settled(last_ns: int, window_end_ns: int) -> bool:
    """A flow whose last packet is GRACE_NS before the window's end has had time for its answer."""
    return last_ns <= window_end_ns - GRACE_NS


def flow_marks(key: tuple, st: Mapping, answers: Answers, window_end_ns: int,
               solicit: bool = True) -> int:
    """The marks of one flow (features flow-state form: packets, flags, syn, last); with
    `solicit` False a solicited reply is not taken as answered (`crowded`)."""
    proto, packets, flags = key[4], st["packets"], st["flags"]
    m = 0
    group = is_group(key[1])
    answered = answers.answered(key)
    if (not answered and solicit and proto == PROTO_UDP and key[2] in REFLECTOR_PORTS
            and packets <= SOLICITED_PACKETS and answers.solicited(key)):
        answered = True
        m |= SOLICITED
    done = settled(st["last"], window_end_ns)
    if answered:
        m |= ANSWERED
    elif group:
        m |= GROUP  # nobody answers a group address: neither answered nor unanswered
    elif done:
        m |= UNANSWERED
        if proto == PROTO_UDP and key[3] in ONE_WAY_PORTS:
            m |= ONE_WAY
    if packets <= 2 and not group:
        m |= PROBE
    if proto == PROTO_TCP:
        if st.get("syn", 0):
            m |= INITIATED
            if not flags & TCP_ACK and done:
                m |= HALF_OPEN
        elif flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK and not flags & _BARE:
            if not (answered and answers.answered(key, refusals=False)):  # a reset is no answer
                m |= SYNACK
        elif not answered and flags & TCP_RST and not flags & TCP_SYN:
            m |= RST_ONLY
    elif proto == PROTO_UDP:
        if key[2] in REFLECTOR_PORTS and not group and not answered:
            m |= REFLECTED
        if key[2] == 68 and key[3] == 67:
            m |= DHCP
    if proto in (PROTO_TCP, PROTO_UDP) and key[2] == 0 and key[3] == 0:
        m |= FRAGMENT
    return m


_SOURCE_SETS = ((HALF_OPEN, 0), (SYNACK, 1), (RST_ONLY, 2), (REFLECTED, 3), (UNANSWERED, 4))
_ANY_SET = HALF_OPEN | SYNACK | RST_ONLY | REFLECTED | UNANSWERED


def dst_measures(keys: Iterable[tuple], flows: Mapping[tuple, Mapping],
                 marks: Mapping[tuple, int]) -> dict[str, list[float]]:
    """DST_MEASURES of every destination of `keys` (all flows towards it must be there).
    `fragments` counts a source's non-first fragments beyond its budget at the destination:
    FRAGMENTS_PER_DATAGRAM per first fragment its port-bearing UDP flows there can hold
    (`fragments.pair_budgets`), REFLECTED flows left out (the rest of datagrams the destination asked
    for, a resolver's large answers, or of a stream sent to it, iperf3 -u or RTP video; an
    amplification's unsolicited first fragments, a small query's answer, a TCP or ICMP exchange
    buy nothing). `unsolicited_srcs` leaves out ONE_WAY flows unless the destination's ONE_WAY
    packets exceed ONE_WAY_VOLUME."""
    keys = list(keys)
    # (src, dst) -> fragments its UDP first fragments account for (fragments.pair_budgets)
    budget = pair_budgets(keys, flows, marks)
    loud: dict[str, int] = {}  # dst -> packets of its ONE_WAY flows
    for k in keys:
        m = marks[k]
        if m & ONE_WAY:
            loud[k[1]] = loud.get(k[1], 0) + flows[k]["packets"]
    acc: dict[str, list] = {}  # dst -> 5 source sets (None until needed), fragments, dhcp, volume
    for k in keys:
        m, d = marks[k], k[1]
        a = acc.get(d)
        if a is None:
            a = acc[d] = [None, None, None, None, None, 0, 0, 0]
        if not m & (ANSWERED | GROUP):
            a[7] += flows[k]["packets"]
        if m & ONE_WAY and loud[d] <= ONE_WAY_VOLUME:
            m &= ~UNANSWERED
        if m & _ANY_SET:
            for bit, i in _SOURCE_SETS:
                if m & bit:
                    if a[i] is None:
                        a[i] = {k[0]}
                    else:
                        a[i].add(k[0])
        if m & FRAGMENT:
            n, b = flows[k]["packets"], budget.get(k[:2], 0)
            if b:
                budget[k[:2]] = max(0, b - n)
            a[5] += max(0, n - b)
        elif m & DHCP:
            a[6] += flows[k]["packets"]
    return {d: [len(a[0]) if a[0] else 0, len(a[1]) if a[1] else 0, len(a[2]) if a[2] else 0,
                len(a[3]) if a[3] else 0, a[5], a[6], len(a[4]) if a[4] else 0, float(a[7])]
            for d, a in acc.items()}


def known_probe(key: tuple, mark: int) -> bool:
    """A non-TCP probe flow whose fate is known (answered, or settled without an answer): what
    probe_other's unanswered share counts (src_measures, probe_tally)."""
    return bool(mark & PROBE and mark & (ANSWERED | UNANSWERED) and key[4] != PROTO_TCP)


def src_measures(keys: Iterable[tuple], flows: Mapping[tuple, Mapping], marks: Mapping[tuple, int],
                 own: Mapping[str, list]) -> dict[str, list[float]]:
    """SRC_MEASURES of every source of `keys`: its stage-1 measures (`own`, SRC_OWN order) with
    probe_other weighted by the share of its non-TCP probes here that nobody answered (of those
    whose fate is known: answered, or settled without an answer), and its packets here that
    nobody answered."""
    probes: dict[str, list[int]] = {}
    volume: dict[str, int] = {}
    for k in keys:
        m, s = marks[k], k[0]
        if not m & (ANSWERED | GROUP):
            volume[s] = volume.get(s, 0) + flows[k]["packets"]
        if known_probe(k, m):
            c = probes.get(s)
            if c is None:
                c = probes[s] = [0, 0]
            c[0] += 1
            c[1] += bool(m & UNANSWERED)
    out = {}
    zero = (0, 0, 0, 0)
    for s in dict.fromkeys(k[0] for k in keys):
        o = own.get(s) or zero
        c = probes.get(s)
        out[s] = [o[0], o[1], o[2] * c[1] / c[0] if c else 0.0, o[3], volume.get(s, 0)]
    return out


def probe_tally(keys: Iterable[tuple], marks: Mapping[tuple, int],
                own: Mapping[str, list]) -> dict[str, list]:
    """The known non-TCP probes (`known_probe`) among `keys` of every candidate source (probe
    group of 2 or more in `own`, SRC_OWN order): source -> [probes, unanswered probes,
    {target (dst, proto, dport): unanswered}]. What hold_tallied needs of a window; in the
    scorer every stage 2 partition tallies its own destinations and the tallies are merged
    (merge_tallies) before anything is held. `keys` may be any superset of those probes."""
    at = SRC_OWN.index("probe_other")
    out: dict[str, list] = {}
    for k in keys:
        m = marks[k]
        if known_probe(k, m):
            o = own.get(k[0])
            if o is not None and o[at] >= 2:  # a group: a candidate
                c = out.get(k[0])
                if c is None:
                    c = out[k[0]] = [0, 0, {}]
                quiet = bool(m & UNANSWERED)
                c[0] += 1
                c[1] += quiet
                merge_fates(c[2], {probe_target(k): quiet})
    return out


def merge_tallies(tallies: Iterable[Mapping[str, list]]) -> dict[str, list]:
    """probe_tally results of disjoint sets of flows (a window's stage 2 partitions) as one:
    counts added, a target answered in any of them answered."""
    out: dict[str, list] = {}
    for tally in tallies:
        for s, (probes, quiet, targets) in tally.items():
            c = out.get(s)
            if c is None:
                out[s] = [probes, quiet, dict(targets)]
                continue
            c[0] += probes
            c[1] += quiet
            merge_fates(c[2], targets)
    return out


def hold_tallied(tally: Mapping[str, list], groups: Mapping[str, float],
                 src: Mapping[str, list], fates: ProbeFates, ws: int) -> dict[str, float]:
    """probe_other for decisions where it is lower than in `src` (src_measures): window `ws`'s
    probe `tally` (probe_tally, merged over every place that holds a part of the window) is
    added to `fates`; a source of `groups` (source -> its probe group, SourceWatch) with known
    probes in `src` is held to its group times the lower of the tally's unanswered share and
    the horizon's (`ProbeFates`: retries to one dead device are not a sweep; a target that
    answered the source within the outage memory counts as answered: an outage)."""
    fates.add_tally(ws, tally)
    at = SRC_MEASURES.index("probe_other")
    held = {}
    for s, (probes, quiet, _) in tally.items():
        g, here = groups.get(s), src.get(s)
        if g is None or here is None:
            continue
        h = fates.unanswered_share(s, ws)
        if h is None:
            continue
        v = min(g * quiet / probes, g * h)  # src_measures' arithmetic: one partition, equal
        if v < here[at]:
            held[s] = v
    return held


def probe_groups(sources: Iterable[str], own: Mapping[str, list]) -> dict[str, float]:
    """The probe group (SourceWatch, `own`) of every candidate among `sources` (a probe group
    of 2 or more, as probe_tally keeps; every source of a tally is one)."""
    at = SRC_OWN.index("probe_other")
    out = {}
    for s in sources:
        o = own.get(s)
        if o is not None and o[at] >= 2:
            out[s] = o[at]
    return out


# --- one window, assessed ------------------------------------------------------------------------

@dataclass
class WindowEvidence:
    """Marks of every flow and the measures of every source and destination of one window."""
    marks: dict[tuple, int]
    src: dict[str, list[float]]   # SRC_MEASURES
    dst: dict[str, list[float]]   # DST_MEASURES
    # probe_other of the sources whose horizon's unanswered share is lower than this window's
    # (hold_tallied, ProbeFates): what decisions use; the model sees `src`
    held: dict[str, float] = field(default_factory=dict)
    # the window's probe_tally: what hold_tallied needs (the scorer merges the partitions')
    tally: dict[str, list] = field(default_factory=dict)

    def src_for_decision(self, src: str) -> list[float]:
        """SRC_MEASURES of `src` as the decision reads them (probe_other held, if it is)."""
        vals = self.src[src]
        h = self.held.get(src)
        if h is None:
            return vals
        vals = list(vals)
        vals[SRC_MEASURES.index("probe_other")] = h
        return vals

    def model_inputs(self) -> tuple[dict, dict]:
        """(source, destination) values of features.SRC_ / DST_EVIDENCE_FEATURES: the measures
        but packets (the model has those as src_packets / dst_packets)."""
        return ({s: v[:len(SRC_MEASURES) - 1] for s, v in self.src.items()},
                {d: v[:len(DST_MEASURES) - 1] for d, v in self.dst.items()})


def assess(keys: Iterable[tuple], flows: Mapping[tuple, Mapping], answers: Answers,
           window_end_ns: int, src_own: Mapping[str, list], fates: ProbeFates | None = None,
           ws: int = 0) -> WindowEvidence:
    """Evidence of window `ws`: `flows` in features flow-state form by 5-tuple, `src_own` the
    sources' SourceWatch measures, `fates` the probe fates of the windows before (updated;
    without, nothing is held: the scorer holds after merging its partitions' tallies)."""
    keys = list(keys)
    answers.note_requests(keys)
    marks = {k: flow_marks(k, flows[k], answers, window_end_ns) for k in keys}
    busy = crowded((k[1], k[0], flows[k]["packets"]) for k in keys if marks[k] & SOLICITED)
    if busy:
        for k in keys:
            if marks[k] & SOLICITED and k[1] in busy:
                marks[k] = flow_marks(k, flows[k], answers, window_end_ns, solicit=False)
    src = src_measures(keys, flows, marks, src_own)
    tally = probe_tally(keys, marks, src_own)
    held = {}
    if fates is not None:
        held = hold_tallied(tally, probe_groups(tally, src_own), src, fates, ws)
    return WindowEvidence(marks, src, dst_measures(keys, flows, marks), held, tally)


def assess_window(window, window_end_ns: int, previous: Answers | None = None,
                  watch: "SourceWatch | None" = None,
                  fates: ProbeFates | None = None,
                  skipped: int = 0) -> tuple[WindowEvidence, Answers]:
    """Evidence of a features.WindowState (all its flows in one place, as in the replay).
    `watch` and `fates` must not hold this window yet (it is added here); without a watch, the
    source measures cover this window alone, without fates no probe_other is held. Returns
    the Answers for the next window's call."""
    flows = window.flows
    answers = Answers.of_keys(flows, previous, skipped, states=flows)  # skipped: Answers
    if watch is None:
        watch = SourceWatch(max(window_end_ns - window.start_ns, 1), span=1)
    entries: dict[str, list] = {}
    handshakes: dict[str, list] = {}
    for k, st in flows.items():
        SourceWatch.count(entries, k, st["packets"], st["flags"], st.get("syn", 0),
                          settled(st["last"], window_end_ns), handshakes)
    watch.add_entries(window.start_ns, entries, flows, handshakes)
    own = watch.measures(window.start_ns, window.srcs)
    ev = assess(flows, flows, answers, window_end_ns, own, fates, window.start_ns)
    return ev, answers
