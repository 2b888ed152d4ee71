"""Host rules (/32, /128) in their inline slot (map src_host_slot, issue 16) or, when another
address holds the slot, in the src_host4 / src_host6 hash: each rule in exactly one place, both
places matched, listed and counted alike. Real kernel, BPF_PROG_TEST_RUN, the pinned maps."""
import ctypes
import ipaddress
import time

from scapy.all import IP, TCP, Ether, IPv6, raw

from services.dataplane.structs import XG_HOST_SLOTS, HostSlot, filter_slot, host_slot
from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta, sharing

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A = "10.5.0.1"


B = sharing(A)


def frame(src: str) -> bytes:
    if ":" in src:
        return raw(ETH / IPv6(src=src, dst="fd00::2") / TCP(sport=1234, dport=80, flags="S"))
    return raw(ETH / IP(src=src, dst="10.2.0.2") / TCP(sport=1234, dport=80, flags="S"))


def host(src: str, action: str = "drop") -> Rule:
    return Rule("src_prefix", action, src=src + ("/128" if ":" in src else "/32"))


def placed(env) -> tuple[int, int, int]:
    """(rules in inline slots, in src_host4, in src_host6)."""
    occ = env.dp.occupancy()
    return occ["src_host_slot"][0], occ["src_host4"][0], occ["src_host6"][0]


def in_slot(env, addr: str) -> HostSlot:
    return env.dp._read_sum("src_host_slot", ctypes.c_uint32(host_slot(addr)))


def test_the_program_looks_in_the_slot_user_space_writes(env):
    """structs.host_slot agrees with the program's index (both families, a v4-mapped source):
    each rule goes to its inline slot (not the hash, which the program would also find) and
    drops its address, so a Python slot other than the program's would pass the packet; the
    same rule moved to the next slot (written there directly) no longer drops it."""
    for rule_addr, src in (("10.5.0.1", "10.5.0.1"), ("203.0.113.9", "203.0.113.9"),
                           ("fd00::1", "fd00::1"), ("2001:db8::5", "2001:db8::5"),
                           ("10.9.0.7", "::ffff:10.9.0.7")):
        env.dp.add_rule(host(rule_addr))
        assert placed(env)[0] == 1 and in_slot(env, rule_addr).family in (4, 6), rule_addr
        assert env.run(frame(src)) == XDP_DROP, (rule_addr, src)
        idx, value = host_slot(rule_addr), in_slot(env, rule_addr)
        moved = (idx + 1) % XG_HOST_SLOTS
        with env.dp.locked():  # the slot's content one index further, directory bit with it
            env.dp._write("src_host_slot", ctypes.c_uint32(moved), value, "host slot")
            env.dp._write("src_host_slot", ctypes.c_uint32(idx), HostSlot(), "host slot")
            env.dp._slot_dir(moved, True)
            env.dp._slot_dir(idx, False)
        assert env.run(frame(src)) == XDP_PASS, (rule_addr, src)
        with env.dp.locked():
            env.dp._write("src_host_slot", ctypes.c_uint32(moved), HostSlot(), "host slot")
            env.dp._slot_dir(moved, False)
        env.dp._books(None, (host(rule_addr).src.split("/")[0], "host"), None, -1)
        assert placed(env) == (0, 0, 0)


def test_two_host_rules_sharing_a_slot_both_drop_the_second_from_the_hash(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    assert placed(env) == (1, 1, 0)
    assert bytes(in_slot(env, A).addr)[:4] == ipaddress.IPv4Address(A).packed
    assert env.dp.counts()["n_host4"] == 1  # the hash entry only: it gates the hash lookup
    with Delta(env) as d:
        assert [env.run(frame(A)), env.run(frame(B))] == [XDP_DROP, XDP_DROP]
        assert env.run(frame(sharing(B))) == XDP_PASS  # same slot, no rule
    assert d["drop_prefix"] == 2 and d["unmatched"] == 1


def test_deleting_the_slot_rule_leaves_the_hash_one_and_frees_the_slot(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    assert env.dp.delete_rule(host(A)) and not env.dp.delete_rule(host(A))
    assert placed(env) == (0, 1, 0) and in_slot(env, A).family == 0
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_PASS, XDP_DROP)
    env.dp.add_rule(host(A, "drop"))  # the slot is empty again: A goes there
    assert placed(env) == (1, 1, 0) and in_slot(env, A).family == 4
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_DROP)
    assert env.dp.delete_rule(host(B)) and env.dp.counts()["n_host4"] == 0
    assert (env.run(frame(A)), env.run(frame(B))) == (XDP_DROP, XDP_PASS)
    assert env.dp.delete_rule(host(A)) and placed(env) == (0, 0, 0)
    assert env.run(frame(A)) == XDP_PASS


def test_the_filter_slot_counts_host_rules_in_both_places(env):
    from services.dataplane import bpfsys
    from services.dataplane.structs import FilterSlot

    def hosts(addr):
        got = FilterSlot()
        bpfsys.lookup(env.dp._maps["src_filter"].fd, ctypes.c_uint32(filter_slot(addr)), got)
        return got.host

    before = hosts(A), hosts(B)
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    same = filter_slot(A) == filter_slot(B)
    assert (hosts(A), hosts(B)) == ((before[0] + 2,) * 2 if same else (before[0] + 1, before[1] + 1))
    env.dp.delete_rule(host(A))
    env.dp.delete_rule(host(B))
    assert (hosts(A), hosts(B)) == before


def test_a_rule_replaced_in_place_keeps_one_entry_wherever_it_is(env):
    now = time.time_ns()
    env.dp.add_rule(host(A).with_times(now, 60))
    env.dp.add_rule(host(B).with_times(now, 60))
    env.dp.add_rule(host(A).with_times(now, 120))  # TTL change, in its slot
    env.dp.delete_rule(host(A))
    env.dp.add_rule(host(B).with_times(now, 180))  # in the hash: stays there
    assert placed(env) == (0, 1, 0)
    env.dp.add_rule(host(A).with_times(now, 240))
    env.dp.add_rule(host(A).with_times(now, 300))
    assert placed(env) == (1, 1, 0)
    got = {rs.rule.src: rs.rule.expires_ns for rs in env.dp.rules()}
    assert set(got) == {A + "/32", B + "/32"}
    # expiry goes through the monotonic clock and back: within a millisecond
    assert abs(got[A + "/32"] - (now + 300_000_000_000)) < 1_000_000
    assert abs(got[B + "/32"] - (now + 180_000_000_000)) < 1_000_000


def test_rules_lists_slot_and_hash_rules_with_their_counters(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B, "pass"))
    for _ in range(2):
        env.run(frame(A))
    for _ in range(3):
        env.run(frame(B))
    got = {rs.rule.src: (rs.rule.action.value, rs.hits, rs.bytes, rs.dropped) for rs in env.dp.rules()}
    n = len(frame(A))
    assert got == {A + "/32": ("drop", 2, 2 * n, 2), B + "/32": ("pass", 3, 3 * n, 0)}
    env.dp.add_rule(host(A))  # replacing keeps the counters, as in the hashes
    env.dp.add_rule(host(B, "pass"))
    assert {rs.rule.src: rs.hits for rs in env.dp.rules()} == {A + "/32": 2, B + "/32": 3}


def test_an_exact_pass_still_beats_a_slot_host_drop(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(Rule("flow", "pass", src=A, dst="10.2.0.2", sport=1234, dport=80, proto=6))
    assert placed(env) == (1, 0, 0)
    with Delta(env) as d:
        assert env.run(frame(A)) == XDP_PASS
    assert d["rule_pass"] == 1 and d["drop_prefix"] == 0


def test_an_allowlisted_source_passes_despite_a_slot_host_drop(env):
    env.dp.add_rule(host(A))
    env.dp.allow_add("10.5.0.0/16")
    with Delta(env) as d:
        assert env.run(frame(A)) == XDP_PASS
    assert d["allowed"] == 1


def test_an_ipv6_host_rule_in_its_slot(env):
    env.dp.add_rule(host("fd00::5"))
    assert placed(env) == (1, 0, 0) and env.dp.counts()["n_host6"] == 0
    assert in_slot(env, "fd00::5").family == 6
    with Delta(env) as d:
        assert (env.run(frame("fd00::5")), env.run(frame("fd00::6"))) == (XDP_DROP, XDP_PASS)
    assert d["drop_prefix"] == 1
    [rs] = env.dp.rules()
    assert (rs.rule.src, rs.hits) == ("fd00::5/128", 1)
    assert env.dp.delete_rule(host("fd00::5")) and placed(env) == (0, 0, 0)
    assert env.run(frame("fd00::5")) == XDP_PASS


def test_the_slot_compares_the_family_too(env):
    """10.0.0.1 and a00:1:: have the same first 4 bytes, and the same slot (the XOR of an IPv6
    source's words is its first word here): neither family's rule matches the other's source."""
    v6 = "a00:1::"
    assert host_slot("10.0.0.1") == host_slot(v6)
    env.dp.add_rule(host("10.0.0.1"))
    assert (env.run(frame("10.0.0.1")), env.run(frame(v6))) == (XDP_DROP, XDP_PASS)
    env.dp.add_rule(host(v6))  # the slot is taken by the IPv4 rule: the IPv6 one goes to its hash
    assert placed(env) == (1, 0, 1)
    env.dp.delete_rule(host("10.0.0.1"))
    env.dp.delete_rule(host(v6))
    env.dp.add_rule(host(v6))
    assert placed(env) == (1, 0, 0)
    assert (env.run(frame("10.0.0.1")), env.run(frame(v6))) == (XDP_PASS, XDP_DROP)


def test_a_v4_mapped_ipv6_source_meets_an_ipv4_slot_rule(env):
    env.dp.add_rule(host(A))
    assert placed(env) == (1, 0, 0)
    assert env.run(frame("::ffff:" + A)) == XDP_DROP


def test_an_expired_slot_rule_does_not_drop(env):
    now = time.time_ns()
    env.dp.add_rule(host(A).with_times(now - 2_000_000_000, 1))
    assert placed(env) == (1, 0, 0)
    with Delta(env) as d:
        assert env.run(frame(A)) == XDP_PASS
    assert d["unmatched"] == 1 and d["drop_prefix"] == 0


def test_an_expired_slot_rule_skips_the_prefixes_like_an_expired_hash_one(env):
    now = time.time_ns()
    env.dp.add_rule(Rule("src_prefix", "drop", src="10.5.0.0/16"))
    env.dp.add_rule(host(A, "pass").with_times(now - 2_000_000_000, 1))
    env.dp.add_rule(host(B, "pass").with_times(now - 2_000_000_000, 1))
    assert placed(env) == (1, 1, 0)
    with Delta(env) as d:
        assert (env.run(frame(A)), env.run(frame(B))) == (XDP_PASS, XDP_PASS)
    assert d["unmatched"] == 2 and d["drop_prefix"] == 0


def test_recount_counts_slot_rules_in_the_filter_and_hash_rules_in_the_config(env):
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))
    env.dp.add_rule(host("fd00::5"))
    got = env.dp.recount()
    assert (got["n_host4"], got["n_host6"]) == (1, 0)
    assert [env.run(frame(a)) for a in (A, B, "fd00::5")] == [XDP_DROP] * 3


def test_a_slot_rule_written_behind_datapaths_back_matches_after_recount(env):
    """recount() raises the src_filter slot of a rule found in an inline slot."""
    from services.dataplane import bpfsys
    from services.dataplane.structs import XG_ACT_DROP, Addr16, FilterSlot, RuleVal
    addr = "10.7.0.9"
    bpfsys.update(env.dp._maps["src_filter"].fd, ctypes.c_uint32(filter_slot(addr)), FilterSlot())
    raw16 = ipaddress.IPv4Address(addr).packed + bytes(12)
    env.dp._write("src_host_slot", ctypes.c_uint32(host_slot(addr)),
                  HostSlot(Addr16(*raw16), RuleVal(0, 0, 0, 0, XG_ACT_DROP, 1), 4), "host slot")
    assert env.run(frame(addr)) == XDP_PASS  # its filter slot counts no host rule: no lookup
    env.dp.recount()
    assert env.run(frame(addr)) == XDP_DROP
    assert [rs.rule.src for rs in env.dp.rules()] == [addr + "/32"]


def test_the_slot_directory_marks_the_slots_in_use_and_only_those_are_read(env, monkeypatch):
    """config's n_host_slot and host_slot_used follow adds, replaces and deletes; occupancy()
    reads no slot and rules() only the slots the directory marks (issue 16: no scan of every
    slot's per-CPU copies per call)."""
    def used():
        cfg = env.dp._config()
        return cfg.n_host_slot, {w * 32 + b for w in range(len(cfg.host_slot_used))
                                 for b in range(32) if cfg.host_slot_used[w] >> b & 1}

    assert used() == (0, set())
    env.dp.add_rule(host(A))
    env.dp.add_rule(host(B))  # A's slot: in the hash
    env.dp.add_rule(host("fd00::5"))
    env.dp.add_rule(host(A))  # a replace in its slot: counted once
    assert used() == (2, {host_slot(A), host_slot("fd00::5")})
    reads = []
    real = env.dp._read_sum
    monkeypatch.setattr(env.dp, "_read_sum",
                        lambda name, key: (reads.append(name), real(name, key))[1])
    assert env.dp.occupancy()["src_host_slot"] == (2, 4096)
    assert reads.count("src_host_slot") == 0
    assert {rs.rule.src for rs in env.dp.rules()} == {A + "/32", B + "/32", "fd00::5/128"}
    assert reads.count("src_host_slot") == 2
    monkeypatch.undo()
    assert env.dp.delete_rule(host(A)) and used() == (1, {host_slot("fd00::5")})
    assert env.dp.delete_rule(host(B)) and used() == (1, {host_slot("fd00::5")})  # was in the hash
    assert env.dp.delete_rule(host("fd00::5")) and used() == (0, set())


def test_the_program_skips_the_slot_lookup_while_n_host_slot_is_0(env):
    """The skip is real: a rule in its slot, its src_filter slot counting it, does not match
    while config's n_host_slot is 0."""
    from services.dataplane import bpfsys
    env.dp.add_rule(host(A))
    assert env.run(frame(A)) == XDP_DROP
    cfg = env.dp._config()
    cfg.n_host_slot = 0
    bpfsys.update(env.dp._maps["config"].fd, ctypes.c_uint32(0), cfg)
    assert env.run(frame(A)) == XDP_PASS
    assert env.dp.recount()["n_host_slot"] == 1
    assert env.run(frame(A)) == XDP_DROP


def test_recount_rebuilds_the_slot_directory_from_every_slot(env):
    from services.dataplane import bpfsys
    env.dp.add_rule(host(A))
    env.dp.add_rule(host("fd00::5"))
    cfg = env.dp._config()
    cfg.n_host_slot = 0
    for w in range(len(cfg.host_slot_used)):
        cfg.host_slot_used[w] = 0
    bpfsys.update(env.dp._maps["config"].fd, ctypes.c_uint32(0), cfg)
    assert env.dp.rules() == [] and env.dp.occupancy()["src_host_slot"][0] == 0
    assert env.dp.recount()["n_host_slot"] == 2
    assert {rs.rule.src for rs in env.dp.rules()} == {A + "/32", "fd00::5/128"}


def sharing_n(addr: str, n: int) -> list[str]:
    """n IPv4 addresses after `addr` whose inline slot is `addr`'s."""
    out = [addr]
    while len(out) <= n:
        out.append(sharing(out[-1]))
    return out[1:]


def test_frees_room_names_the_rules_in_the_full_hash_and_in_the_rules_own_slot(env):
    X = "10.6.0.1"
    x1, x2, y = *sharing_n(X, 2), "10.9.9.9"
    assert host_slot(y) != host_slot(X)
    for a in (y, X, x1):  # y, X in their slots, x1 in src_host4
        env.dp.add_rule(host(a))
    env.dp.add_rule(host("fd00::5"))  # its slot
    exact = Rule("flow", "drop", src=X, dst="10.2.0.2", sport=1, dport=2, proto=6)
    env.dp.add_rule(exact)
    new = host(x2)  # its slot holds X: it would go to src_host4
    assert [env.dp.frees_room(v, new) for v in (host(X), host(x1), host(y), host("fd00::5"), exact)] \
        == [True, True, False, False, False]
    other = Rule("flow", "drop", src=y, dst="10.2.0.2", sport=1, dport=2, proto=6)
    assert [env.dp.frees_room(v, other) for v in (exact, host(X), host(x1))] == [True, False, False]


def test_the_enforcer_evicts_for_a_full_host_hash_only_rules_that_free_room():
    """src_host4 of 4 entries, model rules in the order y (its own slot), X (slot s), x1-x4 (s
    taken: the hash, now full). A verdict for x5 (slot s) evicts X, the oldest rule that frees
    room (x5 takes its slot), never y, older but in a slot x5 cannot use; the next, x6, evicts
    x1 from the hash. Without the placement check the oldest model rule, y, went first."""
    from services.dataplane import loader
    from services.records.rules import Origin
    from tests.support.dp_env import Env
    from tests.support.enforcer_parts import S, T0, Parts
    small = Env(loader.Sizes(exact=64, prefix=4, allow=64, limit=16, ring_pages=16))
    try:
        X = "10.6.0.1"
        xs, y = sharing_n(X, 6), "10.9.9.9"
        p = Parts(maps=small.dp)
        order = [y, X, *xs[:4]]
        for i, a in enumerate(order):
            assert p.verdict(host(a), now=T0 + i * S).name == "APPLY"
        occ = small.dp.occupancy()
        assert (occ["src_host_slot"][0], occ["src_host4"][0]) == (2, 4)
        p.verdict(host(xs[4]), now=T0 + 10 * S)
        have = {rs.rule.src for rs in small.dp.rules()}
        assert have == {a + "/32" for a in (y, *xs[:5])}
        assert p.metric("rules_evicted_total") == 1
        assert bytes(in_slot(small, X).addr)[:4] == ipaddress.IPv4Address(xs[4]).packed
        p.verdict(host(xs[5]), now=T0 + 11 * S)
        have = {rs.rule.src for rs in small.dp.rules()}
        assert have == {a + "/32" for a in (y, *xs[1:6])}
        assert p.metric("rules_evicted_total") == 2
        assert all(rs.rule.origin is Origin.MODEL for rs in small.dp.rules())
        assert [small.run(frame(a)) for a in (y, X, xs[0])] == [XDP_DROP, XDP_PASS, XDP_PASS]
    finally:
        small.close()
