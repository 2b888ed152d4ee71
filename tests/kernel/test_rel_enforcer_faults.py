"""Faults of the node side, with real processes and signals: the enforcer SIGKILLed and restarted
(verdicts published while it was down are applied once, nothing is applied twice), the XDP
program unloaded and loaded again, and a host "reboot" (every pin removed, program loaded again,
enforcer restarted after a crash): each time `xdpguard list --json` shows exactly the rule set
it showed before (counters aside), restored from the compacted `rules` topic. Bad records in
`verdicts` and `rules` are counted and dead-lettered with their reason while the enforcer keeps
running. A verdict delivered twice (same id) is applied once."""
import asyncio
import json
import os
import subprocess
import sys
import time

from aiokafka import AIOKafkaConsumer

from services.wire import codec

from services.dataplane import loader
from services.wire.kafka import client_options
from services.records.rules import Action, Rule, Scope
from services.wire.topics import DEADLETTER, RULES, VERDICTS, ensure_topics
from tests.support.enforcer_proc import start_enforcer, verdict
from tests.support.kafka_io import produce_raw, publish
from tests.support.services import ROOT, attach_victim, http_get, metric, wait_until


def xdpguard(pin_dir, *argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDPGUARD_PIN_DIR=pin_dir)
    return subprocess.run([sys.executable, "-m", "services.manager", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def rule_set(pin_dir) -> list[dict]:
    """`xdpguard list --json` without the counters (a reload resets them), in a fixed order."""
    r = xdpguard(pin_dir, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = [{k: v for k, v in row.items() if k not in ("hits", "bytes", "dropped")}
            for row in json.loads(r.stdout)]
    return sorted(rows, key=lambda row: json.dumps({**row, "expires": None}, sort_keys=True))


def same_rules(a: list[dict], b: list[dict]) -> bool:
    """True if two rule_set() lists hold the same rules with expiries within 50 ms: the maps
    hold a monotonic deadline and each read converts it to epoch time through a clock pair
    read at that moment (it moves by microseconds to a millisecond, so equal expiries can
    straddle any rounding edge). A rule given a fresh TTL instead would be seconds off."""
    def rest(row):
        return {k: v for k, v in row.items() if k != "expires"}
    return len(a) == len(b) and all(
        rest(x) == rest(y) and bool(x["expires"]) == bool(y["expires"])
        and abs((x["expires"] or 0) - (y["expires"] or 0)) < 50_000_000 for x, y in zip(a, b))


def metrics(port) -> str:
    return http_get(port, "/metrics")[1]


EVERY_SCOPE = [
    Rule(Scope.FLOW, Action.DROP, src="198.51.100.7", dst="192.0.2.1", sport=1234, dport=80, proto=6),
    Rule(Scope.FLOW, Action.DROP, src="2001:db8::7", dst="2001:db8::1", sport=5, dport=53, proto=17),
    Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24"),
    Rule(Scope.SRC_PREFIX, Action.DROP, src="2001:db8:66::/48"),
    Rule(Scope.DST_LIMIT, Action.LIMIT, dst="192.0.2.80", proto=6, dport=80, tcp_flags=2, rate_pps=100),
]
LATE = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.0.0/16")


def test_rel_rule_set_survives_enforcer_sigkill_program_reload_and_reboot(broker, netns_pair,
                                                                          pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    attach_victim(netns_pair, pin_dir)
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        # every verdict twice (same id, as a scorer re-scoring a restored window sends it)
        vs = [verdict(r, ttl_s=900) for r in EVERY_SCOPE]
        asyncio.run(publish(broker, vs + vs))
        wait_until(lambda: len(rule_set(pin_dir)) == len(EVERY_SCOPE), what="the verdicts' rules")
        wait_until(lambda: metric(metrics(port), "xdpguard_enforcer_verdicts_total") == 2 * len(EVERY_SCOPE),
                 what="the duplicates handled")
        # a rule is counted once its record is acknowledged, after it is in the maps
        wait_until(lambda: metric(metrics(port), "xdpguard_enforcer_rules_applied_total")
                 >= len(EVERY_SCOPE), what="the rules counted")
        assert metric(metrics(port), "xdpguard_enforcer_rules_applied_total") == len(EVERY_SCOPE)
        assert metric(metrics(port), "xdpguard_enforcer_rules_refreshed_total") == 0
        before = rule_set(pin_dir)

        # 1. SIGKILL; a verdict arrives while it is down; restart: that verdict is applied once,
        #    the others are not applied again (offsets were committed before acting).
        enf.proc.kill()
        enf.proc.wait()
        enf.stop()
        asyncio.run(publish(broker, [verdict(LATE, ttl_s=900)]))
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        wait_until(lambda: len(rule_set(pin_dir)) == len(EVERY_SCOPE) + 1, what="the late verdict's rule")
        wait_until(lambda: metric(metrics(port), "xdpguard_enforcer_rules_applied_total") >= 1,
                 what="the late rule counted")
        page = metrics(port)
        assert metric(page, "xdpguard_enforcer_rules_applied_total") == 1, page
        assert metric(page, "xdpguard_enforcer_rules_restored_total") == len(EVERY_SCOPE)
        before = rule_set(pin_dir)

        # 2. The program unloaded and loaded again while the enforcer is stopped (pins and maps
        #    are new, and empty), then the enforcer started: the same rules. (Reloaded under a
        #    running enforcer: test_rel_program_reloaded_under_a_running_enforcer_...)
        assert enf.stop() == 0, enf.log()
        xdpguard(pin_dir, "unload", "--all")
        attach_victim(netns_pair, pin_dir)
        assert rule_set(pin_dir) == []
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        assert same_rules(rule_set(pin_dir), before)
        assert metric(metrics(port), "xdpguard_enforcer_rules_applied_total") == 0

        # 3. "Reboot" after a crash: enforcer SIGKILLed, every pin removed, program loaded again.
        enf.proc.kill()
        enf.proc.wait()
        enf.stop()
        loader.unload_all(pin_dir)
        attach_victim(netns_pair, pin_dir)
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        assert same_rules(rule_set(pin_dir), before)
        assert netns_pair.ping() == 3  # and the host still talks (nothing over-blocked)
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def test_rel_program_reloaded_under_a_running_enforcer_gets_its_rules_back(broker, netns_pair,
                                                                           pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    attach_victim(netns_pair, pin_dir)
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        asyncio.run(publish(broker, [verdict(r, ttl_s=900) for r in EVERY_SCOPE]))
        wait_until(lambda: len(rule_set(pin_dir)) == len(EVERY_SCOPE), what="the verdicts' rules")
        before = rule_set(pin_dir)
        loader.unload_all(pin_dir)
        attach_victim(netns_pair, pin_dir)
        wait_until(lambda: same_rules(rule_set(pin_dir), before), timeout=6,
                   what="rules back in the new maps")
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def test_rel_manual_rules_survive_a_reboot(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        r = xdpguard(pin_dir, "add", "--src-prefix", "203.0.113.0/24")
        assert r.returncode == 0, r.stderr
        before = rule_set(pin_dir)
        assert enf.stop() == 0
        loader.unload_all(pin_dir)
        loader.load([], pin_dir=pin_dir)
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        assert same_rules(rule_set(pin_dir), before)
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


# --- bad records -----------------------------------------------------------------------------

BAD_VERDICTS = {
    "not msgpack": b"\xc1\xc1garbage",
    "truncated": None,  # filled below from a real verdict
    "wrong version": None,
    # the broker refuses records above message.max.bytes (1 MB) at produce time; just below it
    "oversized": b"\xc1" * 900_000,
    "not a map": b"\x93\x01\x02\x03",
    "bad rule": None,
}


def _bad_verdicts() -> dict[str, bytes]:
    import msgpack
    good = codec.encode_verdict(verdict(Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.0/24")))
    rec = msgpack.unpackb(good)
    out = dict(BAD_VERDICTS)
    out["truncated"] = good[:len(good) // 2]
    out["wrong version"] = msgpack.packb({**rec, "v": 99})
    out["bad rule"] = msgpack.packb({**rec, "rule": {**rec["rule"], "src": "300.1.2.3/8"}})
    return out


async def read_deadletters(common, timeout=20, want=1) -> list:
    topic = common.topic(DEADLETTER)
    consumer = AIOKafkaConsumer(topic, **client_options(common), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out.extend(codec.decode_deadletter(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def test_rel_bad_verdicts_are_dead_lettered_and_the_enforcer_keeps_going(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    enf = None
    bad = _bad_verdicts()
    good = Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.7.0/24")
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        asyncio.run(produce_raw(broker, broker.topic(VERDICTS), [(None, v) for v in bad.values()]))
        asyncio.run(publish(broker, [verdict(good)]))
        wait_until(lambda: any(r["src"] == good.src for r in rule_set(pin_dir)), what="the good verdict")
        dead = asyncio.run(read_deadletters(broker, want=len(bad)))
        assert len(dead) == len(bad) and {d.service for d in dead} == {"enforcer"}
        reasons = " | ".join(d.reason for d in dead)
        for word in ("not msgpack", "schema version", "expected a map", "invalid rule"):
            assert word in reasons, reasons
        big = [d for d in dead if d.raw_len == 900_000]
        assert big and len(big[0].raw) == codec.MAX_DEADLETTER_RAW  # kept, but cut
        assert all(d.source_topic == broker.topic(VERDICTS) for d in dead)
        assert metric(metrics(port), "xdpguard_enforcer_deadletters_total") == len(bad)
        assert enf.proc.poll() is None
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def _bad_rule_records(common) -> list[tuple[bytes, bytes]]:
    import msgpack
    rule = Rule(Scope.SRC_PREFIX, Action.DROP, src="192.0.2.0/24").with_times(time.time_ns(), 900)
    key, good = codec.encode_rule_record(rule, "applied", "node-test")
    rec = msgpack.unpackb(good)
    return [(b"src/10.0.0.0/8", b"\xc1junk"), (key, good[:10]),
            (key, msgpack.packb({**rec, "v": 7})),
            (b"src/10.1.0.0/16", good)]  # key does not match its rule


def test_rel_bad_rule_records_are_skipped_on_restore_and_good_ones_restored(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    good = Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24").with_times(time.time_ns(), 900)
    key, value = codec.encode_rule_record(good, "applied", "node-test")
    asyncio.run(produce_raw(broker, broker.topic(RULES), _bad_rule_records(broker) + [(key, value)]))
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        assert [r["src"] for r in rule_set(pin_dir)] == ["203.0.113.0/24"]
        assert "4 undecodable" in enf.log()
        assert metric(metrics(port), "xdpguard_enforcer_rules_restored_total") == 1
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def test_rel_bad_rule_records_go_to_deadletter(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir)
    asyncio.run(produce_raw(broker, broker.topic(RULES), _bad_rule_records(broker)))
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        dead = asyncio.run(read_deadletters(broker, timeout=5, want=4))
        assert len(dead) == 4 and all(d.source_topic == broker.topic(RULES) for d in dead)
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)
