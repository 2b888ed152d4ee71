"""What a window's flows say was sent: whether a flow was ANSWERED (its reverse 5-tuple carried
a packet) or SOLICITED (it replies to a request its destination sent from that port pair to a
multicast or broadcast address, `asks`), for services.detection.evidence. Pure; the replay gives 5-tuples, the scorer's stage 2
their hash64 (services/scorer/windows.py ships them)."""
from __future__ import annotations

from typing import Iterable

from services.records.packet import PROTO_TCP, PROTO_UDP, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

from .ports import TUNNEL_PORTS
from .sketch import _hash, hash64
from .watch import is_group

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
# ... and while the solicited replies towards it stay within SOLICITED_VOLUME packets a window
# (below the 2000-packet floor of a destination's unanswered packets: they hide no more than
# an unanswered flood under that bound could send anyway)
SOLICITED_VOLUME = 1000
# a TCP flow of at most this many packets a window, all resets (RST or RST+ACK, no SYN, FIN or
# data), is a refusal (`refuses`): it answers everything but a SYN-ACK
REFUSAL_PACKETS = 2
_NOT_REFUSAL = TCP_SYN | TCP_FIN | TCP_PSH
# a refusal's hash64 is shipped XOR-ed with this (scorer stage 1: windows.py), its 5-tuple kept
# with this suffix (the replay), so that `answered(key, refusals=False)` can leave it out
REFUSAL_SALT = 0x5EF05A1_0F_5EF05A1
REFUSED = ("refused",)


def refuses(key: tuple, packets: int, flags: int) -> bool:
    """Whether flow `key` (its packets and OR-ed TCP flags in the window) is a refusal: at most
    REFUSAL_PACKETS TCP packets, resets only. It answers no SYN-ACK (evidence.flow_marks): a
    host's stack resets every SYN-ACK it did not ask for, and with those resets taken as answers
    the victim of a SYN-ACK reflection saw 0 unanswered SYN-ACKs (a capture made with real
    tools: nginx on 200 addresses, the victim a live Linux host). It still answers everything
    else: a restarting server resets its keep-alive clients, who are no flood."""
    return (key[4] == PROTO_TCP and packets <= REFUSAL_PACKETS and bool(flags & TCP_RST)
            and not flags & _NOT_REFUSAL)


def refusals(proto, packets, flags):
    """`refuses` over numpy columns of flows (protocol, packets, flags): a boolean array."""
    return ((proto == PROTO_TCP) & (packets <= REFUSAL_PACKETS) & ((flags & TCP_RST) != 0)
            & ((flags & _NOT_REFUSAL) == 0))


def reverse_key(key: tuple) -> tuple:
    """The 5-tuple an answer to flow `key` has."""
    return (key[1], key[0], key[3], key[2], key[4])


def sent_from_key(key: tuple) -> tuple:
    """(address, sport, dport, proto) of a flow: what `solicited` looks up."""
    return (key[0], key[2], key[3], key[4])


def tunnels(key: tuple) -> bool:
    """Whether flow `key` goes to an encapsulation port (ports.TUNNEL_PORTS) of one host."""
    return key[4] == PROTO_UDP and key[3] in TUNNEL_PORTS and not is_group(key[1])


def tunnel_key(key: tuple) -> tuple:
    """What a tunnel flow `key` (`tunnels`) is noted by among a window's flows (Answers.flows):
    its ends and its port, not its source port (a hash of the inner flow)."""
    return _tunnel(key[0], key[1], key[3])


def _tunnel(src: str, dst: str, port: int) -> tuple:
    """The tunnel key of UDP from `src` to `port` of `dst`: a 4-tuple led by "tunnel", so it
    never equals a 5-tuple or a `sent_from_key` (led by an address)."""
    return ("tunnel", src, dst, port)


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

    __slots__ = ("current", "addresses", "flows", "asked", "hashed", "asking", "asked_before")

    def __init__(self, addresses: Iterable[str], flows: Iterable, senders: Iterable,
                 previous: "Answers | None" = None, hashed: bool = False,
                 skipped: int = 0) -> None:
        self.current = (set(addresses), set(flows), set(senders))
        self.addresses, self.flows = self.current[0], self.current[1]
        self.hashed = hashed
        # (source, destination, port) of requests sent FROM a tunnel port (`note_requests`):
        # this window's, and the window before's when it was the last one seen
        self.asking: set[tuple] = set()
        self.asked_before: set[tuple] = set()
        if previous is not None and not skipped:
            self.asked_before = previous.asking
        # (addresses, senders) of this window and up to SOLICIT_WINDOWS - 1 before, newest first
        self.asked = ((self.current[0], self.current[2]),)
        if previous is not None and 0 <= skipped < SOLICIT_WINDOWS - 1:
            if not skipped:
                self.addresses = self.addresses | previous.current[0]
                self.flows = self.flows | previous.current[1]
            self.asked += previous.asked[:SOLICIT_WINDOWS - 1 - skipped]

    @classmethod
    def of_keys(cls, keys: Iterable[tuple], previous: "Answers | None" = None,
                skipped: int = 0, states: "dict | None" = None) -> "Answers":
        """The Answers of a window's flows (5-tuples); the requests that solicit are those to a
        multicast or broadcast address (`asks`). With `states` (flow states by key, features
        form), a flow that `refuses` is kept as a refusal (`answered`)."""
        keys = list(keys)
        answering = list(keys) if states is None else [
            k + REFUSED if refuses(k, states[k]["packets"], states[k]["flags"]) else k for k in keys]
        answering += [tunnel_key(k) for k in keys if tunnels(k)]
        return cls((k[0] for k in keys), answering, (sent_from_key(k) for k in keys if asks(k)),
                   previous, skipped=skipped)

    def note_requests(self, keys: Iterable[tuple]) -> None:
        """Note the window's flows (5-tuples, every flow towards the destinations judged: the
        replay's all, a stage 2 partition's own) sent FROM a tunnel port to another port: a
        destination's UDP to that port of their source may be its answer to them (a DNS
        server answering a query sent from port 4789), so it answers no tunnel flow of that
        source (`answered`; review 18: such a query a second made a flood of the server's 4789
        answered). Call once per window, before `answered`."""
        self.asking = {(k[0], k[1], k[2]) for k in keys
                       if k[4] == PROTO_UDP and k[2] in TUNNEL_PORTS and k[3] != k[2]}

    def answered(self, key: tuple, refusals: bool = True) -> bool:
        """Whether the reverse 5-tuple of `key` sent something (`hash64` of it when hashed);
        with `refusals` False, a refusal (`refuses`) does not count. A flow to a tunnel port
        (`tunnels`) is also answered by any flow of its destination to that port of its
        source (`tunnel_key`), unless the source sent the destination UDP from that port to
        another port in this window or the one before (`note_requests`)."""
        if key[1] not in self.addresses:
            return False
        if tunnels(key):
            # a tunnel: answered while the destination sends to the same port of the source
            # (`tunnel_key`, noted among the flows; the scorer ships it as the flow's sent_by),
            # unless the source asked it something from that port (`note_requests`)
            back, asked = _tunnel(key[1], key[0], key[3]), (key[0], key[1], key[3])
            if ((hash64(back) if self.hashed else back) in self.flows
                    and asked not in self.asking and asked not in self.asked_before):
                return True
        if self.hashed:
            s, d, sp, dp, pr = key
            h = _hash(f"{d}|{s}|{dp}|{sp}|{pr}")
            return h in self.flows or (refusals and (h ^ REFUSAL_SALT) in self.flows)
        r = reverse_key(key)
        return r in self.flows or (refusals and r + REFUSED in self.flows)

    def solicited(self, key: tuple) -> bool:
        """Whether flow `key` answers a request its destination sent from the flow's destination
        port to its source port, to a multicast or broadcast address (`asks`), within the last
        SOLICIT_WINDOWS windows, or is `answered`."""
        d, asked = key[1], self.asked
        if not any(d in a for a, _ in asked):
            return False
        ask = asked_key(key)
        h = hash64(ask) if self.hashed else ask
        return any(h in s for _, s in asked) or self.answered(key)


def asks(key: tuple) -> bool:
    """Whether flow `key` is a request that solicits replies from whoever hears it: UDP to a
    multicast or broadcast address (an SSDP M-SEARCH, an mDNS or NetBIOS query). A request to
    one host is answered by that host (`answered`), so none other is taken as solicited by it:
    otherwise an attacker who makes a server answer from a port pair (a DNS query from port 53)
    would have a flood on that pair taken for replies. The scorer's stage 1 ships the
    sent_from hashes of such flows whose port is a reflector port (windows._sender_hashes)."""
    return key[4] == PROTO_UDP and is_group(key[1])


def crowded(triples: Iterable[tuple[str, str, int]]) -> set[str]:
    """The destinations of (destination, source, packets) `triples` of solicited replies with
    more than SOLICITED_SOURCES distinct sources or more than SOLICITED_VOLUME packets: their
    replies are judged as not solicited."""
    seen: dict[str, list] = {}
    for d, s, n in triples:
        e = seen.get(d)
        if e is None:
            e = seen[d] = [set(), 0]
        e[0].add(s)
        e[1] += n
    return {d for d, (srcs, n) in seen.items()
            if len(srcs) > SOLICITED_SOURCES or n > SOLICITED_VOLUME}
