"""Bad input to every verb and to every service start gives one clear line, a non-zero exit and no
traceback (issue 14): each verb of the CLI (walked from its parser, so a new verb needs a case
here) is run as the operator runs it, a process of its own, with bad values, bad settings, files
that are empty, garbage or missing, and Kafka unreachable; each service is started with a bad
setting, a codec that does not exist, no program loaded, its metrics port taken or a bootstrap
that does not resolve. A process's stderr may also hold the INFO lines a service logs while
starting and, for analyze/flows, one report per bad line of the log; exactly one line is the
error, naming what is wrong."""
import os
import re
import socket
import subprocess
import sys
import uuid

import pytest

from services.dataplane import loader
from tests.support.cli_walk import verb_paths
from tests.support.services import ROOT

UNREACHABLE = {"XDPGUARD_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
NOT_LOADED = "/sys/fs/bpf/xdpguard-test-none"
REPORT = re.compile(r"^xdpguard \w+: .* line \d+: .* \(skipped\)$|more bad lines skipped$")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.json").write_text("")
    (d / "garbage.json").write_bytes(b"\x00\xffnot json\n{{{\n")
    (d / "truncated.json").write_text('{"src_ip": "10.0.0.1"}\n{"src_ip": "10.0.0.1", "dst')
    (d / "header.csv").write_text("file,label,kind\n")
    (d / "missing.csv").write_text("file,label,kind\nno-such.pcap,attack,syn_flood\n")
    return d


@pytest.fixture(scope="module")
def pins():
    """A program loaded (no interface) for the verbs that read the maps."""
    pin_dir = f"/sys/fs/bpf/xdpguard-test-{uuid.uuid4().hex[:8]}"
    loader.load([], pin_dir=pin_dir, sizes=loader.Sizes(exact=64, prefix=64, allow=64, limit=16,
                                                         ring_pages=16))
    try:
        yield pin_dir
    finally:
        loader.unload_all(pin_dir)


def cases(files, out_dir):
    """verb path -> [(argv, environment)]: at least one bad input per verb."""
    f = files
    return {
        ("load",): [(["load", "-i", "xg-no-such0"], {}), (["load", "-i", "lo", "--netns",
                                                          "xg-no-such-ns"], {})],
        ("unload",): [(["unload", "-i", "xg-no-such0"], {})],
        ("status",): [(["status"], {"XDPGUARD_PIN_DIR": "relative/pins"})],
        ("add",): [(["add", "--src-prefix", "banana"], {}),
                   (["add", "--src-prefix", "10.9.0.0/16"], {"XDPGUARD_PIN_DIR": NOT_LOADED})],
        ("del",): [(["del", "--src-prefix", "10.0.0.0/99"], {})],
        ("allow", "add"): [(["allow", "add", "not-a-cidr"], {})],
        ("allow", "del"): [(["allow", "del", "::/129"], {})],
        ("allow", "list"): [(["allow", "list"], {"XDPGUARD_PIN_DIR": NOT_LOADED})],
        ("list",): [(["list"], {"XDPGUARD_PIN_DIR": NOT_LOADED})],
        ("stats",): [(["stats"], {"XDPGUARD_PACKETS_PARTITIONS": "0"})],
        ("monitor",): [(["monitor", "--file", "/proc/no-such/log.json", "--duration", "1"], {}),
                       (["monitor", "--sample", "-1"], {}),
                       (["monitor", "--count", "0"], {})],
        ("topics", "create"): [(["topics", "create"], UNREACHABLE)],
        ("topics", "list"): [(["topics", "list"], UNREACHABLE)],
        ("topics", "describe"): [(["topics", "describe", "packets"], UNREACHABLE)],
        ("topics", "tail"): [(["topics", "tail", "packets"], UNREACHABLE),
                             (["topics", "tail", "packets", "-n", "-1"], {})],
        ("topics", "delete"): [(["topics", "delete", "--yes"], UNREACHABLE)],
        ("topics", "wait"): [(["topics", "wait", "--timeout", "1"], UNREACHABLE)],
        ("groups",): [(["groups"], UNREACHABLE)],
        ("top",): [(["top", "--once", "--interval", "0.2"], UNREACHABLE),
                   (["top", "--interval", "0"], {})],
        ("config",): [(["config"], {"CAPTURE_SAMPLE_RATE": "-1"})],
        ("demo",): [(["demo", "--pps", "0"], {})],
        ("analyze",): [(["analyze", "--file", str(f / "garbage.json"), "--dry-run",
                         "-o", str(out_dir / "c.json")], {}),
                       (["analyze", "--file", str(f / "empty.json"), "-o",
                         str(out_dir / "c.json")], {})],
        ("flows",): [(["flows", "--file", str(f / "truncated.json")], {}),
                     (["flows", "--file", str(f)], {})],
        ("train",): [(["train", "--pcap", "/no-such.pcap", "--out", str(out_dir / "m.joblib")],
                      {}),
                     (["train", "--seed-log", str(f / "garbage.json"), "--out",
                       str(out_dir / "m.joblib")], {})],
        ("learn",): [(["learn", "--pcap", "/no-such.pcap", "--out", str(out_dir / "s.joblib")], {}),
                     (["learn", "--kafka-from", "2026-11-30T00:00:00Z", "--kafka-to",
                       "2026-11-01T00:00:00Z", "--out", str(out_dir / "s.joblib")], {}),
                     (["learn", "--kafka-from", "2026-11-01T00:00:00Z", "--max-packets", "0",
                       "--out", str(out_dir / "s.joblib")], {})],
        ("models", "publish"): [(["models", "publish", "/no-such.joblib"], {})],
        ("models", "promote"): [(["models", "promote"], UNREACHABLE)],
        ("models", "rollback"): [(["models", "rollback"], UNREACHABLE)],
        ("models", "status"): [(["models", "status"], UNREACHABLE)],
        ("evaluate",): [(["evaluate", "--manifest", str(f / "header.csv"), "--out",
                          str(out_dir)], {}),
                        (["evaluate", "--manifest", str(f / "missing.csv"), "--out",
                          str(out_dir)], {})],
    }


def run(argv, env_extra, pin_dir, module="services.manager", timeout=90):
    env = {**os.environ, "XDPGUARD_PIN_DIR": pin_dir, "COLUMNS": "160", **env_extra}
    return subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def problem(res, what, expect: str = "") -> str:
    """"" when `res` failed with one clear error line (containing `expect`), else why not."""
    text = res.stdout + res.stderr
    if "Traceback" in text:
        return f"{what}: traceback:\n{text[-1500:]}"
    if res.returncode == 0:
        return f"{what}: exit 0"
    lines = [line for line in res.stderr.splitlines() if line.strip() and not REPORT.search(line)
             and not re.match(r"^\S+ \S+ \w+ INFO ", line)]
    if len(lines) != 1 or "error" not in lines[0]:
        return f"{what}: stderr is not one error line:\n{res.stderr[-1500:]}"
    if expect not in lines[0]:
        return f"{what}: {lines[0]!r} does not say {expect!r}"
    return ""


def test_every_verb_given_bad_input_says_so_in_one_line(pins, files, tmp_path):
    table = cases(files, tmp_path)
    assert set(table) == set(verb_paths()), "a verb without a bad-input case (or a stale case)"
    failures = []
    for path, runs in table.items():
        for argv, env in runs:
            failures.append(problem(run(argv, env, pins), " ".join(argv)))
    assert not any(failures), "\n".join(f for f in failures if f)


def free_port_taken():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_every_service_given_bad_input_says_so_in_one_line(pins, tmp_path):
    taken = free_port_taken()
    port = str(taken.getsockname()[1])
    free = {"CAPTURE_METRICS_PORT": "0", "ENFORCER_METRICS_PORT": "0"}
    service_cases = [
        ("services.capture", [], {"CAPTURE_SAMPLE_RATE": "-1"}, "CAPTURE_SAMPLE_RATE"),
        ("services.capture", [], {"XDPGUARD_PACKETS_PARTITIONS": "0"},
         "XDPGUARD_PACKETS_PARTITIONS"),
        ("services.capture", [], {"CAPTURE_COMPRESSION": "brotli"}, "CAPTURE_COMPRESSION"),
        ("services.capture", [], {"XDPGUARD_PIN_DIR": NOT_LOADED, **UNREACHABLE},
         "no xdpguard program pinned"),
        ("services.capture", [], {"CAPTURE_METRICS_PORT": port, **UNREACHABLE},
         f"cannot serve metrics on 127.0.0.1:{port}"),
        ("services.enforcer", [], {"XDPGUARD_KAFKA_BOOTSTRAP": "nohost:1"},
         "cannot reach Kafka at nohost:1"),
        ("services.enforcer", [], {"ENFORCER_TTL_S": "0"}, "ENFORCER_TTL_S"),
        ("services.enforcer", [], {"ENFORCER_ALLOWLIST": "banana"}, "ENFORCER_ALLOWLIST"),
        ("services.scorer", ["worker"], {"SCORER_WINDOW_S": "0"}, "SCORER_WINDOW_S"),
        ("services.scorer", ["worker"], {"SCORER_MODEL": "/no-such/model.joblib"},
         "SCORER_MODEL"),
        ("services.scorer", ["worker"], {"XDPGUARD_KAFKA_BOOTSTRAP": "nohost:1"},
         "cannot reach Kafka at nohost:1"),
    ]
    failures = []
    try:
        for module, argv, env, expect in service_cases:
            env = {**free, **env, "SCORER_DATADIR": str(tmp_path / "scorer-data")}
            res = run(argv, env, env.get("XDPGUARD_PIN_DIR", pins), module=module)
            failures.append(problem(res, f"{module} {env}", expect))
    finally:
        taken.close()
    assert not any(failures), "\n".join(f for f in failures if f)


def test_load_in_a_namespace_and_the_mode_of_an_attachment(netns_pair, pin_dir):
    """`ip netns exec NS xdpguard load` has no bpffs (it mounts a /sys of its own): one line
    naming the way that works, nothing pinned; that way (--netns) works; and `--mode native` on
    the generic attachment is refused naming the mode it has, which it keeps (item 12)."""
    ns, veth = netns_pair.b, netns_pair.veth_b
    env = {**os.environ, "XDPGUARD_PIN_DIR": pin_dir}
    try:
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "services.manager",
                              "load", "-i", veth], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert problem(res, "ip netns exec ... load", f"xdpguard load --netns {ns} -i") == ""
        assert not loader.is_loaded(pin_dir)

        res = run(["load", "--netns", ns, "-i", veth, "--mode", "generic"], {}, pin_dir)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == [f"attached to {veth} (generic)"]

        res = run(["load", "--netns", ns, "-i", veth, "--mode", "native"], {}, pin_dir)
        assert problem(res, "load --mode native", f"attached to {veth} in generic mode") == ""
        assert [(a["iface"], a["mode"]) for a in loader.status(pin_dir)["attached"]] == \
            [(veth, "generic")]
        assert netns_pair.ping(count=2) == 2
    finally:
        loader.unload_all(pin_dir)


def test_verbs_that_open_the_pins_inside_ip_netns_exec_name_the_hidden_bpffs(netns_pair, pin_dir):
    """Inside `ip netns exec` the host's bpffs is hidden: a verb that opens the pins says so and
    how to run it, not "no xdpguard program pinned; run xdpguard load" (which would load a
    second program); the program the host loaded is untouched."""
    env = {**os.environ, "XDPGUARD_PIN_DIR": pin_dir}
    res = run(["load", "--netns", netns_pair.b, "-i", netns_pair.veth_b, "--mode", "generic"], {},
              pin_dir)
    assert res.returncode == 0, res.stderr
    try:
        failures = []
        for argv in (["list"], ["stats"], ["monitor", "--count", "1"],
                     ["add", "--src-prefix", "192.0.2.0/24", "--action", "drop"],
                     ["allow", "add", "192.0.2.9"]):
            res = subprocess.run(["ip", "netns", "exec", netns_pair.b, sys.executable, "-m",
                                  "services.manager", *argv], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
            failures.append(problem(res, f"ip netns exec ... {argv[0]}", "not on a BPF filesystem"))
        assert not any(failures), "\n".join(f for f in failures if f)
        assert loader.is_loaded(pin_dir)
    finally:
        loader.unload_all(pin_dir)
