"""Bad input to the CLI: every verb registered by services/manager/cli.py (walked from the parser,
so a new verb is covered without editing this file) given an unknown flag, and the map-editing
verbs given bad values: one line on stderr naming the error, a non-zero exit, no traceback, and
nothing changed in the live maps (`xdpguard list --json`, the allowlist, the sampling rate and
what is loaded/attached compared before and after)."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from services.dataplane import loader
from services.dataplane.datapath import Datapath
from services.records.rules import Action, Rule, Scope
from services.manager import cli
from tests.support import caps
from tests.support.cli_walk import verb_paths
from tests.support.services import ROOT


def run(capsys, *argv) -> tuple[int, str, str]:
    """cli.main in this process (the real parser and handlers; ~1 s faster per call than a
    subprocess), returning (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        if isinstance(exc.code, str):  # SystemExit("message") prints it and exits 1
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(capsys, pin_dir):
    code, out, err = run(capsys, "list", "--json")
    assert code == 0, err
    rows = sorted(json.loads(out), key=json.dumps)
    with Datapath.open(pin_dir) as dp:
        return rows, sorted(dp.allowlist()), dp.sample_rate(), loader.status(pin_dir)


@pytest.fixture(scope="module")
def loaded_once():
    """One program for the module (a BCC compile costs seconds)."""
    pin_dir = caps.fresh_pin_dir()
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=16,
                                                         ring_pages=16))
    with Datapath.open(pin_dir) as dp:
        dp.add_rule(Rule(Scope.FLOW, Action.DROP, src="10.1.0.1", dst="10.2.0.2", sport=1, dport=2,
                         proto=6, origin="manual"))
        dp.add_rule(Rule(Scope.SRC_PREFIX, Action.DROP, src="203.0.113.0/24", origin="manual"))
        dp.add_rule(Rule(Scope.DST_LIMIT, Action.LIMIT, dst="10.2.0.2", proto=6, dport=80,
                         tcp_flags=2, rate_pps=100, origin="manual"))
        dp.allow_add("192.0.2.0/24")
        dp.set_sample_rate(4)
    try:
        yield pin_dir
    finally:
        loader.unload_all(pin_dir)


@pytest.fixture
def loaded(loaded_once, monkeypatch):
    monkeypatch.setenv("XDPGUARD_PIN_DIR", loaded_once)
    monkeypatch.setenv("XDPGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing may reach Kafka
    return loaded_once


def one_error_line(code, err, path):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"{path}: exit 0"
    assert len(lines) == 1, f"{path}: stderr has {len(lines)} lines:\n{err}"
    assert "error" in lines[0] and "Traceback" not in err, f"{path}: {lines[0]}"


def test_rel_every_verb_refuses_an_unknown_flag_in_one_line(loaded, capsys):
    before = snapshot(capsys, loaded)
    paths = list(verb_paths())
    assert {("add",), ("del",), ("list",), ("load",), ("unload",), ("allow", "add")} <= set(paths)
    for path in paths:
        code, out, err = run(capsys, *path, "--no-such-flag")
        one_error_line(code, err, path)
        assert code == 2, f"{path}: usage errors exit 2, got {code}"
    code, _, err = run(capsys, "no-such-verb")
    one_error_line(code, err, "no-such-verb")
    assert snapshot(capsys, loaded) == before


BAD = [
    # seed-compatible add/del flags with bad values
    ("add", "--src", "10.1.0.999", "--dst", "10.2.0.2", "--proto", "tcp"),
    ("add", "--src", "10.1.0.1", "--dst", "fd00::1", "--proto", "tcp"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--sport", "65536", "--proto", "tcp"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--dport", "-1", "--proto", "tcp"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--dport", "http", "--proto", "tcp"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--proto", "tcpx"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--proto", "256"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--proto", "tcp", "--action", "nuke"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--proto", "tcp", "--ttl", "-5"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--proto", "tcp", "--ttl", "soon"),
    ("add", "--src", "10.1.0.1", "--dst", "10.2.0.2"),                    # no --proto
    ("add", "--src", "10.1.0.1"),                                          # no --dst
    ("add",),
    ("add", "--src-prefix", "10.0.0.0/33"),
    ("add", "--src-prefix", "banana"),
    ("add", "--src-prefix", "10.0.0.0/8", "--dport", "80"),
    ("add", "--src-prefix", "10.0.0.0/8", "--limit", "5"),
    ("add", "--limit", "0", "--dst", "10.2.0.2"),
    ("add", "--limit", "many", "--dst", "10.2.0.2"),
    ("add", "--limit", "10"),
    ("add", "--limit", "10", "--dst", "10.2.0.2", "--proto", "udp", "--tcp-flags", "syn"),
    ("add", "--limit", "10", "--dst", "10.2.0.2", "--tcp-flags", "bogus"),
    ("add", "--limit", "10", "--dst", "10.2.0.2", "--dport", "80"),        # port without proto
    ("add", "--limit", "10", "--dst", "10.2.0.2", "--src", "10.1.0.1"),
    ("del", "--src", "10.1.0.1", "--dst", "10.2.0.2", "--sport", "1", "--dport", "2"),  # no proto
    # issue 13, case 4: each was a 17-23 line traceback
    ("add", "--src-prefix", "198.51.100.0/24", "--ttl", "1e10"),
    ("add", "--src-prefix", "198.51.100.0/24", "--ttl", "inf"),
    ("add", "--limit", "4294967296", "--dst", "192.0.2.2"),
    ("load", "-i", "lo", "--exact-max", "4294967296"),
    # issue 13, case 3: an IPv6 prefix that would also match every IPv4 source in the maps
    ("add", "--src-prefix", "::/0"),
    ("allow", "add", "::/64"),
    ("del", "--src-prefix", "203.0.113.0/99"),
    ("allow", "add", "not-a-cidr"),
    ("allow", "add", "10.0.0.0/40"),
    ("allow", "del", "::/129"),
    ("monitor", "--sample", "-1"),
    ("monitor", "--count", "many"),
    ("top", "--interval", "0"),
    ("topics", "tail", "packets", "-n", "-1"),
    ("load", "-i", "xg-no-such0"),                                         # no such interface
    ("load", "-i", "lo", "--mode", "turbo"),
    ("load", "-i", "lo", "--ring-pages", "3"),
    ("load",),
    ("unload", "-i", "xg-no-such0"),
    ("unload",),
]


def test_rel_bad_values_give_one_error_line_and_change_nothing(loaded, capsys):
    before = snapshot(capsys, loaded)
    failures = []
    for argv in BAD:
        code, out, err = run(capsys, *argv)
        try:
            one_error_line(code, err, argv)
            assert snapshot(capsys, loaded) == before, f"{argv}: the maps changed"
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)


def test_rel_a_bad_setting_is_one_error_line(loaded, capsys, monkeypatch):
    before = snapshot(capsys, loaded)
    for var, value in (("XDPGUARD_KAFKA_SECURITY_PROTOCOL", "TELNET"),
                       ("XDPGUARD_PACKETS_PARTITIONS", "lots")):
        monkeypatch.setenv(var, value)
        for argv in (("list",), ("add", "--src-prefix", "198.51.100.0/24")):
            code, _, err = run(capsys, *argv)
            one_error_line(code, err, (var, *argv))
            assert var in err or "security protocol" in err, err
        monkeypatch.delenv(var)
    assert snapshot(capsys, loaded) == before


def test_rel_failed_load_on_a_missing_interface_leaves_nothing_loaded(pin_dir, monkeypatch):
    """`load -i <typo>` on a host where nothing is loaded yet must not leave a program pinned
    (the operator would think nothing happened)."""
    env = dict(os.environ, XDPGUARD_PIN_DIR=pin_dir)
    r = subprocess.run([sys.executable, "-m", "services.manager", "load", "-i", "xg-no-such0"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    try:
        one_error_line(r.returncode, r.stderr, "load -i xg-no-such0")
        assert not loader.is_loaded(pin_dir), "a failed load left the program pinned"
        assert not os.path.exists(pin_dir)
    finally:
        loader.unload_all(pin_dir)


def numeric_flags(parser=None, path=()):
    """(verb path, option, argparse's name for it) of every flag read as a number, whichever
    verb declares it: plain int/float types and the bounded types of
    services/manager/ruleargs.py (`.bounds`)."""
    parser = parser or cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from numeric_flags(sub, (*path, name))
        elif action.option_strings and (action.type in (int, float)
                                         or hasattr(action.type, "bounds")):
            yield path, action.option_strings[-1], "/".join(action.option_strings)


WILD_NUMBERS = ["-1", "-7.5", "nan", "NaN", "inf", "-inf", "1e10", "1e30", "1e400",
                str(2**32), str(2**64), "0x1p99", "ten"]


def test_rel_every_numeric_flag_refuses_wild_numbers_in_one_line(loaded, capsys):
    """Issue 13, case 4 (`add --ttl 1e10`, `--ttl inf`, `--limit 4294967296` gave 17-23 line
    tracebacks): every numeric flag of every verb, given negative, NaN, infinite and huge values,
    says so in one line naming the flag, exits 2 and changes nothing."""
    before = snapshot(capsys, loaded)
    flags = list(numeric_flags())
    assert {(("add",), "--ttl"), (("add",), "--limit"), (("add",), "--sport"),
            (("load",), "--exact-max"), (("monitor",), "--sample")} <= {f[:2] for f in flags}
    failures = []
    for path, flag, name in flags:
        for value in WILD_NUMBERS:
            code, _, err = run(capsys, *path, f"{flag}={value}")
            try:
                one_error_line(code, err, (*path, flag, value))
                assert code == 2 and f"argument {name}" in err, f"{path} {flag}={value}: {err}"
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0])
    assert snapshot(capsys, loaded) == before, "the maps changed"
    assert not failures, f"{len(failures)} of {len(flags) * len(WILD_NUMBERS)}:\n" + \
        "\n".join(failures[:40])
