"""A login session (evidence `login`) needs a completed handshake (services/detection/watch.py,
SourceWatch.count): an app pool retrying a database that is down (connection refused, or a
firewall dropping its SYNs) makes no login attempt, while password guessing, which must complete
its handshakes, is still counted, also when its ACK falls into the window after its SYN.
Found with the dbrefused / dbblackhole captures of wt-benign2 (/tmp/benign-new2/gen.sh)."""
from __future__ import annotations

import pytest

from services.detection import evidence as E
from services.detection.watch import SourceWatch
from services.offline.replay import replay
from services.records.packet import PROTO_TCP
from tests.support import synthetic_traffic as G
from tests.support.replay_checks import reasons_and_drops

pytestmark = pytest.mark.unit

T0 = 1_800_000_000 * 10**9 + 370_000_000
S = 10**9


@pytest.mark.parametrize("port", [5432, 993])
@pytest.mark.parametrize("refused", [True, False])
def test_a_pool_retrying_a_database_that_is_down_loses_nothing(detector, refused, port):
    """15 workers retry every ~1 s (refused) or ~3 s (blackholed) for 20 s, then reconnect one
    every 0.5 s: on c55e2f5 the app host was dropped for its retries as "sessions to one login
    service", 1,541 of 2,469 packets (refused) and 1,228 of 2,115 (blackholed) from 12.6 s /
    11.6 s on, reconnections and queries after the outage included
    (5432 is no login port since; 993, IMAPS, is: a webmail server's pool to its IMAP store)."""
    pk = G.db_pool_outage(T0, 45, refused=refused, port=port)
    assert sum(p.dport == port and p.tcp_flags == G.SYN for p in pk) >= 100  # the retries are there
    assert reasons_and_drops(pk, detector) == ([], 0)


def test_refused_and_blackholed_syns_are_no_login_sessions_but_a_completed_one_is():
    """SourceWatch.count directly: a SYN-only flow to 993 (settled: refused or unanswered)
    counts as half-open, not as a login; SYN + ACK in one flow counts as one."""
    w = SourceWatch(S, span=10)
    entries: dict = {}
    syn_only = ("10.0.0.70", "10.0.0.90", 40001, 993, PROTO_TCP)
    done = ("10.0.0.70", "10.0.0.90", 40002, 993, PROTO_TCP)
    SourceWatch.count(entries, syn_only, 2, G.SYN, 2, True)
    SourceWatch.count(entries, done, 5, G.SYN | G.ACK | G.PSH, 1, True)
    w.add_entries(T0, entries, {syn_only: {"flags": G.SYN}, done: {"flags": G.SYN | G.ACK}})
    half_open, _, _, login = w.measures(T0, ["10.0.0.70"])["10.0.0.70"]
    assert (half_open, login) == (1, 1)


def test_a_handshake_completed_in_the_next_window_is_a_login_session():
    """The SYN in window 0 (SYN-only there), its ACK in window 1: one login session in window 1;
    a SYN retransmitted in window 1 (no ACK) is none."""
    w = SourceWatch(S, span=10)
    slow = ("203.0.113.67", "10.0.0.22", 41000, 21, PROTO_TCP)
    dead = ("203.0.113.67", "10.0.0.22", 41001, 21, PROTO_TCP)
    e0: dict = {}
    SourceWatch.count(e0, slow, 1, G.SYN, 1, True)
    SourceWatch.count(e0, dead, 1, G.SYN, 1, True)
    w.add_entries(T0, e0, {slow: {"flags": G.SYN}, dead: {"flags": G.SYN}})
    assert w.measures(T0, [slow[0]])[slow[0]][3] == 0
    e1: dict = {}
    SourceWatch.count(e1, dead, 1, G.SYN, 1, True)
    w.add_entries(T0 + S, e1, {slow: {"flags": G.ACK | G.PSH}, dead: {"flags": G.SYN}})
    assert w.measures(T0 + S, [slow[0]])[slow[0]][3] == 1


@pytest.mark.parametrize("make", [lambda: G.ftp_guessing(T0, 30, per_s=4),
                                  lambda: G.slow_ack_guessing(T0, 30, per_s=4)],
                         ids=["ftp-4-per-s", "ack-in-the-next-window-4-per-s"])
def test_password_guessing_is_still_blocked_within_3_7_s(detector, make):
    """4 sessions a second, with the ACK in the SYN's window or always in the next one: the
    guesser gets its login rule 3.63 s after its first SYN (as on c55e2f5, where a SYN alone
    counted: its 8th session is in its 2nd window) and loses more than 85% of 30 s (87.5% and
    89.2% here)."""
    pk = make()
    res = replay(pk, detector)
    reasons = [sg.reason for w in res.windows for sg in w.suggestions]
    assert reasons and "sessions to one login service" in reasons[0], reasons[:2]
    assert (res.first_rule_ns - pk[0].ts_ns) / S <= 3.7
    assert res.dropped.mean() >= 0.85, res.dropped.mean()


def test_an_mta_delivering_over_parallel_connections_to_port_25_loses_nothing(detector):
    """mail.pcap (wt-benign2): 5 list servers each delivering 10 mails at once to the MX every
    ~15 s were dropped on c55e2f5 ("10 sessions to one login service (bound 8)", 600 s when
    repeated), 1,414 of 10,047 packets; this synthetic MTA (10 at once every 15 s, 60 s) lost
    479 of 960 there. Port 25 (relay) is no login service; submission is."""
    assert 25 not in E.LOGIN_PORTS and {465, 587} <= E.LOGIN_PORTS
    assert reasons_and_drops(G.mta_bursts(T0, 60), detector) == ([], 0)


def test_auth_guessing_on_submission_is_still_blocked(detector):
    pk = G.slow_ack_guessing(T0, 30, per_s=4, port=587)
    res = replay(pk, detector)
    reasons = [sg.reason for w in res.windows for sg in w.suggestions]
    assert reasons and "sessions to one login service" in reasons[0], reasons[:2]
    assert res.dropped.mean() >= 0.85, res.dropped.mean()
