"""Learning mode (issue 18): until ENFORCER_LEARN_UNTIL a model verdict writes nothing into the maps
or the rules topic, only the would-apply ledger, logged per rule with its reason and counted by
action and scope; manual rules and the allowlist work as always; once the period is over the same
verdict is applied by itself. Also the end-time setting and the packets-retention check."""
from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.checks import instant_ns
from services.common.config import load
from services.common.errors import ConfigError
from services.enforcer.learning import (LearningPeriod, WouldApplyLedger,
                                        retention_shortfall)
from services.enforcer.policy import Outcome
from services.enforcer.settings import EnforcerSettings
from services.records.rules import Action, Origin, Rule, Scope
from tests.support.enforcer_parts import S, T0, Parts, prefix

END = T0 + 3600 * S  # a learning period ending an hour after T0


def timed(rule: Rule, now: int, ttl_s: float = 600) -> Rule:
    return rule.with_times(now, ttl_s)


# -- the period and the ledger (pure) ----------------------------------------------------------

def test_the_period_is_active_until_its_end_and_zero_means_none():
    p = LearningPeriod(END)
    assert p.active(END - 1) and not p.active(END) and not p.active(END + S)
    assert p.remaining_s(END - 90 * S) == 90 and p.remaining_s(END + S) == 0
    assert not LearningPeriod(0).active(T0)


def test_a_repeated_verdict_extends_the_entry_and_counts_once_as_new():
    ledger = WouldApplyLedger(LearningPeriod(END))
    entry, new, closed = ledger.record(timed(prefix(1), T0), "syn flood", T0)
    assert new and closed == [] and entry.verdicts == 1
    entry, new, _ = ledger.record(timed(prefix(1), T0 + 100 * S), "again", T0 + 100 * S)
    assert not new and entry.verdicts == 2 and entry.reason == "syn flood"
    assert entry.rule.expires_ns == T0 + 700 * S and entry.first_ns == T0
    assert [e.rule.key() for e in ledger.entries()] == [prefix(1).key()]


def test_entries_close_at_their_expiry_and_a_later_verdict_is_new_again():
    ledger = WouldApplyLedger(LearningPeriod(END))
    ledger.record(timed(prefix(1), T0, ttl_s=60), "r", T0)
    assert ledger.expire(T0 + 59 * S) == ([], False)
    closed, ended = ledger.expire(T0 + 61 * S)
    assert not ended and [(c.why, c.seconds) for c in closed] == [("expired", 60)]
    assert ledger.entries() == []
    _, new, _ = ledger.record(timed(prefix(1), T0 + 70 * S, ttl_s=60), "r", T0 + 70 * S)
    assert new
    # an entry past its expiry but not swept yet closes at its expiry when asked for again
    _, new, closed = ledger.record(timed(prefix(1), T0 + 200 * S), "r", T0 + 200 * S)
    assert new and [(c.why, c.seconds) for c in closed] == [("expired", 60)]


def test_the_end_of_the_period_closes_every_entry_once():
    ledger = WouldApplyLedger(LearningPeriod(END))
    ledger.record(timed(prefix(1), END - 100 * S), "r", END - 100 * S)
    ledger.record(timed(prefix(2), END - 10 * S), "r", END - 10 * S)
    closed, ended = ledger.expire(END)
    assert ended and sorted(c.seconds for c in closed) == [10, 100]
    assert {c.why for c in closed} == {"period ended"} and ledger.entries() == []
    assert ledger.expire(END + S) == ([], False)
    assert not ledger.holds_back(END)


def test_the_ledger_is_bounded_oldest_closed_first():
    ledger = WouldApplyLedger(LearningPeriod(END), capacity=2)
    for i in range(3):
        _, _, closed = ledger.record(timed(prefix(i), T0 + i * S), "r", T0 + i * S)
    assert [c.entry.rule.key() for c in closed] == [prefix(0).key()] and closed[0].why == "bound"
    assert len(ledger.entries()) == 2


# -- the actuator over the fake data plane -----------------------------------------------------

def test_while_learning_a_model_rule_writes_nothing_and_is_logged_and_counted(caplog):
    p = Parts(learning=WouldApplyLedger(LearningPeriod(END)))
    flow = Rule(Scope.FLOW, Action.DROP, src="198.51.100.7", dst="192.0.2.1", sport=1, dport=80,
                proto=6)
    limit = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.1", proto=6, dport=80, rate_pps=100)
    with caplog.at_level(logging.INFO, "xdpguard.enforcer"):
        assert p.verdict(prefix(1), reason="syn flood to 192.0.2.1:80") is Outcome.APPLY
        p.verdict(prefix(1), now=T0 + 5 * S)  # the next window asks again
        p.verdict(flow)
        p.verdict(limit)
    assert p.maps.writes == [] and p.topic.log == [] and p.policy.installed() == []
    assert p.metric("learning_would_apply_total", action="drop", scope="src_prefix") == 1
    assert p.metric("learning_verdicts_total", action="drop", scope="src_prefix") == 2
    assert p.metric("learning_would_apply_total", action="drop", scope="flow") == 1
    assert p.metric("learning_would_apply_total", action="limit", scope="dst_limit") == 1
    assert p.metric("learning_would_apply_rules", action="drop", scope="src_prefix") == 1
    assert p.metric("learning_active") == 1 and p.metric("rules_applied_total") == 0
    lines = [r.getMessage() for r in caplog.records if "would apply" in r.getMessage()]
    assert len(lines) == 3
    assert prefix(1).key() in lines[0] and "syn flood to 192.0.2.1:80" in lines[0]


def test_while_learning_manual_rules_and_the_allowlist_still_apply():
    p = Parts(learning=WouldApplyLedger(LearningPeriod(END)),
              allowlist=("127.0.0.0/8", "192.0.2.0/24"))
    p.act.install_allowlist()
    assert "192.0.2.0/24" in p.maps.allowed
    manual = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.0/15", origin=Origin.MANUAL)
    p.maps.add_rule(manual)  # `xdpguard add`
    asyncio.run(p.reconciler.sync_manual(p.maps))
    assert p.topic.log == [("applied", manual.key())]
    # an allowlisted target is refused as always, not counted as something the model would do
    assert p.verdict(Rule(Scope.SRC_PREFIX, Action.DROP, src="192.0.2.7/32")) is Outcome.REFUSE
    assert p.metric("learning_verdicts_total", action="drop", scope="src_prefix") == 0
    # a verdict for the manual rule's key is refused as always
    assert p.verdict(manual) is Outcome.REFUSE
    assert list(p.maps.installed) == [manual.key()]


def test_after_the_period_the_same_verdict_is_applied_without_a_restart(caplog):
    p = Parts(learning=WouldApplyLedger(LearningPeriod(END)))
    p.verdict(prefix(1), now=END - 60 * S)
    assert p.maps.installed == {}
    with caplog.at_level(logging.INFO, "xdpguard.enforcer"):
        asyncio.run(p.act.expire(END))  # the sweep after the end
    assert "learning period ended" in caplog.text and "would have applied" in caplog.text
    assert p.metric("learning_would_apply_seconds_total", action="drop",
                    scope="src_prefix") == 60
    assert p.metric("learning_active") == 0
    assert p.metric("learning_would_apply_rules", action="drop", scope="src_prefix") == 0
    assert p.verdict(prefix(1), now=END + S) is Outcome.APPLY
    rule = p.maps.installed[prefix(1).key()]
    assert rule.origin is Origin.MODEL and rule.expires_ns == END + S + 600 * S
    assert p.topic.log == [("applied", prefix(1).key())]
    assert p.metric("rules_applied_total") == 1


def test_without_a_period_nothing_is_held_back():
    p = Parts()
    p.verdict(prefix(1))
    assert prefix(1).key() in p.maps.installed and p.metric("learning_active") == 0


# -- the setting and the retention check -------------------------------------------------------

def test_the_end_time_is_iso_8601_with_an_offset_or_unix_seconds():
    want = 1_796_630_400 * S
    assert instant_ns("2026-12-07T08:00:00Z") == want
    assert instant_ns("2026-12-07T09:00:00+01:00") == want
    assert instant_ns("1796630400") == want
    assert load(EnforcerSettings, {"ENFORCER_LEARN_UNTIL": "2026-12-07T08:00:00Z"}).learn_until
    for bad in ("2026-12-07T08:00:00", "next monday", "-1", "inf"):
        with pytest.raises(ConfigError, match="ENFORCER_LEARN_UNTIL"):
            load(EnforcerSettings, {"ENFORCER_LEARN_UNTIL": bad})


def test_a_packets_retention_shorter_than_the_period_left_is_one_line_naming_both():
    period = LearningPeriod(T0 + 7 * 24 * 3600 * S)  # a week left at T0
    problem = retention_shortfall("site.packets", 6 * 3600 * 1000, period, T0)
    assert "site.packets" in problem and "retention.ms=21600000" in problem
    assert "168.0 h left" in problem and "\n" not in problem
    assert retention_shortfall("site.packets", 8 * 24 * 3600 * 1000, period, T0) == ""
    assert retention_shortfall("site.packets", -1, period, T0) == ""  # kept forever
    assert retention_shortfall("site.packets", 1000, period, period.until_ns) == ""  # over
