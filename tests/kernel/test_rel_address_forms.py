"""One canonical form of every address at every entry point, in both directions (issue 13, case
3: `add --src ::ffff:192.0.2.1 --dst ::ffff:192.0.2.2 ...` was stored in the IPv6 exact map,
`list` showed it as IPv4, an IPv4 packet of that flow passed, and `del` with the same spelling
said "no such rule"). An IPv4-mapped spelling is the IPv4 address wherever an address enters
(CLI, verdicts, the `rules` topic, the allowlist, the maps) and leaves (list, events)."""
import json

import pytest
from scapy.all import IP, TCP, Ether, raw

from services.manager import cli
from services.common.errors import ConfigError
from services.records.rules import Rule
from services.records.verdict import Verdict
from services.wire import codec
from tests.support.dp_env import XDP_DROP, XDP_PASS

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
FLOW = raw(ETH / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=5555, dport=22, flags="S"))
MAPPED = ("--src", "::ffff:192.0.2.1", "--dst", "::ffff:192.0.2.2", "--sport", "5555", "--dport",
          "22", "--proto", "tcp")
PLAIN = ("--src", "192.0.2.1", "--dst", "192.0.2.2", "--sport", "5555", "--dport", "22",
         "--proto", "tcp")


@pytest.fixture
def xg(env, monkeypatch, capsys):
    """cli.main on the test program: (exit code, stdout, stderr) of one call."""
    monkeypatch.setenv("XDPGUARD_PIN_DIR", env.pin_dir)

    def run(*argv):
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.mark.parametrize("add,delete", [(MAPPED, MAPPED), (MAPPED, PLAIN), (PLAIN, MAPPED)],
                         ids=["mapped/mapped", "mapped/plain", "plain/mapped"])
def test_rel_an_ipv4_mapped_exact_rule_is_the_ipv4_rule(env, xg, add, delete):
    assert xg("add", *add, "--action", "drop")[0] == 0
    [row] = json.loads(xg("list", "--json")[1])
    assert (row["src"], row["dst"]) == ("192.0.2.1", "192.0.2.2")
    assert env.dp.occupancy()["exact4"][0] == 1 and env.dp.occupancy()["exact6"][0] == 0
    assert env.run(FLOW) == XDP_DROP
    code, out, _ = xg("del", *delete)
    assert code == 0 and out.startswith("deleted")
    assert env.run(FLOW) == XDP_PASS and json.loads(xg("list", "--json")[1]) == []


def test_rel_mapped_prefixes_and_allowlist_entries_are_their_ipv4_forms(env, xg):
    assert xg("add", "--src-prefix", "::ffff:192.0.2.0/120")[0] == 0
    assert [r["src"] for r in json.loads(xg("list", "--json")[1])] == ["192.0.2.0/24"]
    assert env.run(FLOW) == XDP_DROP
    assert xg("del", "--src-prefix", "192.0.2.0/24")[0] == 0
    assert xg("allow", "add", "::ffff:192.0.2.1/128")[0] == 0
    assert xg("allow", "list")[1].split() == ["192.0.2.1/32"]
    assert xg("allow", "del", "192.0.2.1/32")[0] == 0 and xg("allow", "list")[1] == ""


def test_rel_an_ipv6_prefix_that_would_match_every_ipv4_source_is_refused(env, xg):
    for argv in (("add", "--src-prefix", "::/0"), ("add", "--src-prefix", "::/80"),
                 ("allow", "add", "::/0")):
        code, _, err = xg(*argv)
        assert code == 1 and "covers every IPv4 address" in err, err
    assert env.dp.rules() == [] and env.dp.allowlist() == []
    with pytest.raises(ConfigError, match="covers every IPv4 address"):
        env.dp.allow_add("::/0")


def test_rel_a_verdict_in_mapped_form_installs_the_ipv4_rule(env):
    """The verdicts topic: the codec hands the enforcer the rule in its one form."""
    rule = Rule("flow", "drop", src="::ffff:192.0.2.1", dst="::ffff:192.0.2.2", sport=5555,
                dport=22, proto=6).with_times(1, None)
    data = codec.encode_verdict(Verdict(rule, 1.0, 0.5, "m", 0, 1))
    got = codec.decode_verdict(data).rule
    assert (got.src, got.dst, got.key()) == ("192.0.2.1", "192.0.2.2", "flow/6/192.0.2.1/5555/192.0.2.2/22")
    env.dp.add_rule(got)
    assert env.run(FLOW) == XDP_DROP
    assert env.dp.delete_rule(Rule("flow", "drop", src="192.0.2.1", dst="192.0.2.2", sport=5555,
                                   dport=22, proto=6))
