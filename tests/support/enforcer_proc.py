"""The enforcer as a real process for kernel tests: start it against a test broker and pin
directory, build verdicts for it, and read back the rules it installed."""
from __future__ import annotations

import time

from services.dataplane.datapath import Datapath
from services.records.rules import Rule
from services.records.verdict import Verdict
from tests.support.services import Service, common_env, free_port, wait_healthy

NODE = "node-test"


def verdict(rule: Rule, ttl_s: float = 600, node: str = "*", window: int = 0) -> Verdict:
    """A model verdict for `rule` created now with a TTL of `ttl_s` seconds, for `node` ("*": all
    nodes), over the 1 s window starting at `window` ns (0: now)."""
    now = time.time_ns()
    return Verdict(rule=rule.with_times(now, ttl_s), score=-0.3, threshold=-0.09, model_id="m1",
                   window_start_ns=window or now, window_end_ns=(window or now) + 10**9, node=node,
                   reason="test")


def installed(pin_dir: str) -> dict[str, Rule]:
    """The rules in the pinned maps under `pin_dir`, by rule key."""
    with Datapath.open(pin_dir) as dp:
        return {s.rule.key(): s.rule for s in dp.rules()}


def start_enforcer(broker, pin_dir: str, tmp_path, **extra: str) -> tuple[Service, int]:
    """`python -m services.enforcer` as node NODE, reading verdicts from the beginning, sweeping
    every 200 ms and protecting 198.51.100.200; `extra` adds or overrides env vars. Returns the
    service once healthy and its metrics port; raises AssertionError if it exits or never gets
    healthy (with its log)."""
    port = free_port()
    env = common_env(broker, pin_dir, NODE) | {
        "ENFORCER_METRICS_PORT": str(port), "ENFORCER_FROM_BEGINNING": "1",
        "ENFORCER_SWEEP_INTERVAL_MS": "200", "ENFORCER_PROTECT_ADDRESSES": "198.51.100.200"} | extra
    svc = Service("services.enforcer", env, tmp_path)
    wait_healthy(port, svc)
    return svc, port
