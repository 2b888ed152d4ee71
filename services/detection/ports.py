"""Ports of well-known services that the evidence (services.detection.evidence, watch) treats
apart, and the probe target of a flow. Pure constants and one function; the sources of each list
are given with it."""
from __future__ import annotations

from services.records.packet import PROTO_UDP

# UDP source ports of well-known amplification vectors (US-CERT TA14-017A and later advisories):
# QOTD, chargen, DNS, TFTP, portmap, NTP, NetBIOS, SNMP, CLDAP, SLP, ISAKMP, RIP, IPMI, OpenVPN,
# MS-SQL, Citrix, SSDP, ARD, WS-Discovery, SIP, NAT-PMP, mDNS, CoAP, BitTorrent, Ubiquiti,
# memcached, VxWorks, Quake, Steam, Lantronix, Plex, Jenkins, DVR (37810), BACnet
REFLECTOR_PORTS = frozenset({17, 19, 53, 69, 111, 123, 137, 161, 389, 427, 500, 520, 623, 1194,
                             1434, 1604, 1900, 3283, 3702, 5060, 5351, 5353, 5683, 6881, 10001,
                             11211, 17185, 26000, 27015, 27960, 30718, 32414, 33848, 37810, 47808})
# UDP destination ports of protocols that are one-way by design: the collector never answers
# (SNMP traps 162, syslog 514, NetFlow 2055 / 9995 / 9996, IPFIX 4739, sFlow 6343, statsd 8125,
# GELF 12201). An unanswered flow to one is marked ONE_WAY besides UNANSWERED, and
# unsolicited_srcs leaves it out while the destination's ONE_WAY packets in the window stay at
# or below ONE_WAY_VOLUME (150 hosts logging to one collector, wt-benign2 syslog.pcap, or 300
# during an incident, are not a spoofed flood; above it the one-sided volume is evidence
# anyway: a spoofed flood of 2,500 packets a second at 514). It stays an
# unanswered probe (a sweep on 514 is still a sweep) and counts in the one-sided volume
ONE_WAY_PORTS = frozenset({162, 514, 2055, 4739, 6343, 8125, 9995, 9996, 12201})
# UDP destination ports of encapsulations whose source port is a hash of the inner flow (for
# ECMP entropy) while both ends send to the same well-known port: VXLAN 4789 (RFC 7348), Linux's
# legacy VXLAN 8472, VXLAN-GPE 4790, Geneve 6081 (RFC 8926), MPLS-in-UDP 6635 (RFC 7510), GTP-U
# 2152 (3GPP TS 29.281: any source port). No outer 5-tuple has its reverse, so a tunnel's whole
# volume read as nobody answered (wt-benign3 vxlan.pcap: 30 Mbit/s of iperf3 through a VXLAN
# tunnel, source `packets` 3,373 a window, 90.72% dropped). A flow to one of them is answered
# while its destination sends to the same port of its source (answers.tunnel_key)
TUNNEL_PORTS = frozenset({2152, 4789, 4790, 6081, 6635, 8472})
# TCP services that password guessers target: FTP, SSH, telnet, SMTP submission (465, 587),
# POP3, IMAP, LDAP, SMB, RDP, VNC. Not SMTP relay (25): MTAs deliver to an MX over parallel
# connections (a list server or a large provider, 10 at once: wt-benign2 mail.pcap). Not the
# database ports (MS-SQL 1433, Oracle 1521, MySQL 3306, PostgreSQL 5432, Redis 6379, MongoDB
# 27017): applications open pools of tens of connections at once and many open one per request
# (wt-benign2 dbperreq / dbblackhole: 8-14 sessions a second from one app host, the rate of a
# guesser). Guessing on those ports and AUTH guessing on 25 go uncounted here (documented in
# docs/detection.md); their refused or unanswered SYNs stay half_open's and probe_tcp's
LOGIN_PORTS = frozenset({21, 22, 23, 110, 143, 389, 445, 465, 587, 636, 993, 995, 3389, 5900})
# UDP destination ports of traceroute's probes (33434 is IANA's "traceroute"; traceroute counts
# up from it, one port per probe, 30 hops x 3 probes by default). The target answers them with
# ICMP port unreachable, which no 5-tuple pairs with, so each run read as unanswered probes of
# 10+ distinct ports of one host (wt-benign2 traceroute-target.pcap: a UDP port scan's shape).
# They are one probe target per host (`probe_target`): a run is no port fan, while a sweep of a
# /24 on 33434 (host discovery: live hosts answer with ICMP) is still a group of hosts
TRACEROUTE_PORTS = range(33434, 33535)


def probe_target(key: tuple) -> tuple:
    """The probe target (dst, proto, dport) of flow `key` (a 5-tuple): traceroute's UDP ports of
    one host are one target (TRACEROUTE_PORTS.start)."""
    if key[4] == PROTO_UDP and key[3] in TRACEROUTE_PORTS:
        return key[1], PROTO_UDP, TRACEROUTE_PORTS.start
    return key[1], key[4], key[3]
