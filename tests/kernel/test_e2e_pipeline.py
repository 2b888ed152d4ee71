"""End to end, all real: broker, XDP on a veth in a victim namespace, capture, one scorer worker
and the enforcer as processes. An hping3 SYN flood from the attacker namespace is blocked in the
kernel by the rule the pipeline writes, while a benign client (another address) keeps getting
answers; the services' metrics endpoints are scraped, and everything is torn down cleanly."""
import os
import time

from services.dataplane.datapath import Datapath
from services.records.rules import Origin, Scope
from services.manager.demo_cmd import _wait_blocked
from services.manager.demo_stack import Stack, metric, stop_traffic, transmitted_received
from tests.support import caps


def test_a_syn_flood_is_blocked_in_the_kernel_while_a_benign_client_keeps_working(kafka_bootstrap):
    caps.require(caps.have_tool("hping3"), "hping3 is needed for the flood")
    stack = Stack(keep_logs=True)
    ok = False
    try:
        stack.start()
        topo = stack.topo
        ping = stack.benign_ping()
        time.sleep(2)
        t_attack = time.time_ns()
        flood = stack.syn_flood(topo.attacker_ip, pps=2000)
        try:
            rule, seen_ns = _wait_blocked(stack, topo.attacker_ip, timeout=40)
            assert rule is not None, "the flood was not blocked within 40 s"
            time.sleep(1.5)
        finally:
            flood_out = stop_traffic(flood)
            ping_out = stop_traffic(ping)
        assert rule.rule.origin is Origin.MODEL
        assert rule.rule.scope in (Scope.SRC_PREFIX, Scope.FLOW, Scope.DST_LIMIT)
        sent = transmitted_received(flood_out)[0]
        # the XDP program's drop counters (monotonic) too: they were needed when a REFRESH
        # of the rule (a weak first answer escalated a window later) restarted its hit counter
        # at 0 (a replace keeps it now: test_dp_refresh_counters), and they count drops by any
        # other rule for the attacker; the benign client is asserted below never to be blocked
        with Datapath.open(stack.pin_dir) as dp:
            st = dp.stats()
        dropped = max(sum(s.hits for s in stack.rules_hitting(topo.attacker_ip)),
                      st["drop_exact"] + st["drop_prefix"] + st["drop_limit"])
        assert sent > 0 and dropped > 0.5 * sent * (time.time_ns() - seen_ns) / (
            time.time_ns() - t_attack), (sent, dropped)

        # The benign client still gets through, now that the attacker is blocked.
        after = stack.topo.run(topo.attacker, "ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W",
                               "1", "-I", topo.client_ip, topo.victim_ip, check=False).stdout
        assert transmitted_received(after) == (20, 20), \
            f"benign client blocked: {[s.rule.key() for s in stack.rules_hitting(topo.client_ip)]}"

        cap, enf = stack.metrics("capture"), stack.metrics("enforcer")
        scorer = stack.metrics("scorer")
        assert metric(cap, "xdpguard_capture_events_published_total") > 100
        assert metric(cap, "xdpguard_capture_produce_errors_total") == 0
        assert metric(enf, "xdpguard_enforcer_rules_applied_total") >= 1
        assert metric(enf, "xdpguard_enforcer_map_occupancy") >= 1
        assert metric(scorer, "xdpguard_scorer_records_total") > 0
        ok = True
    finally:
        stack.keep_logs = not ok
        tmp, topo, pins = stack.tmp, stack.topo, stack.pin_dir
        codes = stack.stop()
        if not ok and tmp is not None:
            print(f"service logs kept in {tmp}")
    assert codes == {"enforcer": 0, "scorer": 0, "capture": 0}
    assert not os.path.exists(pins)
    assert not os.path.exists(f"/var/run/netns/{topo.victim}")
