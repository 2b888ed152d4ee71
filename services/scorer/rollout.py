"""Which model scores which window, and how a shadow model compares. Pure: no Kafka, no faust.

A worker keeps a `ModelSchedule` built from the `models` topic (services/wire/modelrec.py):
the model it was started with (SCORER_MODEL) from the beginning of time, then every active
record's model from its `from_ns` on, and at most one candidate scored in the shadow of the
active model for windows [from_ns, until_ns). The model of a window is a function of the
records alone, never of when a worker read them, so all workers switch at the same window
boundary, and a window restored on another worker after a rebalance gets the same model.

A record is applied only while no window at or after its `from_ns` has been scored yet
(`ModelSchedule.apply`'s `scored_upto`); stage 2 holds windows within SCORER_MODEL_LEAD_S of the
time the worker last read the topic to its end (`may_score`), and `xdpguard models` names a
boundary at least that far ahead, so a record reaches every worker before its first window closes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.wire.modelrec import ACTIVE, CANDIDATE, MAX_SAMPLE_RULES, ModelRecord, ShadowReport


class RolloutRefused(Exception):
    """A model record this worker cannot apply (the reason: one line)."""


def switch_boundary(now_ns: int, width_ns: int, lead_s: float) -> int:
    """The first window start (a multiple of `width_ns`) at least `lead_s` seconds after
    `now_ns`: where a record published now may switch models."""
    at = now_ns + int(lead_s * 1e9)
    return -(-at // width_ns) * width_ns


def may_score(window_ns: int, known_until_ns: int, lead_s: float) -> bool:
    """True when window `window_ns` starts before `known_until_ns` (the wall clock at which
    the worker last read the models topic to its end) + `lead_s`: any record it has not read
    yet names a later boundary."""
    return window_ns < known_until_ns + int(lead_s * 1e9)


@dataclass
class Shadow:
    """A candidate model scoring beside the active one for windows [from_ns, until_ns)."""
    detector: Any
    record: ModelRecord

    def covers(self, window_ns: int) -> bool:
        return self.record.from_ns <= window_ns < self.record.until_ns


@dataclass
class ModelSchedule:
    """The models of one worker: `base` (SCORER_MODEL) and the active records' models by
    `from_ns` (at most `keep` of them: windows older than the oldest kept switch are long
    scored); `shadow`: the candidate, if any; `records`: the latest record of each role."""
    base: Any
    width_ns: int
    keep: int = 4
    switches: list[tuple[int, Any]] = field(default_factory=list)  # (from_ns, detector), sorted
    shadow: Shadow | None = None
    records: dict[str, ModelRecord] = field(default_factory=dict)

    def for_window(self, window_ns: int) -> tuple[Any, Any | None]:
        """(the model that scores window `window_ns`, the shadow model scoring it too or None)."""
        det = self.base
        for start, d in self.switches:
            if start <= window_ns:
                det = d
        shadow = self.shadow.detector if self.shadow and self.shadow.covers(window_ns) else None
        return det, shadow

    @property
    def active(self) -> Any:
        """The model of the newest switch (what windows from now on get, once it is due)."""
        return self.switches[-1][1] if self.switches else self.base

    def check(self, rec: ModelRecord, scored_upto: int) -> None:
        """RolloutRefused when `rec` cannot be applied: another window width, or (for active
        and candidate records) a boundary at or before `scored_upto`, the newest window start
        this worker has scored (-1: none)."""
        if rec.width_ns != self.width_ns:
            raise RolloutRefused(f"{rec.role} record is for {rec.width_ns / 1e9:g} s windows, "
                                 f"this worker's are {self.width_ns / 1e9:g} s (SCORER_WINDOW_S)")
        if rec.role in (ACTIVE, CANDIDATE) and rec.from_ns <= scored_upto:
            raise RolloutRefused(f"{rec.role} record switches at window {rec.from_ns}, this worker "
                                 f"has scored up to window {scored_upto} already (publish again "
                                 "with a longer --lead)")

    def apply(self, rec: ModelRecord, detector: Any) -> None:
        """Apply a checked record with its loaded model (`detector`; for a record without a
        model, None: the base)."""
        self.records[rec.role] = rec
        det = self.base if detector is None else detector
        if rec.role == ACTIVE:
            self.switches = [s for s in self.switches if s[0] < rec.from_ns] + [(rec.from_ns, det)]
            self.switches = self.switches[-self.keep:]
        elif rec.role == CANDIDATE:
            self.shadow = Shadow(det, rec)

    def remove(self, role: str) -> None:
        """A tombstone: forget the role's record (the candidate's shadow ends)."""
        self.records.pop(role, None)
        if role == CANDIDATE:
            self.shadow = None


def rule_keys(verdicts) -> set[str]:
    """The keys of the drop/limit rules among `verdicts` (pass verdicts left out)."""
    return {v.rule.key() for v in verdicts if v.rule.action.value != "pass"}


def tally(report: ShadowReport, active_scores, active_threshold: float, shadow_scores,
          shadow_threshold: float, active_rules: set[str], shadow_rules: set[str]) -> None:
    """Add one window scored by both models to `report`: flows, agreement on anomalous-or-not,
    flows each flags, and the rules the shadow model would add or drop."""
    a = active_scores >= active_threshold
    s = shadow_scores >= shadow_threshold
    report.windows += 1
    report.flows += len(a)
    report.agree += int((a == s).sum())
    report.flagged_active += int(a.sum())
    report.flagged_shadow += int(s.sum())
    added, dropped = shadow_rules - active_rules, active_rules - shadow_rules
    report.rules_added += len(added)
    report.rules_dropped += len(dropped)
    report.added = sorted(set(report.added) | added)[:MAX_SAMPLE_RULES]
    report.dropped = sorted(set(report.dropped) | dropped)[:MAX_SAMPLE_RULES]
