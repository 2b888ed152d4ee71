"""The compose files are valid (Debian's docker-compose parses them, and Compose v2 where the docker
client has it; no engine needed), every service they start runs a command and reads environment
variables that exist in the code, and the multi-host wiring is right: Kafka's loopback listener for
this host's services, an EXTERNAL one published and advertised for other hosts, metrics on a
management address, healthchecks and health-gated start order in both files."""
import importlib.util
import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.manager.cli import build_parser
from tests.support import caps

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
NODE_ENV = {"XDPGUARD_KAFKA_BOOTSTRAP": "central:9094", "XDPGUARD_NODE_ID": "node2",
            "XDPGUARD_METRICS_HOST": "10.0.0.5"}
FILES = {"docker-compose.yml": {}, "docker-compose.node.yml": NODE_ENV}
OUR_PREFIXES = ("XDPGUARD_", "CAPTURE_", "SCORER_", "ENFORCER_")


def compose(name: str, *args: str, env: dict | None = None,
            cmd: tuple = ("docker-compose",)) -> subprocess.CompletedProcess:
    """`compose -f FILE --profile ui --profile monitoring ARGS` with only `env` (and PATH) set."""
    caps.require(shutil.which(cmd[0]) is not None, f"{cmd[0]} is not installed")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(FILES[name] if env is None else env)}
    return subprocess.run([*cmd, "-f", str(COMPOSE / name), "--profile", "ui", "--profile",
                           "monitoring", *args], capture_output=True, text=True, env=env, timeout=60)


def rendered(name: str, **env: str) -> dict:
    res = compose(name, "config", env={**FILES[name], **env})
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def compose_v2() -> tuple | None:
    """The Compose v2 command: XDPGUARD_COMPOSE_V2 (a path to the standalone binary), else the
    docker client's plugin; None if neither."""
    if os.environ.get("XDPGUARD_COMPOSE_V2"):
        return (os.environ["XDPGUARD_COMPOSE_V2"],)
    have = shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    return ("docker", "compose") if have else None


def code_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))


@pytest.mark.parametrize("name", FILES)
def test_compose_file_is_valid(name):
    assert rendered(name)["services"]
    assert compose(name, "config", "-q").returncode == 0


@pytest.mark.parametrize("name", FILES)
def test_compose_v2_takes_the_same_files(name):
    v2 = compose_v2()
    if v2 is None:  # optional even in CI: Debian 12 ships only docker-compose 1.29
        pytest.skip("Compose v2 (docker compose) is not installed")
    res = compose(name, "config", "-q", cmd=v2)
    assert res.returncode == 0, res.stderr


def test_single_host_stack_has_the_documented_services():
    services = rendered("docker-compose.yml")["services"]
    assert {"kafka", "topics", "capture", "enforcer", "scorer"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "healthcheck" in services["kafka"]
    # scorers scale with --scale: no fixed container name, no published ports
    assert "container_name" not in services["scorer"] and "ports" not in services["scorer"]
    for node in ("capture", "enforcer"):
        assert services[node]["network_mode"] == "host"
        assert "privileged" not in services[node]
        assert set(services[node]["cap_add"]) <= {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN",
                                                   "SYS_RESOURCE"}


@pytest.mark.parametrize("name", FILES)
def test_every_command_and_variable_exists_in_the_code(name):
    text = code_text()
    verbs = build_parser()._subparsers._group_actions[0].choices
    for svc_name, svc in rendered(name)["services"].items():
        if "xdpguard" not in str(svc.get("image", "")):
            continue
        cmd = svc["command"]
        if cmd[:2] == ["python", "-m"]:
            # find, don't import: importing __main__ would start the service
            assert importlib.util.find_spec(f"{cmd[2]}.__main__") is not None, f"{svc_name}: {cmd}"
        else:
            assert cmd[0] == "xdpguard" and cmd[1] in verbs, f"{svc_name}: {cmd}"
        for var in svc.get("environment", {}):
            if var.startswith(OUR_PREFIXES):
                assert re.search(rf"[\"']{var}[\"']", text), f"{svc_name}: {var} is not read anywhere"


def test_grafana_dashboard_queries_metrics_the_services_export():
    import json

    dash = json.loads((COMPOSE / "grafana/provisioning/dashboards/xdpguard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {m for e in exprs for m in re.findall(r"\b(xdpguard_[a-z_]+)", e)}
    assert names
    text = code_text()
    for name in names:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        # metrics are declared whole or as a service prefix plus a name
        parts = re.match(r"(xdpguard_(?:capture|scorer|enforcer|xdp)_)(.*)", base)
        assert parts, name
        assert (f'"{base}"' in text or
                (f'"{parts.group(1)}"' in text and f'"{parts.group(2)}"' in text)), \
            f"{name} is not exported by any service"


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def _published(svc: dict) -> dict[int, tuple[str, str]]:
    """target port -> (host address, host port), from either `config` rendering of ports."""
    out = {}
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out[int(p["target"])] = (p.get("host_ip", "0.0.0.0"), str(p["published"]))
        else:
            host_ip, published, target = p.split("/")[0].rsplit(":", 2)
            out[int(target)] = (host_ip, published)
    return out


def test_this_hosts_services_use_the_loopback_listener_whatever_is_advertised():
    services = rendered("docker-compose.yml", XDPGUARD_KAFKA_ADVERTISED_HOST="kafka.example.net",
                        XDPGUARD_KAFKA_BIND_ADDRESS="10.0.0.5", XDPGUARD_KAFKA_HOST_PORT="19999")["services"]
    env = services["kafka"]["environment"]
    adv, listen = _listeners(env["KAFKA_ADVERTISED_LISTENERS"]), _listeners(env["KAFKA_LISTENERS"])
    assert adv["HOST"] == "127.0.0.1:19999" and adv["EXTERNAL"] == "kafka.example.net:9094"
    ports = _published(services["kafka"])
    # each advertised listener is published where it is advertised: HOST on loopback only
    assert ports[int(listen["HOST"].rsplit(":", 1)[1])] == ("127.0.0.1", "19999")
    assert ports[int(listen["EXTERNAL"].rsplit(":", 1)[1])] == ("10.0.0.5", "9094")
    for node in ("capture", "enforcer"):
        assert services[node]["environment"]["XDPGUARD_KAFKA_BOOTSTRAP"] == "127.0.0.1:19999"
    for inside in ("topics", "scorer"):
        assert services[inside]["environment"]["XDPGUARD_KAFKA_BOOTSTRAP"] == adv["INTERNAL"]


def test_kafka_stays_on_loopback_until_told_and_its_image_is_configurable():
    kafka = rendered("docker-compose.yml")["services"]["kafka"]
    assert {host for host, _ in _published(kafka).values()} == {"127.0.0.1"}
    assert kafka["image"].startswith("apache/kafka:")
    local = rendered("docker-compose.yml", XDPGUARD_KAFKA_IMAGE="xdpguard-kafka:abc")["services"]
    assert local["kafka"]["image"] == "xdpguard-kafka:abc"


def test_node_metrics_bind_a_management_address_never_all_addresses():
    single = rendered("docker-compose.yml")
    subnet = single["networks"]["default"]["ipam"]["config"][0]["subnet"]
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))  # docker's default gateway
    for svc in ("capture", "enforcer"):
        host = single["services"][svc]["environment"][f"{svc.upper()}_METRICS_HOST"]
        assert host == gateway, (svc, host, subnet)
    extra = [h.replace("=", ":") for h in single["services"]["prometheus"]["extra_hosts"]]  # v2: "="
    assert f"xdpguard-host:{gateway}" in extra
    node = rendered("docker-compose.node.yml")["services"]
    for svc in ("capture", "enforcer"):
        assert node[svc]["environment"][f"{svc.upper()}_METRICS_HOST"] == NODE_ENV["XDPGUARD_METRICS_HOST"]
    # no default is right on a node: the file refuses to render without one
    res = compose("docker-compose.node.yml", "config", "-q",
                  env={k: v for k, v in NODE_ENV.items() if k != "XDPGUARD_METRICS_HOST"})
    assert res.returncode != 0 and "XDPGUARD_METRICS_HOST" in res.stderr


@pytest.mark.parametrize("name", FILES)
def test_node_services_have_healthchecks_and_enforcer_waits_for_a_healthy_capture(name):
    services = rendered(name)["services"]
    for svc in ("capture", "enforcer"):
        test = " ".join(services[svc]["healthcheck"]["test"])
        # the check reads the address and port the service itself was given
        assert f"{svc.upper()}_METRICS_HOST" in test and f"{svc.upper()}_METRICS_PORT" in test
        assert services[svc]["environment"][f"{svc.upper()}_METRICS_PORT"]
    assert services["enforcer"]["depends_on"]["capture"]["condition"] == "service_healthy"
    # `down` leaves no XDP program or pins behind
    assert services["capture"]["environment"]["CAPTURE_UNLOAD_ON_EXIT"] == "true"


def test_the_local_broker_image_answers_the_healthcheck_and_reads_kafka_variables():
    kafka = rendered("docker-compose.yml")["services"]["kafka"]
    script = kafka["healthcheck"]["test"][1].split()[0]
    assert script.startswith("/opt/kafka/bin/")
    name = script.rsplit("/", 1)[1]
    assert (COMPOSE / "kafka" / name).is_file()
    assert re.search(rf"^COPY .*\b{re.escape(name)}\b.* /opt/kafka/bin/$",
                     (COMPOSE / "kafka/Dockerfile").read_text(), re.M)
    # the official image's naming rule, as compose/kafka/run applies it
    names = " ".join(kafka["environment"])
    out = subprocess.run(["bash", "-c", f"source <(sed -n '/^prop_name()/,/^}}/p' {COMPOSE}/kafka/run); "
                          f"for v in {names} KAFKA_A__B___C; do prop_name $v; echo; done"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert "listener.security.protocol.map" in out and "advertised.listeners" in out
    assert "log.dirs" in out and out[-1] == "a_b-c"


def test_a_node_takes_every_topic_setting_the_central_host_takes():
    """A node's capture and enforcer check the topics' shape against their own settings (capture
    refuses `packets` when its partition count differs from XDPGUARD_PACKETS_PARTITIONS): every
    XDPGUARD_ setting the central file hands its capture/enforcer must be settable on a node too,
    or a central host with XDPGUARD_PACKETS_PARTITIONS=16 has nodes that never publish."""
    central = rendered("docker-compose.yml", XDPGUARD_PACKETS_PARTITIONS="16")["services"]
    node = rendered("docker-compose.node.yml", XDPGUARD_PACKETS_PARTITIONS="16")["services"]
    for svc in ("capture", "enforcer"):
        shared = {k: v for k, v in central[svc]["environment"].items()
                  if k.startswith("XDPGUARD_") and k not in ("XDPGUARD_KAFKA_BOOTSTRAP", "XDPGUARD_NODE_ID")}
        assert shared["XDPGUARD_PACKETS_PARTITIONS"] == "16"
        missing = {k: v for k, v in shared.items() if node[svc]["environment"].get(k) != v}
        assert not missing, (svc, missing)
