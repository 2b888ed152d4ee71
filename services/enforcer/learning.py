"""Learning mode, as pure logic: until ENFORCER_LEARN_UNTIL the model's rules are only written down.

A new site runs the whole pipeline for a while before the model may block anything (issue 18).
`LearningPeriod(until_ns)` says whether a moment lies inside the period: an absolute end time, so
a restarted enforcer (or a rebooted host) is in the same period with no state of its own. While it
is active the actuator (actuator.py) carries out no model decision (apply or refresh): it hands
the rule to a `WouldApplyLedger` instead, which keeps the rules the model *would have installed*
as the maps would have held them: one entry per rule key, from the first verdict to the rule's
expiry, extended by every later verdict for the key (as a refresh would). Manual rules and the
allowlist never pass through here: they are applied as always.

What the ledger measures, per rule: when it would have been installed, until when, how many
verdicts asked for it, and so for how many seconds its scope would have been dropped or limited
(`Closed.seconds`). What it does not: packets. The enforcer sees verdicts, not traffic; the
sampled packet events go to the scorer, so how many packets a rule would have dropped is not
known here (docs/operations.md, "Learning mode", says how to count them from the `packets`
topic). Nor does it apply the rate, per-source or model-rule caps (the policy only counts rules
it installed): it says what the model asked for, after the allowlist, local-address and
manual-rule refusals.

`retention_shortfall()` is the start-up check of the `packets` topic: its retention must cover
what is left of the period, or the site's traffic of the first days is gone when it ends.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from services.records.rules import Rule

S = 1_000_000_000


@dataclass(frozen=True)
class LearningPeriod:
    """Learning until `until_ns` (Unix epoch ns, exclusive); 0 = no learning period."""
    until_ns: int = 0

    def active(self, now_ns: int) -> bool:
        """True while `now_ns` is before the end of the period."""
        return now_ns < self.until_ns

    def remaining_s(self, now_ns: int) -> float:
        """Seconds left in the period at `now_ns` (0 once over)."""
        return max(0, self.until_ns - now_ns) / S


@dataclass(frozen=True)
class WouldApply:
    """A rule the model would have installed: `rule` (its expiry extended by later verdicts),
    `first_ns` the first verdict's time, `verdicts` how many verdicts asked for it, `reason`
    the first verdict's reason."""
    rule: Rule
    first_ns: int
    verdicts: int
    reason: str


@dataclass(frozen=True)
class Closed:
    """A would-apply entry that ended at `end_ns` (its expiry, the end of the period, or a
    bound reached: `why`); `seconds` is how long its rule would have been installed."""
    entry: WouldApply
    end_ns: int
    why: str

    @property
    def seconds(self) -> float:
        """From the first verdict to `end_ns`, in seconds (never negative)."""
        return max(0, self.end_ns - self.entry.first_ns) / S


class WouldApplyLedger:
    """The rules the model would have installed during the learning period, by rule key (at most
    `capacity`: beyond it the oldest entry is closed early, why="bound"). Pure: times are passed
    in (Unix epoch ns)."""

    def __init__(self, period: LearningPeriod, capacity: int = 50_000) -> None:
        self.period, self.capacity = period, capacity
        self._entries: "OrderedDict[str, WouldApply]" = OrderedDict()  # oldest first
        self._over = not period.until_ns  # the end of the period has been handled

    def holds_back(self, now_ns: int) -> bool:
        """Whether a model decision at `now_ns` is only written down (the period is active)."""
        return self.period.active(now_ns)

    def record(self, rule: Rule, reason: str, now_ns: int) -> tuple[WouldApply, bool, list[Closed]]:
        """Write down that a verdict at `now_ns` asked for `rule` (times set: created now, with
        its expiry). Returns the entry, whether it is new (not held for this key, or held but
        past its expiry: it would have been installed again) and the entries closed on the way
        (the expired one replaced, the oldest beyond the bound)."""
        closed: list[Closed] = []
        key = rule.key()
        old = self._entries.get(key)
        if old is not None and old.rule.expired(now_ns):
            closed.append(Closed(self._entries.pop(key), old.rule.expires_ns, "expired"))
            old = None
        if old is not None:
            expires = max(old.rule.expires_ns, rule.expires_ns)
            entry = replace(old, rule=replace(old.rule, expires_ns=expires),
                            verdicts=old.verdicts + 1)
            self._entries[key] = entry
            return entry, False, closed
        entry = WouldApply(rule, now_ns, 1, reason)
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            _, oldest = self._entries.popitem(last=False)
            closed.append(Closed(oldest, now_ns, "bound"))
        return entry, True, closed

    def expire(self, now_ns: int) -> tuple[list[Closed], bool]:
        """The entries closed at `now_ns`, and whether the period ended with this call (True
        once). Entries past their expiry close at it; when the period is over every entry left
        closes at its end (the rule would have stayed, but from then on the model's own rules
        are installed, and a verdict asking again installs it)."""
        closed = [Closed(e, e.rule.expires_ns, "expired") for e in self._entries.values()
                  if e.rule.expired(now_ns)]
        for c in closed:
            del self._entries[c.entry.rule.key()]
        ended = False
        if not self._over and not self.period.active(now_ns):
            self._over, ended = True, True
            closed += [Closed(e, self.period.until_ns, "period ended")
                       for e in self._entries.values()]
            self._entries.clear()
        return closed, ended

    def entries(self) -> list[WouldApply]:
        """The rules that would be installed now, oldest first."""
        return list(self._entries.values())


def retention_shortfall(topic: str, retention_ms: int, period: LearningPeriod,
                        now_ns: int) -> str:
    """"" when a topic keeping records `retention_ms` (-1: forever) holds what is published now
    until the end of `period`; otherwise one line naming the topic, its retention and the time
    left in the period."""
    left_s = period.remaining_s(now_ns)
    if retention_ms < 0 or left_s == 0 or retention_ms / 1000 >= left_s:
        return ""
    return (f"topic {topic} keeps records for retention.ms={retention_ms} ({retention_ms / 3.6e6:.1f}"
            f" h) but the learning period has {left_s / 3600:.1f} h left: the traffic of its start "
            f"will be gone when it ends (raise retention.ms to at least {int(left_s * 1000)})")
