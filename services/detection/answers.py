"""What a window's flows say was sent: whether a flow was ANSWERED (its reverse 5-tuple carried
a packet) or SOLICITED (it replies to a request its destination sent from that port pair, to
anyone), for services.detection.evidence. Pure; the replay gives 5-tuples, the scorer's stage 2
their hash64 (services/scorer/windows.py ships them)."""
from __future__ import annotations

from typing import Iterable

from .sketch import _hash, hash64

# windows a request to a reflector port solicits answers for: SSDP devices wait up to the
# M-SEARCH's MX, at most 5 s (UPnP Device Architecture 1.1, 1.3.3), before they answer
SOLICIT_WINDOWS = 6
# a solicited reply counts as answered only in flows of at most SOLICITED_PACKETS packets a
# window (an SSDP device answers an ssdp:all search with one response per device and service
# type), and only while its destination gets them from at most SOLICITED_SOURCES sources a
# window (the hosts of a /24 LAN segment): an amplification aimed at a host that itself sends
# from the reflector port (mDNS from 5353) comes from more reflectors, or more per reflector
SOLICITED_PACKETS = 16
SOLICITED_SOURCES = 254


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
    """What was sent in this window and the one before, for `answered`, and in the last
    SOLICIT_WINDOWS windows, for `solicited`: the addresses that sent anything, flows as
    5-tuples and `sent_from_key`s. The replay gives the tuples; the scorer's stage 2 gives their
    `hash64` (the source partitions ship them, windows.py: for requests to reflector ports
    only) and sets `hashed`. An address that sent nothing answers nothing: no hash is computed
    for the flows towards it (a flood's silent victim). `previous` is the last window seen,
    `skipped` the windows without flows between it and this one: it answers only when none
    were skipped, and solicits while it is within SOLICIT_WINDOWS (a window the replay or a
    stage 2 partition saw no flow in is a window nobody asked anything in)."""

    __slots__ = ("current", "addresses", "flows", "asked", "hashed")

    def __init__(self, addresses: Iterable[str], flows: Iterable, senders: Iterable,
                 previous: "Answers | None" = None, hashed: bool = False,
                 skipped: int = 0) -> None:
        self.current = (set(addresses), set(flows), set(senders))
        self.addresses, self.flows = self.current[0], self.current[1]
        self.hashed = hashed
        # (addresses, senders) of this window and up to SOLICIT_WINDOWS - 1 before, newest first
        self.asked = ((self.current[0], self.current[2]),)
        if previous is not None and 0 <= skipped < SOLICIT_WINDOWS - 1:
            if not skipped:
                self.addresses = self.addresses | previous.current[0]
                self.flows = self.flows | previous.current[1]
            self.asked += previous.asked[:SOLICIT_WINDOWS - 1 - skipped]

    @classmethod
    def of_keys(cls, keys: Iterable[tuple], previous: "Answers | None" = None,
                skipped: int = 0) -> "Answers":
        keys = list(keys)
        return cls((k[0] for k in keys), keys, map(sent_from_key, keys), previous,
                   skipped=skipped)

    def answered(self, key: tuple) -> bool:
        """Whether the reverse 5-tuple of `key` sent something (`hash64` of it when hashed)."""
        if key[1] not in self.addresses:
            return False
        if self.hashed:
            s, d, sp, dp, pr = key
            return _hash(f"{d}|{s}|{dp}|{sp}|{pr}") in self.flows
        return reverse_key(key) in self.flows

    def solicited(self, key: tuple) -> bool:
        """Whether flow `key` answers a request its destination sent from the flow's destination
        port to its source port, to anyone (a multicast group too), within the last
        SOLICIT_WINDOWS windows, or is `answered`."""
        d, asked = key[1], self.asked
        if not any(d in a for a, _ in asked):
            return False
        ask = asked_key(key)
        h = hash64(ask) if self.hashed else ask
        return any(h in s for _, s in asked) or self.answered(key)


def crowded(pairs: Iterable[tuple[str, str]]) -> set[str]:
    """The destinations of (destination, source) `pairs` of solicited replies that have more
    than SOLICITED_SOURCES distinct sources: their replies are judged as not solicited."""
    seen: dict[str, set] = {}
    for d, s in pairs:
        seen.setdefault(d, set()).add(s)
    return {d for d, srcs in seen.items() if len(srcs) > SOLICITED_SOURCES}
