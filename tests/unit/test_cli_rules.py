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
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--dport", "65536"], "out of range 0-65535"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--sport", "-1"], "out of range 0-65535"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "sctpx"], "unknown protocol"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "300"], "out of range 0-255"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp,udp"], "unknown protocol"),
    (["--limit", "0", "--dst", "10.0.0.2"], "out of range 1-4294967295"),
    (["--limit", "4294967296", "--dst", "10.0.0.2"], "out of range 1-4294967295"),
    (["--limit", "1e3", "--dst", "10.0.0.2"], "not a whole number"),
    (["--limit", "10", "--dst", "10.0.0.2", "--tcp-flags", "bogus"], "unknown TCP flag"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--ttl", "0"], "out of range 0.001-"),
    (["--src-prefix", "198.51.100.0/24", "--ttl", "1e10"], "out of range 0.001-315360000"),
    (["--src-prefix", "198.51.100.0/24", "--ttl", "inf"], "out of range"),
    (["--src-prefix", "198.51.100.0/24", "--ttl", "nan"], "out of range"),
])
def test_a_bad_number_is_refused_by_its_flag_type_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and message in err, err


@pytest.mark.parametrize("argv,message", [
    (["--src", "10.0.0.300", "--dst", "10.0.0.2", "--proto", "tcp"], "not an IPv4 or IPv6 address"),
    (["--src", "10.0.0.1", "--dst", "fd00::2", "--proto", "tcp"], "different IP versions"),
    (["--src", "::ffff:10.0.0.1", "--dst", "fd00::2", "--proto", "tcp"], "different IP versions"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2"], "needs --proto"),
    (["--src", "10.0.0.1", "--proto", "tcp"], "needs --src and --dst"),
    (["--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "tcp", "--action", "limit"], "pass or drop"),
    (["--src-prefix", "10.0.0.0/33"], "not an IPv4 or IPv6 prefix"),
    (["--src-prefix", "::/0"], "also covers every IPv4 address"),
    (["--limit", "10"], "needs --dst"),
    (["--limit", "10", "--dst", "10.0.0.2", "--proto", "udp", "--tcp-flags", "syn"], "needs --proto tcp"),
])
def test_flags_that_do_not_fit_are_a_config_error_naming_the_problem(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(*argv)


@pytest.mark.parametrize("argv,want", [
    (["--src", "::ffff:192.0.2.1", "--dst", "::ffff:192.0.2.2", "--sport", "5555", "--dport", "22",
      "--proto", "tcp"], ("192.0.2.1", "192.0.2.2")),
    (["--src", "2001:DB8:0::1", "--dst", "2001:db8::0:2", "--proto", "udp"], ("2001:db8::1", "2001:db8::2")),
    (["--src-prefix", "::ffff:192.0.2.0/120"], ("192.0.2.0/24", "")),
    (["--src-prefix", "::ffff:0:0/96"], ("0.0.0.0/0", "")),
    (["--limit", "5", "--dst", "::ffff:192.0.2.9"], ("", "192.0.2.9")),
])
def test_every_address_is_read_in_its_one_form(argv, want):
    """Issue 13 case 3: an IPv4-mapped spelling is the IPv4 address (the maps key both alike),
    so `add`, `list` and `del` agree whichever spelling the operator used."""
    r = parse(*argv)
    assert (r.src, r.dst) == want


@pytest.mark.parametrize("argv", [
    ["add", "--src", "bad", "--dst", "5.6.7.8", "--proto", "tcp"],
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


@pytest.mark.parametrize("argv", [
    ["load", "--mode", "fast", "-i", "eth0"],
    ["add", "--src", "1.2.3.4", "--dst", "5.6.7.8", "--proto", "tcp", "--dport", "99999"],
    ["add", "--limit", "10", "--dst", "5.6.7.8", "--proto", "nope"],
])
def test_argparse_errors_are_one_line_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["unload", "--all"]])
def test_status_and_unload_where_the_pin_dir_is_not_on_bpffs_say_so(argv, capsys, monkeypatch,
                                                                      tmp_path):
    """Under `ip netns exec NS` (a /sys of its own hides the host's bpffs) `status` said "not
    loaded" and `unload --all` "detached everywhere, pins removed" with exit 0 while the program
    stayed attached: like `load`, they refuse a pin dir that is not on a BPF filesystem."""
    monkeypatch.setenv("XDPGUARD_PIN_DIR", str(tmp_path / "pins"))
    assert cli.main(argv) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1, out
    assert "is not on a BPF filesystem" in out.err and "xdpguard load -i" not in out.err, out.err


@pytest.mark.parametrize("argv", [
    ["add", "--src", "2001:db8::1%eth0", "--dst", "2001:db8::2", "--proto", "tcp"],
    ["add", "--src", "2001:db8::1", "--dst", "fe80::2%1", "--proto", "tcp"],
    ["add", "--src-prefix", "2001:db8::1%eth0/128"],
    ["allow", "add", "fe80::%eth0/64"],
])
def test_an_ipv6_zone_index_is_refused_not_kept_as_a_second_spelling(argv, capsys, monkeypatch,
                                                                      tmp_path):
    """`2001:db8::1%eth0` was kept as is (ipaddress accepts zone indexes): a rule key
    `flow/6/2001:db8::1%eth0/...` beside `2001:db8::1`'s for the same map entry, and a printed
    prefix `2001:db8::1%eth0/128`. The maps hold no zone; one spelling per address (issue 13)."""
    from services.records.rules import canonical_address, canonical_network

    for bad in ("2001:db8::1%eth0", "fe80::2%1"):
        with pytest.raises(ValueError):
            canonical_address(bad)
    with pytest.raises(ValueError):
        canonical_network("2001:db8::1%eth0/128")
    monkeypatch.setenv("XDPGUARD_PIN_DIR", str(tmp_path / "no-pins"))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "%" in err and "no xdpguard program" not in err, err


@pytest.mark.parametrize("argv,refused", [
    (["--src-prefix", "0.0.0.0/0"], True),
    (["--src-prefix", "64.0.0.0/2"], True),
    (["--src-prefix", "2000::/3"], True),
    (["--src-prefix", "10.0.0.0/8"], False),        # as wide as it goes without --force
    (["--src-prefix", "2001:db8::/16"], False),
    (["--src-prefix", "0.0.0.0/0", "--action", "pass"], False),
    (["--src-prefix", "0.0.0.0/0", "--force"], False),
])
def test_dropping_a_prefix_wider_than_a_slash_8_needs_force(argv, refused, capsys, monkeypatch,
                                                            tmp_path):
    """A drop for 0.0.0.0/0 takes every IPv4 source off the host, the operator's own session
    included: `add` refuses it (one line) before it touches the maps unless --force."""
    monkeypatch.setenv("XDPGUARD_PIN_DIR", str(tmp_path / "no-pins"))
    assert cli.main(["add", *argv]) == 1
    err = capsys.readouterr().err
    assert ("add --force if you mean it" in err) == refused, err
    assert refused or "XDPGUARD_PIN_DIR" in err  # got as far as opening the maps
