"""An in-memory compacted `rules` topic for unit tests of the enforcer's reconciler.

`FakeRulesTopic` satisfies services.enforcer.reconciler.RulesTopic. Records go through the real
codec (encoded and decoded, as the broker would hand them back); a tombstone forgets the key, as
compaction does. `log` lists ("applied" | "tombstone", rule key) in order. `deadletter` is a
stand-in for the service's dead-letter writer (the reconciler's `deadletter` argument): it keeps
what it is given in `deadletters`.
"""
from __future__ import annotations

from services.records.rules import Rule
from services.wire import codec


class FakeRulesTopic:
    topic = "xdpguard.rules"

    def __init__(self, node: str = "node-test", bad_records: list[tuple] | None = None) -> None:
        self.node = node
        self.records: dict[str, codec.RuleRecord] = {}
        self.bad_records = list(bad_records or [])  # (partition, offset, reason, key, value)
        self.log: list[tuple[str, str]] = []
        self.deadletters: list[tuple] = []  # (topic, partition, offset, reason, raw)

    async def write(self, rule: Rule, verdict_id: str = "") -> None:
        # written when it was applied (the enforcer's own records: `updated` = now at apply)
        key, value = codec.encode_rule_record(rule, "applied", self.node,
                                              updated_ns=rule.created_ns or None,
                                              verdict_id=verdict_id)
        self.records[rule.key()] = codec.decode_rule_record(key, value)
        self.log.append(("applied", rule.key()))

    async def remove(self, rule: Rule) -> None:
        self.records.pop(rule.key(), None)
        self.log.append(("tombstone", rule.key()))

    async def read(self) -> tuple[dict[str, codec.RuleRecord], list[tuple]]:
        return dict(self.records), list(self.bad_records)

    async def deadletter(self, topic: str, partition: int, offset: int, reason: str,
                         raw: bytes | None) -> None:
        self.deadletters.append((topic, partition, offset, reason, raw))
