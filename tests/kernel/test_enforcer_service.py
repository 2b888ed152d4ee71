"""The enforcer as a real process against real pinned maps and the real broker: verdicts become
kernel rules (allowlisted and local targets refused), every rule is written to the compacted
`rules` topic, expired rules leave the maps and are tombstoned, a "reboot" (pins removed, program
loaded again, enforcer restarted) brings the rule set back exactly, and dry run touches nothing."""
import asyncio
import ipaddress
import time

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.dataplane.structs import host_slot
from services.records.rules import Action, Rule, Scope
from services.wire.topics import ensure_topics
from services.enforcer.ruleslog import read_rules
from tests.support.enforcer_proc import NODE, installed, start_enforcer, verdict
from tests.support.kafka_io import publish
from tests.support.services import http_get, metric, wait_until

def test_verdicts_become_rules_survive_a_reboot_and_expire(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    block = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24")
    flow = Rule(Scope.FLOW, Action.DROP, src="198.51.100.7", dst="192.0.2.1", sport=1234,
                dport=80, proto=6)
    short = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.9/32")
    refused = [Rule(Scope.SRC_PREFIX, Action.DROP, src="127.0.0.1/32"),
               Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.200/32"),
               Rule(Scope.SRC_PREFIX, Action.DROP, src="0.0.0.0/0")]
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        asyncio.run(publish(broker, [verdict(block), verdict(flow), verdict(short, ttl_s=2),
                                     verdict(flow, node="another-node", window=1)]
                            + [verdict(r) for r in refused]))
        wait_until(lambda: {block.key(), flow.key(), short.key()} <= set(installed(pin_dir)),
                 what="rules in the maps")
        rules = installed(pin_dir)
        assert rules[block.key()].expires_ns > time.time_ns() + 500 * 10**9  # the 10 min TTL
        assert not any(r.key() in rules for r in refused)
        # A rule is in the maps before its record is acknowledged and counted, and the refused
        # verdicts may come through a partition fetched later: wait for the counters.
        wait_until(lambda: metric(http_get(port, "/metrics")[1],
                                "xdpguard_enforcer_rules_refused_total") == 3, what="3 refused")
        wait_until(lambda: metric(http_get(port, "/metrics")[1],
                                "xdpguard_enforcer_rules_applied_total") >= 3, what="3 applied")
        page = http_get(port, "/metrics")[1]
        assert metric(page, "xdpguard_enforcer_rules_applied_total") == 3
        assert metric(page, "xdpguard_enforcer_rules_refused_total") == 3
        wait_until(lambda: short.key() not in installed(pin_dir), what="expiry of the 2 s rule")
        wait_until(lambda: metric(http_get(port, "/metrics")[1],
                                "xdpguard_enforcer_rules_expired_total") == 1, what="expired metric")
        topic, _ = asyncio.run(read_rules(broker, node=NODE))
        assert set(topic) == {block.key(), flow.key()}  # the expired one is tombstoned
        assert enf.stop() == 0, enf.log()

        # "Reboot": pins gone, program loaded again, enforcer restarted -> the same rule set.
        loader.unload_all(pin_dir)
        loader.load([], pin_dir=pin_dir)
        assert installed(pin_dir) == {}
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        after = installed(pin_dir)
        assert set(after) == {block.key(), flow.key()}
        # The maps hold a monotonic deadline; reading it back as wall time goes through a
        # clock pair read at that moment, which moves by well under a millisecond. A fresh
        # TTL instead of the restored one would be seconds later.
        assert abs(after[block.key()].expires_ns - rules[block.key()].expires_ns) < 50 * 10**6
        assert metric(http_get(port, "/metrics")[1], "xdpguard_enforcer_rules_restored_total") == 2
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def test_dry_run_logs_what_it_would_do_and_touches_nothing(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_DRY_RUN="1")
        rule = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24")
        asyncio.run(publish(broker, [verdict(rule)]))
        wait_until(lambda: "dry run: would apply" in enf.log(), what="dry-run log line")
        assert installed(pin_dir) == {}
        assert asyncio.run(read_rules(broker))[0] == {}
        assert metric(http_get(port, "/metrics")[1], "xdpguard_enforcer_dry_run_actions_total") == 1
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def sharing_host_slot(addr: str, start: str, n: int) -> list[str]:
    """The first n IPv4 addresses from `start` on whose inline host slot is `addr`'s."""
    want, ip, out = host_slot(addr), ipaddress.IPv4Address(start), []
    while len(out) < n:
        if host_slot(str(ip)) == want:
            out.append(str(ip))
        ip += 1
    return out


def test_a_verdict_flood_cannot_exhaust_the_maps_and_never_evicts_manual_rules(broker, pin_dir,
                                                                                tmp_path):
    """Host-rule map of 16 entries (src_host4, sized with the prefix maps: the /32 rules,
    manual and model alike), one manual rule, 40 model verdicts: the map never overflows
    silently; the oldest model rules make room (counted, logged), the manual rule stays; and the
    ENFORCER_MAX_MODEL_RULES bound evicts the same way before the map is full. Every address
    shares the manual rule's inline host slot (src_host_slot), so the manual rule sits there and
    every model rule in the hash, whose 16 entries are what fills."""
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(prefix=16, ring_pages=16))
    manual = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.1/32", origin="manual")
    with Datapath.open(pin_dir) as dp:
        dp.add_rule(manual)
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_MAX_MODEL_RULES="12",
                                   ENFORCER_MAX_RULES_PER_SECOND="1000")
        addrs = sharing_host_slot("198.18.0.1", "203.0.113.0", 50)
        flood = [Rule(Scope.SRC_PREFIX, Action.DROP, src=f"{a}/32") for a in addrs[:40]]
        asyncio.run(publish(broker, [verdict(r) for r in flood]))
        wait_until(lambda: metric(http_get(port, "/metrics")[1],
                                "xdpguard_enforcer_rules_applied_total") == 40, what="40 applied")
        rules = installed(pin_dir)
        assert manual.key() in rules
        model = sorted(k for k, r in rules.items() if r.origin.value == "model")
        applied = [line.split("applied drop ")[1].split()[0] for line in enf.log().splitlines()
                   if "applied drop " in line]
        assert model == sorted(applied[-12:])  # the 12 installed last stay (verdicts arrive
        # through 4 partitions, so install order is not publication order)
        page = http_get(port, "/metrics")[1]
        assert metric(page, "xdpguard_enforcer_rules_evicted_total") == 28
        assert metric(page, "xdpguard_enforcer_model_rules") == 12
        assert "evicted" in enf.log()
        # Above the map's own size: the bound is 100, the map holds 16 (one manual rule).
        assert enf.stop() == 0, enf.log()
        enf, port = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_MAX_MODEL_RULES="100",
                                   ENFORCER_MAX_RULES_PER_SECOND="1000",
                                   ENFORCER_GROUP_ID="second")
        more = [Rule(Scope.SRC_PREFIX, Action.DROP, src=f"{a}/32") for a in addrs[40:]]
        asyncio.run(publish(broker, [verdict(r) for r in more]))
        wait_until(lambda: all(r.key() in installed(pin_dir) for r in more), what="new rules in")
        rules = installed(pin_dir)
        assert manual.key() in rules and len(rules) == 17  # the manual rule in its slot + 16
        assert metric(http_get(port, "/metrics")[1], "xdpguard_enforcer_rules_evicted_total") >= 7
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def test_a_second_enforcer_on_the_same_pins_is_refused_and_deletes_nothing(broker, pin_dir,
                                                                           tmp_path):
    """helper-72: a second enforcer on the pin directory with another topic prefix (a second
    shell without the export) took the first one's model rules for stale and deleted them all,
    and the first never noticed. Now it is refused in one line naming the first, before it
    touches the maps; a dry-run one (it writes nothing) still starts beside it."""
    import subprocess
    import sys

    from tests.support.services import common_env

    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    block = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24")
    enf = dry = None
    try:
        enf, _ = start_enforcer(broker, pin_dir, tmp_path)
        asyncio.run(publish(broker, [verdict(block)]))
        wait_until(lambda: block.key() in installed(pin_dir), what="the rule in the maps")
        env = common_env(broker, pin_dir, "node-b") | {"XDPGUARD_TOPIC_PREFIX": "other.",
                                                       "ENFORCER_METRICS_PORT": "0"}
        second = subprocess.run([sys.executable, "-m", "services.enforcer"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another enforcer already works on" in lines[0], lines
        assert f"pid {enf.proc.pid}" in lines[0], lines
        assert block.key() in installed(pin_dir)
        dry, _ = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_DRY_RUN="1",
                                XDPGUARD_NODE_ID="node-dry")
        assert block.key() in installed(pin_dir)
        assert dry.stop() == 0 and enf.stop() == 0
        enf = dry = None
        enf, port = start_enforcer(broker, pin_dir, tmp_path)  # released on a clean stop
        # with no program pinned a rule has nowhere to go: 503, as the capture's (helper-72)
        loader.unload_all(pin_dir)
        wait_until(lambda: http_get(port, "/healthz")[0] == 503, what="503 with nothing loaded")
        assert "no XDP program pinned" in http_get(port, "/healthz")[1]
        loader.load([], pin_dir=pin_dir)
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, what="200 once loaded again")
    finally:
        for svc in (dry, enf):
            if svc is not None:
                svc.stop()
        loader.unload_all(pin_dir)
