"""IP fragments and the datagrams they belong to. Pure.

A non-first fragment carries no ports (the data plane reports it with sport = dport = 0 as its
own flow, src -> dst with ports 0), so nothing answers it by 5-tuple. What it belongs to is its
datagram's FIRST fragment: that one carries the ports and fills the link's MTU. One use
(docs/detection.md, Evidence, "The fragment budget"):
- the `fragments` measure (evidence.dst_measures) counts a source's non-first fragments to a
  destination beyond the budget its port-bearing UDP flows there buy (`pair_budgets`);
- nothing else: a non-first fragment flow is never answered by 5-tuple, so it counts in
  `unsolicited_srcs` and `packets` like any unanswered flow. Treating the fragments an ANSWERED
  flow's budget covers as answered (acb4228, for review 13's F4: a resolver whose 60 or 100
  servers a second answered in fragments was limited) let a spoofed flood of large datagrams
  at a UDP service of the victim that answers each one go unnamed under 2,000 packets a window
  (review 15, G1: 0 dropped, 78-92% before); it was taken out again, F4 stays open.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from services.records.packet import PROTO_UDP

from .marks import ANSWERED, FRAGMENT, REFLECTED

# The most non-first fragments one datagram can have (65,535 bytes over a 1,500-byte MTU: 44):
# the budget of fragments a first fragment of the same source buys
FRAGMENTS_PER_DATAGRAM = 44
# A fragmented datagram's first fragment fills the link's MTU (1,514-byte frames on Ethernet,
# at least 1,294 at IPv6's minimum MTU of 1,280): a UDP flow of b bytes holds at most
# b // FIRST_FRAGMENT_BYTES of them; a small packet (a 60-byte query) holds none
FIRST_FRAGMENT_BYTES = 1200
# a source's unanswered flows to a destination buy a budget from this many first fragments,
# together (review 15 G2: per flow, a host sending each datagram from a new socket bought none)
UNANSWERED_FIRST_MIN = 2


def first_fragments_held(packets: int, nbytes: int) -> int:
    """First fragments a port-bearing UDP flow of `packets` and `nbytes` of frames can hold."""
    return min(packets, nbytes // FIRST_FRAGMENT_BYTES)


def pair_budgets(keys: Iterable[tuple], flows: Mapping[tuple, Mapping],
                 marks: Mapping[tuple, int]) -> dict[tuple, int]:
    """(src, dst) -> the non-first fragments the source's port-bearing UDP flows there account
    for (evidence.dst_measures): FRAGMENTS_PER_DATAGRAM per first fragment they can hold, REFLECTED
    flows none; the ANSWERED ones each from one first fragment, the others
    only when they hold UNANSWERED_FIRST_MIN together (review 13 F1: a spoofed address's one
    datagram paid for itself; review 15 G2: counted per flow, a host sending each large datagram
    from a new source port, one first fragment per 5-tuple, bought nothing)."""
    budget: dict[tuple, int] = {}
    alone: dict[tuple, int] = {}  # first fragments of the pair's flows not answered
    for k in keys:
        m = marks[k]
        if m & (FRAGMENT | REFLECTED) or k[4] != PROTO_UDP:
            continue
        st = flows[k]
        held = first_fragments_held(st["packets"], st["bytes"])
        if not held:
            continue
        if m & ANSWERED:
            budget[k[:2]] = budget.get(k[:2], 0) + FRAGMENTS_PER_DATAGRAM * held
        else:
            alone[k[:2]] = alone.get(k[:2], 0) + held
    for pair, held in alone.items():
        if held >= UNANSWERED_FIRST_MIN:
            budget[pair] = budget.get(pair, 0) + FRAGMENTS_PER_DATAGRAM * held
    return budget

