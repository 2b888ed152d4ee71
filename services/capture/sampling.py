"""When to change the kernel's 1-in-N sampling rate (pure logic; the service applies it).

The capture raises N (doubling) when it cannot keep up: events were lost in the ring buffer or
the queue, or the backlog (queue + publisher buffer) passed the high-water mark. It lowers N
(halving) only after `calm_rounds` consecutive quiet rounds with the backlog under the low-water
mark, so the rate does not flap. Every event carries the N in force, so counts scale back.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingController:
    base: int = 1
    maximum: int = 1024
    high_water: float = 0.5    # fraction of the backlog bound
    low_water: float = 0.05
    calm_rounds: int = 6
    rate: int = 0
    _calm: int = 0

    def __post_init__(self) -> None:
        self.rate = self.rate or self.base

    def update(self, backlog: int, bound: int, lost: int) -> int | None:
        """Feed one round's backlog and new losses; returns the new rate, or None if unchanged."""
        fill = backlog / bound if bound else 0.0
        if lost > 0 or fill >= self.high_water:
            self._calm = 0
            if self.rate < self.maximum:
                self.rate = min(self.rate * 2, self.maximum)
                return self.rate
            return None
        if fill <= self.low_water:
            self._calm += 1
            if self._calm >= self.calm_rounds and self.rate > self.base:
                self._calm = 0
                self.rate = max(self.rate // 2, self.base)
                return self.rate
        else:
            self._calm = 0
        return None
