"""Security promises end to end: real XDP on a veth in a namespace, the enforcer as a process, the
real broker. Verdicts against the allowlist (configured, or added to the kernel while running) or
this host's own addresses are refused and counted, and whatever was installed, allowlisted
traffic still flows (the kernel checks the allowlist first). A verdict flood is capped per
minute and per source; with model rules beyond the map's room the oldest model rules are evicted
(counted, tombstoned in `rules`) and the manual rule never is."""
import asyncio
import os
import subprocess
import sys

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.records.rules import Action, Rule, Scope
from services.wire.topics import ensure_topics
from services.enforcer.ruleslog import read_rules
from services.manager.netns import in_netns
from tests.support.enforcer_proc import start_enforcer, verdict
from tests.support.kafka_io import publish
from tests.support.services import ROOT, http_get, metric, wait_until

EXACT_MAP = 8


def xdpguard(pin_dir, *argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDPGUARD_PIN_DIR=pin_dir)
    return subprocess.run([sys.executable, "-m", "services.manager", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def refused(port, reason) -> float:
    page = http_get(port, "/metrics")[1]
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
               if line.startswith("xdpguard_enforcer_rules_refused_total{") and f'reason="{reason}"' in line)


def ping_from(pair, src, count=3) -> int:
    out = pair.run(pair.a, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", "-I", src,
                   pair.ip_b, check=False).stdout
    for line in out.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def test_rel_allowlist_wins_and_a_verdict_flood_is_capped_and_bounded(broker, netns_pair, pin_dir,
                                                                     tmp_path):
    pair = netns_pair
    asyncio.run(ensure_topics(broker))
    with in_netns(pair.b):
        loader.load([pair.veth_b], mode="generic", pin_dir=pin_dir,
                    sizes=loader.Sizes(exact=EXACT_MAP, prefix=64, allow=64, limit=16, ring_pages=16))
    a2 = pair.ip_a.rsplit(".", 1)[0] + ".3"
    pair.run(pair.a, "ip", "addr", "add", f"{a2}/24", "dev", pair.veth_a)
    manual = xdpguard(pin_dir, "add", "--src", "192.0.2.50", "--dst", pair.ip_b, "--proto", "tcp",
                      "--dport", "22")
    assert manual.returncode == 0, manual.stderr
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path, ENFORCER_ALLOWLIST=f"{pair.ip_a}/32",
                                   ENFORCER_MAX_RULES_PER_MINUTE="20",
                                   ENFORCER_MAX_RULES_PER_SECOND="1000",
                                   ENFORCER_MAX_RULES_PER_SOURCE="3",
                                   ENFORCER_MAX_MODEL_RULES="12")
        # allowlisted after the enforcer started: only the kernel knows
        assert xdpguard(pin_dir, "allow", "add", f"{a2}/32").returncode == 0
        net24 = pair.ip_a.rsplit(".", 1)[0] + ".0/24"
        attacks = [
            Rule(Scope.SRC_PREFIX, Action.DROP, src=f"{pair.ip_a}/32"),
            Rule(Scope.FLOW, Action.DROP, src=pair.ip_a, dst=pair.ip_b, proto=1),
            Rule(Scope.SRC_PREFIX, Action.DROP, src=net24),
            Rule(Scope.SRC_PREFIX, Action.DROP, src="0.0.0.0/0"),
            Rule(Scope.SRC_PREFIX, Action.DROP, src="198.51.100.200/32"),       # a local address
            Rule(Scope.FLOW, Action.DROP, src="127.0.0.1", dst=pair.ip_b, proto=6),
        ]
        runtime_allowed = Rule(Scope.SRC_PREFIX, Action.DROP, src=f"{a2}/32")
        flood = [Rule(Scope.FLOW, Action.DROP, src=f"203.0.113.{i % 8}", dst=pair.ip_b,
                      sport=2000 + i, dport=80, proto=6) for i in range(60)]
        asyncio.run(publish(broker, [verdict(r) for r in attacks + [runtime_allowed] + flood]))
        wait_until(lambda: metric(http_get(port, "/metrics")[1],
                                "xdpguard_enforcer_verdicts_total") >= len(attacks) + 61,
                 what="every verdict handled")
        page = http_get(port, "/metrics")[1]
        assert refused(port, "allowlisted") >= 4 and refused(port, "local") >= 1, page
        # caps: at most 20 installs in the minute, at most 3 per source; both refusals counted
        applied = metric(page, "xdpguard_enforcer_rules_applied_total")
        assert applied <= 20 and refused(port, "rate") + refused(port, "per_source") >= 40, page
        # bounded: the exact map (8) holds the manual rule and the newest model rules only
        with Datapath.open(pin_dir) as dp:
            exact = [s.rule for s in dp.rules() if s.rule.scope is Scope.FLOW]
        assert len(exact) <= EXACT_MAP
        assert any(r.origin.value == "manual" and r.src == "192.0.2.50" for r in exact)
        evicted = metric(page, "xdpguard_enforcer_rules_evicted_total")
        model_exact = [r for r in exact if r.origin.value == "model"]
        assert evicted >= 1 and len(model_exact) == EXACT_MAP - 1, page
        assert metric(page, "xdpguard_enforcer_model_rules") <= 12
        topic, _ = asyncio.run(read_rules(broker))
        assert {k for k, rec in topic.items() if k.startswith("flow/")
                and rec.rule.origin.value == "model"} == {r.key() for r in model_exact}
        # the allowlist wins in the kernel, for both addresses, whatever was installed
        assert ping_from(pair, pair.ip_a) == 3
        assert ping_from(pair, a2) == 3
        assert enf.proc.poll() is None
        print(f"\nflood: applied {applied}, evicted {evicted}, refused rate "
              f"{refused(port, 'rate')} per_source {refused(port, 'per_source')}")
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)


def test_rel_verdict_for_a_prefix_allowlisted_at_runtime_is_refused(broker, pin_dir, tmp_path):
    asyncio.run(ensure_topics(broker))
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=16,
                                                         ring_pages=16))
    enf = None
    try:
        enf, port = start_enforcer(broker, pin_dir, tmp_path)
        assert xdpguard(pin_dir, "allow", "add", "198.18.9.0/24").returncode == 0
        asyncio.run(publish(broker, [verdict(Rule(Scope.SRC_PREFIX, Action.DROP, src="198.18.9.9/32"))]))
        wait_until(lambda: metric(http_get(port, "/metrics")[1], "xdpguard_enforcer_verdicts_total") >= 1,
                 what="the verdict handled")
        assert refused(port, "allowlisted") == 1
    finally:
        if enf is not None:
            enf.stop()
        loader.unload_all(pin_dir)
