"""`docker compose up` for real, with the images `scripts/images build` makes (tests run in file
order; each phase starts from the state the previous one left):

1. docker-compose.yml with XDPGUARD_INTERFACE = the host end of a veth whose other end is in an
   attacker namespace: an hping3 SYN flood is blocked (the rule is seen by the CLI in the capture
   container and on the host), a benign client at a second address keeps getting answers; Kafka's
   loopback listener advertises 127.0.0.1 and its EXTERNAL one the advertised address; metrics are
   served on the stack's bridge address, not on the protected interface.
2. --scale scorer=2: both workers own packets partitions, and a new flood is still blocked.
3. docker-compose.node.yml twice (two nodes, two veth pairs, own pins and node ids) against the
   same Kafka (its EXTERNAL listener, on a management address) and scorer group: each node blocks
   its own flood (and, source verdicts being for all nodes, holds the other's rule too); their
   metrics answer on the management address.
4. `down -v` leaves no container, network, volume, pin or XDP program.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from services.manager.demo_stack import free_port, stop_traffic, transmitted_received
from tests.support import caps
from tests.support.compose import (ROOT, HostLink, Project, create_host_link,
                                   destroy_host_link, rules, syn_flood, wait_rule_for)
from tests.support.netns import sh

PIN_ROOT = "/sys/fs/bpf/xdpguard-test-"
BRIDGE_ADDRESS = "172.31.94.1"  # docker-compose.yml's default XDPGUARD_METRICS_HOST

# images are built (cold: minutes) and stacks started inside these tests
pytestmark = pytest.mark.timeout(1200)


@dataclass
class Stack:
    pin_dir: str
    ports: dict[str, int]
    central: Project | None = None
    mgmt: HostLink | None = None  # the management network: nodes reach Kafka, metrics are served
    links: list[HostLink] = field(default_factory=list)
    nodes: list[Project] = field(default_factory=list)


def _net(second_octet: int) -> str:
    return f"10.{second_octet}.{secrets.randbelow(200) + 20}"


@pytest.fixture(scope="module")
def stack(images, compose_cmd):
    caps.require(caps.have_tool("hping3"), "hping3 is needed for the flood")
    caps.require(caps.have_tool("kcat"), "kcat is needed to read Kafka's metadata")
    tag = secrets.token_hex(3)
    s = Stack(f"{PIN_ROOT}{tag}",
              {k: free_port() for k in ("kafka_host", "kafka_ext", "capture", "enforcer")})
    try:
        s.links.append(create_host_link("xgc", _net(250)))
        s.mgmt = create_host_link("xgm", _net(249))
        s.central = Project(compose_cmd, f"xgtest{tag}", ["docker-compose.yml"], {
            **images, "XDPGUARD_INTERFACE": s.links[0].iface, "XDPGUARD_XDP_MODE": "generic",
            "XDPGUARD_PIN_DIR": s.pin_dir, "XDPGUARD_NODE_ID": "central",
            "XDPGUARD_KAFKA_HOST_PORT": str(s.ports["kafka_host"]),
            "XDPGUARD_KAFKA_EXTERNAL_PORT": str(s.ports["kafka_ext"]),
            "XDPGUARD_KAFKA_BIND_ADDRESS": s.mgmt.host_ip,
            "XDPGUARD_KAFKA_ADVERTISED_HOST": s.mgmt.host_ip,
            "CAPTURE_METRICS_PORT": str(s.ports["capture"]),
            "ENFORCER_METRICS_PORT": str(s.ports["enforcer"])})
        s.central.up()
        yield s
    finally:
        for project in [*s.nodes, s.central]:
            if project is not None:
                project.down()
        for link in [*s.links, s.mgmt]:
            if link is not None:
                destroy_host_link(link)
        sh("sh", "-c", f"rm -rf {s.pin_dir}*", check=False)


def kcat_brokers(bootstrap: str, ns: HostLink | None = None) -> str:
    """The broker addresses Kafka's metadata gives a client that bootstraps from `bootstrap`."""
    cmd = ["kcat", "-b", bootstrap, "-L", "-m", "10"]
    out = (ns.run(*cmd, check=False) if ns else sh(*cmd, check=False)).stdout
    return " ".join(line.split(" at ")[1].split()[0] for line in out.splitlines() if " at " in line)


def blocked(link: HostLink, pin_dir: str, src: str, timeout: float = 90) -> dict | None:
    """Flood from `src` until a rule in `pin_dir` drops it; the rule (None if it never came)."""
    flood = syn_flood(link, src)
    try:
        return wait_rule_for(pin_dir, src, timeout)
    finally:
        stop_traffic(flood)


def benign_pings(link: HostLink, count: int = 20) -> tuple[int, int]:
    out = link.run("ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1",
                   "-I", link.client_ip, link.host_ip, check=False).stdout
    return transmitted_received(out)


def listening(port: int) -> list[str]:
    """Local addresses with a TCP listener on `port` (host network namespace)."""
    out = sh("ss", "-Htln", f"sport = :{port}").stdout
    return [line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()]


def test_single_host_stack_blocks_a_flood_and_spares_a_benign_client(stack):
    c, link = stack.central, stack.links[0]
    c.wait_healthy("kafka", "capture", "enforcer", "scorer")
    # the host's own services use the loopback listener; other hosts get the advertised address
    assert kcat_brokers(f"127.0.0.1:{stack.ports['kafka_host']}") == f"127.0.0.1:{stack.ports['kafka_host']}"
    ext = f"{stack.mgmt.host_ip}:{stack.ports['kafka_ext']}"
    assert kcat_brokers(ext, stack.mgmt) == ext
    # metrics on the stack's bridge address only, never on the protected interface
    for port in (stack.ports["capture"], stack.ports["enforcer"]):
        assert listening(port) == [BRIDGE_ADDRESS]
        assert urllib.request.urlopen(f"http://{BRIDGE_ADDRESS}:{port}/healthz", timeout=5).status == 200
    assert link.run("python3", "-c", f"import socket; socket.create_connection(('{link.host_ip}', "
                    f"{stack.ports['capture']}), timeout=2)", check=False).returncode != 0

    ping = link.popen("ping", "-n", "-q", "-i", "0.2", "-W", "1", "-I", link.client_ip, link.host_ip)
    try:
        time.sleep(2)
        rule = blocked(link, stack.pin_dir, link.attacker_ip)
        assert rule is not None, f"the flood was not blocked within 90 s\n{c.logs()}"
    finally:
        sent, answered = transmitted_received(stop_traffic(ping))
    assert rule["origin"] == "model" and rule["action"] == "drop"
    # the same rule through the CLI inside the capture container
    inside = c.exec("capture", "xdpguard", "list", "--json")
    assert inside.returncode == 0, inside.stderr
    assert any(r["src"] == rule["src"] and r["dropped"] > 0 for r in json.loads(inside.stdout))
    assert sent > 0 and answered >= sent - 2, (sent, answered)  # the last may be in flight
    assert benign_pings(link) == (20, 20)


def scorer_members(stack: Stack) -> list[dict]:
    """Members of the scorer group (host CLI through the loopback listener) with their partitions."""
    res = subprocess.run([str(ROOT / ".venv/bin/xdpguard"), "groups", "--json"], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "XDPGUARD_KAFKA_BOOTSTRAP":
                                          f"127.0.0.1:{stack.ports['kafka_host']}",
                                          "XDPGUARD_TOPIC_PREFIX": "xdpguard."})
    groups = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return [m for g in groups if "scorer" in g["group"] for m in g["members"]]


def test_two_scorers_both_own_partitions_and_detection_still_works(stack):
    c, link = stack.central, stack.links[0]
    c.up("--scale", "scorer=2")
    c.wait_healthy("scorer", count=2)
    deadline = time.monotonic() + 90
    members = []
    while time.monotonic() < deadline:
        members = scorer_members(stack)
        owning = [m for m in members if any(".packets:" in p for p in m["partitions"])]
        if len(members) == 2 and len(owning) == 2:
            break
        time.sleep(2)
    else:
        pytest.fail(f"two scorers did not share the packets partitions: {members}")
    second = link.attacker_ip.rsplit(".", 1)[0] + ".77"
    link.add_address(second)
    rule = blocked(link, stack.pin_dir, second)
    assert rule is not None, f"no rule for a flood after scaling\n{c.logs()}"
    assert benign_pings(link) == (20, 20)


def test_two_nodes_from_the_node_file_each_block_their_own_flood(stack):
    c = stack.central
    c.run("rm", "--stop", "--force", "capture", "enforcer")
    assert not stack.links[0].xdp_attached(), "capture left XDP attached when it stopped"
    stack.links.append(create_host_link("xgd", _net(248)))
    for i, link in enumerate(stack.links):
        ports = {"CAPTURE_METRICS_PORT": str(free_port()), "ENFORCER_METRICS_PORT": str(free_port())}
        node = Project(c.cmd, f"{c.name}n{i}", ["docker-compose.node.yml"], {
            "XDPGUARD_IMAGE": c.env["XDPGUARD_IMAGE"],
            "XDPGUARD_KAFKA_BOOTSTRAP": f"{stack.mgmt.host_ip}:{stack.ports['kafka_ext']}",
            "XDPGUARD_NODE_ID": f"node{i}", "XDPGUARD_INTERFACE": link.iface,
            "XDPGUARD_XDP_MODE": "generic", "XDPGUARD_PIN_DIR": f"{stack.pin_dir}-node{i}",
            "XDPGUARD_METRICS_HOST": stack.mgmt.host_ip, **ports})
        stack.nodes.append(node)
        node.up()
    for node in stack.nodes:
        node.wait_healthy("capture", "enforcer")
        # the central Prometheus' side of the management network reaches the node's metrics
        for var in ("CAPTURE_METRICS_PORT", "ENFORCER_METRICS_PORT"):
            assert stack.mgmt.run("python3", "-c", "import urllib.request; urllib.request.urlopen("
                                  f"'http://{stack.mgmt.host_ip}:{node.env[var]}/metrics', timeout=5)",
                                  check=False).returncode == 0
    floods = [syn_flood(link, link.attacker_ip) for link in stack.links]
    try:
        found = [wait_rule_for(node.env["XDPGUARD_PIN_DIR"], link.attacker_ip, timeout=90)
                 for node, link in zip(stack.nodes, stack.links)]
    finally:
        for f in floods:
            stop_traffic(f)
    assert all(found), f"blocked per node: {found}\n" + "\n".join(n.logs() for n in stack.nodes)
    # one scorer group, one verdict stream: source verdicts are for all nodes (`*`, docs/enforcer.md),
    # so each node's enforcer also installs the rule for the flood the other node saw
    for node, other in zip(stack.nodes, reversed(stack.links)):
        assert wait_rule_for(node.env["XDPGUARD_PIN_DIR"], other.attacker_ip, 30, min_dropped=0), \
            rules(node.env["XDPGUARD_PIN_DIR"])
    for link in stack.links:
        assert benign_pings(link) == (20, 20)


def test_down_leaves_no_container_network_pin_or_xdp_program(stack):
    for project in [*stack.nodes, stack.central]:
        res = project.down()
        assert res.returncode == 0, res.stderr
        assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
    for link in stack.links:
        assert not link.xdp_attached(), sh("ip", "-d", "link", "show", "dev", link.iface).stdout
    pins = sh("sh", "-c", f"ls -d {stack.pin_dir}* 2>/dev/null", check=False).stdout.split()
    assert pins == []
    sock = socket.socket()
    try:
        assert sock.connect_ex(("127.0.0.1", stack.ports["kafka_host"])) != 0, "Kafka still published"
    finally:
        sock.close()
