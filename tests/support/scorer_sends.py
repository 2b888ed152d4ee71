"""Kafka sends a unit test resolves by hand, and a scorer over its real (memory) tables whose
changelog writes are recorded: for the tests of what the scorer writes only after delivery
(tests/unit/test_scorer_delivery_order.py, test_scorer_settle_rebuild.py)."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.scorer_app import scorer_without_broker

W = 10**9
NOW = time.time_ns() // W * W - 8 * W


class HeldSends:
    """A topic's `send` whose deliveries the test resolves: `.sent` (key, value, partition),
    `.futures` the future each send returned, in order."""

    def __init__(self) -> None:
        self.sent, self.futures = [], []

    async def send(self, key=None, value=None, partition=None, **_):
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((key, value, partition))
        self.futures.append(fut)
        return fut

    def deliver(self) -> None:
        for f in self.futures:
            if not f.done():
                f.set_result(None)


@pytest.fixture
def wired(monkeypatch):
    """A Scorer over its real (memory) tables, changelog writes recorded in `.changelog`
    ((table, partition, key, value), in order)."""
    sc = scorer_without_broker()
    sc.changelog = []
    for table in (sc.topics.src_table, sc.topics.dst_table):
        async def send(key, value, partition, _name=table.name):
            sc.changelog.append((_name, partition, key, value))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        monkeypatch.setattr(table.changelog_topic, "send", send)
    return sc


async def settle_a_little() -> None:
    """Let every task that can run go on for a while (50 loop turns)."""
    for _ in range(50):
        await asyncio.sleep(0)
