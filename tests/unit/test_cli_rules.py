"""The CLI's rule flags: what becomes which Rule, and bad input rejected with one clear line
(no root, no kernel: the data path is never reached for bad input)."""
import argparse

import pytest

from services.common.errors import ConfigError
from services.records.rules import Action, Origin, Scope
from services.manager import cli
from services.manager.ruleargs import add_rule_flags, parse_proto, parse_tcp_flags, rule_from_args


def parse(*argv):
    p = argparse.ArgumentParser()
    add_rule_flags(p)
    return rule_from_args(p.parse_args(list(argv)), now_ns=1_000)


def test_seed_flags_make_a_manual_exact_rule():
    r = parse("--src", "10.0.0.1", "--dst", "10.0.0.2", "--sport", "1234", "--dport", "80",
              "--proto", "tcp", "--action", "pass")
    assert (r.scope, r.action, r.origin, r.proto, r.sport, r.dport) == \
        (Scope.FLOW, Action.PASS, Origin.MANUAL, 6, 1234, 80)
    assert r.expires_ns == 0 and r.created_ns == 1_000


def test_prefix_limit_and_ttl():
    r = parse("--src-prefix", "2001:db8::1/32", "--ttl", "60")
    assert (r.scope, r.src, r.expires_ns) == (Scope.SRC_PREFIX, "2001:db8::/32", 1_000 + 60 * 10**9)
    r = parse("--limit", "500", "--dst", "10.0.0.2", "--dport", "443", "--tcp-flags", "syn")
    assert (r.scope, r.rate_pps, r.proto, r.tcp_flags, r.dport) == (Scope.DST_LIMIT, 500, 6, 0x02, 443)


@pytest.mark.parametrize("text,num", [("tcp", 6), ("UDP", 17), ("icmp", 1), ("icmpv6", 58), ("47", 47)])
def test_protocol_names_and_numbers(text, num):
    assert parse_proto(text) == num


def test_tcp_flag_names_and_numbers():
    assert parse_tcp_flags("syn,ack") == 0x12 and parse_tcp_flags("0x04") == 0x04


@pytest.mark.parametrize("argv,message", [
    (["--src", "10.0.0.300", "--dst", "10.0.0.2", "--proto", "tcp"], "not an IPv4 or IPv6 address"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--dport", "65536"], "out of range"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--sport", "-1"], "out of range"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "sctpx"], "unknown protocol"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "300"], "out of range"),
    (["--src", "10.0.0.1", "--dst", "fd00::2", "--proto", "tcp"], "different IP versions"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2"], "needs --proto"),
    (["--src", "10.0.0.1", "--proto", "tcp"], "needs --src and --dst"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--action", "limit"], "pass or drop"),
    (["--src-prefix", "10.0.0.0/33"], "not an IPv4 or IPv6 prefix"),
    (["--limit", "0", "--dst", "10.0.0.2"], "at least 1"),
    (["--limit", "10"], "needs --dst"),
    (["--limit", "10", "--dst", "10.0.0.2", "--proto", "udp", "--tcp-flags", "syn"], "needs --proto tcp"),
    (["--limit", "10", "--dst", "10.0.0.2", "--tcp-flags", "bogus"], "unknown flag"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--ttl", "0"], "above 0"),
])
def test_bad_input_is_a_config_error_naming_the_problem(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(*argv)


@pytest.mark.parametrize("argv", [
    ["add", "--src", "1.2.3.4", "--dst", "5.6.7.8", "--proto", "tcp", "--dport", "99999"],
    ["add", "--src", "bad", "--dst", "5.6.7.8", "--proto", "tcp"],
    ["add", "--limit", "10", "--dst", "5.6.7.8", "--proto", "nope"],
    ["allow", "add", "10.0.0.0/99"],
    ["list"],                      # nothing loaded in the pin dir
    ["stats", "--json"],
    ["unload", "-i", "eth9"],
])
def test_cli_prints_one_line_and_exits_non_zero(argv, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDPGUARD_PIN_DIR", str(tmp_path / "no-pins"))
    assert cli.main(argv) == 1
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith(f"xdpguard {argv[0]}: error: ")
    assert "Traceback" not in out.err


def test_argparse_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["load", "--mode", "fast", "-i", "eth0"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
