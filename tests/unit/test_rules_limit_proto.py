"""A destination limit with a TCP-flag mask and no protocol is a TCP limit: the Rule says so
(proto 6), so its key is the one the rule read back from dst_limit has (limit_key stores such a
rule under proto 6). Two keys for one map entry made a restore delete the model rule as stale
and write it again, and one rule silently replace the other (review 17)."""
from services.dataplane.entries import entry_rule, limit_key
from services.records.rules import Action, Rule, Scope


def test_a_flag_mask_without_a_protocol_is_a_tcp_limit_with_one_key():
    bare = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="10.0.0.9", tcp_flags=0x02, rate_pps=50)
    tcp = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="10.0.0.9", proto=6, tcp_flags=0x02, rate_pps=50)
    assert bare.proto == 6 and bare.key() == tcp.key() == "limit/6/10.0.0.9/0/2"
    assert bytes(limit_key(bare)) == bytes(limit_key(tcp))
    key = limit_key(bare)  # the rule rules() reads back from that entry: the same key
    back = entry_rule("dst_limit", key, scope=Scope.DST_LIMIT, action=Action.LIMIT, dst="10.0.0.9",
                      dport=key.dport, proto=key.proto, tcp_flags=key.tcp_flags, rate_pps=50)
    assert back is not None and back.key() == bare.key()


def test_a_limit_without_flags_keeps_any_protocol():
    r = Rule(Scope.DST_LIMIT, Action.LIMIT, dst="10.0.0.9", rate_pps=50)
    assert r.proto == 0 and r.key() == "limit/0/10.0.0.9/0/0"
    assert r.covers("192.0.2.1", "10.0.0.9", proto=17)
