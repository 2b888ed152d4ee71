"""The compose files are valid (Debian's docker-compose parses them; no engine needed) and every
service they start runs a command and reads environment variables that exist in the code."""
import importlib.util
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
FILES = {"docker-compose.yml": {}, "docker-compose.node.yml": {
    "XDPGUARD_KAFKA_BOOTSTRAP": "central:9092", "XDPGUARD_NODE_ID": "node2"}}
OUR_PREFIXES = ("XDPGUARD_", "CAPTURE_", "SCORER_", "ENFORCER_")


def rendered(name: str) -> dict:
    caps.require(shutil.which("docker-compose") is not None, "docker-compose (Debian) is not installed")
    env = {**os.environ, **FILES[name]}
    res = subprocess.run(["docker-compose", "-f", str(COMPOSE / name), "--profile", "ui",
                          "--profile", "monitoring", "config"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def code_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))


@pytest.mark.parametrize("name", FILES)
def test_compose_file_is_valid(name):
    assert rendered(name)["services"]


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
