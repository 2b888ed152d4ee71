"""Outage memory: the probe targets that answered a source lately, kept beyond the horizon. Pure.

Probe evidence (services.detection.watch: probe_tcp, probe_other) counts a source's targets
that did not answer over the last 10 windows. A monitoring station (a ping monitor, an SNMP
station, a load balancer's health checks) re-probes the same targets for hours, every one of
them answering; when a switch fails and 10 or more of them go silent, the answers leave the
10-window horizon and the station reads like a sweep of empty addresses: it would be blocked
about 10 s into the outage, when the operator needs it most.

The rule: a target (dst, proto, dport) that ANSWERED THIS SOURCE within the memory period
(`OUTAGE_MEMORY_S`, default an hour) counts as answered for that source's probe evidence, even
after it left the horizon. A scan's unanswered targets never answered the scanner; a target
that answered this very source before and stops is an outage. An attacker cannot make a dead
address have answered it before: only targets that did answer are remembered, so a sweep's
empty addresses count as before, whatever the live hosts of the same /24 answered.

What "answered" means per protocol:
  UDP / ICMP / other  the reverse 5-tuple carried a packet (evidence.flow_marks ANSWERED), read
                      from the probe fates of every window (watch.ProbeFates.add; the scorer's
                      stage 2 merges them over its partitions first, dst_windows.DstPartition).
  TCP                 the source completed a handshake with it: a flow with its SYN and its own
                      ACK (watch.SourceWatch, stage 1, where all of a source's flows are). The
                      ACK is the source's own word, but a scanner that sends it gains nothing:
                      a flow carrying its ACK is not a half-open probe either, remembered or not.

Bounds (`AnsweredMemory`): at most `MAX_TARGETS` targets per source and `MAX_SOURCES` sources,
the least recently answered going first at either cap (at the source cap, of the sources with
one target if there is one: a client is no station); what answered before the period is
dropped as windows are added. A target is kept as its 64-bit hash with its newest window start:
measured with tracemalloc at ~112 bytes per target (28.8 KB for a source with 256), so the worst
case is 2048 x 256 = 524,288 targets, ~59 MB per memory (tests/unit/test_outage_memory.py checks
the per-target cost); a source with a few targets costs under 1 KB. 256 targets is a whole /24
on one port. The replay keeps two memories (TCP, other); the scorer one per stage 1 partition
(TCP: that partition's sources) and one per stage 2 partition it holds (other: every stage 2
partition holds every candidate's fates, so a worker holding all 8 holds 8 copies). UDP/ICMP
memory holds only sources with a probe group of 2 or more (those ProbeFates keeps); TCP memory
every source that completes handshakes (a healthy checker's probes complete: it has no probe
group before the outage). A busy server's clients each complete handshakes with one target
(its port) and go first at the source cap, so they do not push a checker out (1,100 new
clients a second did in the replay before they did: a checker of 24 backends blocked 2 s into
an outage); more than MAX_SOURCES other sources with 2 or more targets each between two of a
checker's rounds (a spoofed flood of 4 packets a source can do it) do, and its outage is then
judged as without the memory (blocked once 10 or more targets of one group are silent).

In memory only, like the horizon: after a restart or a rebalance the scorer's memory refills
from the windows closed since (a station's targets that died before that count as unanswered).
"""
from __future__ import annotations

from typing import Iterable

OUTAGE_MEMORY_S = 3600.0   # default period; a model's params may set `outage_memory_s`
MAX_OUTAGE_MEMORY_S = 7 * 86400.0  # the longest a model may set (a week; load_model checks)
MAX_SOURCES = 2048        # sources remembered (least recently answered out)
MAX_TARGETS = 256         # targets per source (a /24 on one port)


class AnsweredMemory:
    """Source -> hash(target) -> the newest window start (ns) in which the target answered it
    (the built-in hash of the (dst, proto, dport) tuple: 64 bits, salted per process, so no
    target can be crafted to pass for another). Dicts keep insertion order: a target noted
    again moves to the end, so the least recently answered is first. `period_s` 0 remembers
    nothing (evidence as without the memory). At the source cap the least recently answered
    source with ONE target goes first (`singles`, in the same order): a busy server's clients
    each complete handshakes with one target and must not push out a station, whose probe
    group needs 2 or more; only when none is left does the least recent source go."""

    __slots__ = ("period_ns", "max_sources", "max_targets", "sources", "singles")

    def __init__(self, period_s: float = OUTAGE_MEMORY_S, max_sources: int = MAX_SOURCES,
                 max_targets: int = MAX_TARGETS) -> None:
        if period_s < 0 or max_sources < 1 or max_targets < 1:
            raise ValueError("outage memory: period must be >= 0 and caps >= 1")
        self.period_ns = int(period_s * 1e9)
        self.max_sources, self.max_targets = max_sources, max_targets
        self.sources: dict[str, dict[int, int]] = {}
        self.singles: dict[str, None] = {}  # sources holding one target, least recent first

    def note(self, src: str, targets: Iterable[tuple], ws: int) -> None:
        """`targets` (dst, proto, dport) answered `src` in window `ws` (windows come oldest
        first; an older one noted late keeps the newer time)."""
        if not self.period_ns:
            return
        sources, singles = self.sources, self.singles
        kept = sources.pop(src, None)
        if kept is None:
            kept = {}
            if len(sources) >= self.max_sources:
                out = next(iter(singles or sources))
                del sources[out]
                singles.pop(out, None)
        sources[src] = kept
        for t in targets:
            h = hash(t)
            at = kept.pop(h, None)
            kept[h] = ws if at is None or at < ws else at
        while len(kept) > self.max_targets:
            del kept[next(iter(kept))]
        singles.pop(src, None)
        if len(kept) == 1:
            singles[src] = None

    def expire(self, ws: int) -> None:
        """Drop what answered before the period ending at window `ws`, least recent first
        (a source further on is checked when it comes first; `answered` checks the time). A
        source trimmed to one target joins `singles` at its head: it is the least recently
        answered source, so at the source cap it is the first to go."""
        cutoff = ws - self.period_ns
        sources = self.sources
        while sources:
            src = next(iter(sources))
            kept = sources[src]
            had = len(kept)
            while kept and kept[next(iter(kept))] < cutoff:
                del kept[next(iter(kept))]
            if kept:
                if had > 1 and len(kept) == 1:  # now a single, and the least recent source
                    self.singles = {src: None, **self.singles}
                break
            del sources[src]
            self.singles.pop(src, None)

    def answered(self, src: str, target: tuple, ws: int) -> bool:
        """Whether `target` answered `src` within the period before window `ws` (ns)."""
        kept = self.sources.get(src)
        if kept is None:
            return False
        at = kept.get(hash(target))
        return at is not None and at >= ws - self.period_ns

    def __len__(self) -> int:
        """Targets held, over every source."""
        return sum(map(len, self.sources.values()))
