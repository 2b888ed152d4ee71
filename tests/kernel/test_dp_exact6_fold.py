"""exact6's folded key (xdpguard.h, xg_flow6_fold): an IPv6 exact rule is keyed by its addresses
folded to 64 bits each, its value holds their hi halves and the program verifies a hit; a rule
whose folded key exact6 holds for another rule goes to exact6x (the whole 5-tuple), looked up
while it holds a rule. On the real kernel through BPF_PROG_TEST_RUN and the pinned maps."""
import ipaddress

from scapy.all import TCP, Ether, IPv6, raw

from services.dataplane.structs import fold6, unfold6
from services.records.rules import Rule
from tests.support.dp_env import XDP_DROP, XDP_PASS, Delta

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
DST = "2001:db8:9::9"
S1 = "2001:db8:1::1"


def colliding(src: str, hi_text: str) -> str:
    """An address whose first 8 bytes are hi_text's and whose fold is src's."""
    fold, _ = fold6(ipaddress.IPv6Address(src).packed)
    _, hi = fold6(ipaddress.IPv6Address(hi_text).packed)
    return str(ipaddress.IPv6Address(unfold6(fold, hi)))


S2 = colliding(S1, "2001:db8:2::")  # another rule's source, same fold
S3 = colliding(S1, "2001:db8:3::")  # no rule's source, same fold


def rule(src: str, action: str = "drop", dport: int = 80) -> Rule:
    return Rule("flow", action, src=src, dst=DST, sport=1234, dport=dport, proto=6)


# a rule of S3's on another port: S3's src_filter slot counts an exact rule, so its packets are
# looked up in exact6 (without it they would skip the lookup and never meet S1's folded key)
DECOY = rule(S3, dport=81)


def syn(src: str) -> bytes:
    return raw(ETH / IPv6(src=src, dst=DST) / TCP(sport=1234, dport=80, flags="S"))


def test_the_colliding_addresses_differ_and_fold_alike():
    folds = {fold6(ipaddress.IPv6Address(a).packed)[0] for a in (S1, S2, S3)}
    assert len({S1, S2, S3}) == 3 and len(folds) == 1


def test_a_hit_on_the_folded_key_of_another_address_is_no_match(env):
    env.dp.add_rule(rule(S1))
    env.dp.add_rule(DECOY)
    with Delta(env) as d:
        assert env.run(syn(S3)) == XDP_PASS
        assert env.run(syn(S1)) == XDP_DROP
    assert (d["unmatched"], d["drop_exact"]) == (1, 1)
    assert env.dp.counts()["n_exact6x"] == 0


def test_a_colliding_rule_goes_to_exact6x_and_both_match_and_count(env):
    env.dp.add_rule(rule(S1))
    env.dp.add_rule(rule(S2, "pass"))
    env.dp.add_rule(DECOY)
    assert env.dp.counts()["n_exact6"] == 2 and env.dp.counts()["n_exact6x"] == 1
    occ = env.dp.occupancy()
    assert occ["exact6"][0] == 2 and occ["exact6x"][0] == 1
    with Delta(env) as d:
        assert env.run(syn(S1)) == XDP_DROP
        assert env.run(syn(S2)) == XDP_PASS
        assert env.run(syn(S2)) == XDP_PASS
        assert env.run(syn(S3)) == XDP_PASS
    assert (d["drop_exact"], d["rule_pass"], d["unmatched"]) == (1, 2, 1)
    got = {rs.rule: rs.hits for rs in env.dp.rules()}
    assert got == {rule(S1): 1, rule(S2, "pass"): 2, DECOY: 0}


def test_a_replaced_collision_rule_stays_in_exact6x_with_its_counters(env):
    env.dp.add_rule(rule(S1))
    env.dp.add_rule(rule(S2))
    assert env.run(syn(S2)) == XDP_DROP
    env.dp.add_rule(rule(S2))  # a refresh: replaced where it is, not a second entry
    assert env.dp.counts()["n_exact6x"] == 1 and env.dp.occupancy()["exact6x"][0] == 1
    assert [(rs.rule.src, rs.hits) for rs in env.dp.rules() if rs.rule.src == S2] == [(S2, 1)]


def test_deleting_the_exact6_owner_leaves_the_collision_rule_matching(env):
    env.dp.add_rule(rule(S1))
    env.dp.add_rule(rule(S2))
    assert env.dp.delete_rule(rule(S1)) is True
    assert env.run(syn(S2)) == XDP_DROP  # exact6 misses, exact6x holds it
    assert env.run(syn(S1)) == XDP_PASS
    env.dp.add_rule(rule(S2))  # still found in exact6x, not written to the freed exact6 key
    assert env.dp.occupancy()["exact6"][0] == 0 and env.dp.counts()["n_exact6x"] == 1
    assert env.dp.delete_rule(rule(S2)) is True and env.dp.delete_rule(rule(S2)) is False
    assert env.dp.delete_rule(rule(S3)) is False
    assert env.run(syn(S2)) == XDP_PASS
    assert env.dp.counts()["n_exact6x"] == 0 and env.dp.rules() == []


def test_deleting_a_rule_that_only_collides_removes_nothing(env):
    env.dp.add_rule(rule(S1))
    assert env.dp.delete_rule(rule(S3)) is False
    assert [rs.rule for rs in env.dp.rules()] == [rule(S1)] and env.run(syn(S1)) == XDP_DROP


def test_recount_counts_exact6x(env):
    env.dp.add_rule(rule(S1))
    env.dp.add_rule(rule(S2))
    assert env.dp.recount()["n_exact6x"] == 1 and env.dp.counts()["n_exact6"] == 1


def test_origin_reads_the_rule_in_either_map(env):
    env.dp.add_rule(rule(S1))
    env.dp.add_rule(rule(S2))
    assert env.dp.origin(rule(S1)) is not None and env.dp.origin(rule(S2)) is not None
    assert env.dp.origin(rule(S3)) is None


def test_frees_room_knows_which_of_exact6_and_exact6x_a_rule_goes_to(env):
    """The enforcer evicts for a full map only a rule whose deletion frees room: an IPv6 exact
    rule may need exact6x (its fold taken), where an exact6 rule frees nothing, unless it is
    the one holding that fold."""
    env.dp.add_rule(rule(S1))  # exact6
    env.dp.add_rule(rule(S2))  # exact6x: S1 holds its fold
    elsewhere = rule("2001:db8:7::7", dport=90)
    env.dp.add_rule(elsewhere)  # exact6, another fold
    plain, collides = rule("2001:db8:7::8", dport=91), rule(S3)  # -> exact6, -> exact6x
    assert [env.dp.frees_room(v, plain) for v in (rule(S1), elsewhere, rule(S2))] \
        == [True, True, False]
    assert [env.dp.frees_room(v, collides) for v in (rule(S2), rule(S1), elsewhere)] \
        == [True, True, False]
