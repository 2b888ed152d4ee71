"""The by-hand recipe of docs/operations.md ("By hand, step by step") run as written (issue 14):
every line of the block after the `by-hand recipe` marker, in order, with bash, from the
checkout, on a veth pair in namespaces of the test's own, against the test broker under a fresh
topic prefix. `python -m` lines are services: started and left running, as the doc says; the
others must exit 0 (a health check is retried while the services come up, as an operator
would). Before `topics delete` the services get SIGTERM and must exit 0, as the doc says to stop
them first. Traffic (pings across the pair) makes capture publish, so `topics tail` has records."""
import os
import re
import signal
import subprocess
import time

from tests.support import caps
from tests.support.services import ROOT, free_port

RECIPE = re.compile(r"<!-- by-hand recipe:.*?-->\s*```sh\n(.*?)```", re.S)


def recipe_lines() -> list[str]:
    """The recipe's command lines, in order (docs/operations.md)."""
    m = RECIPE.search((ROOT / "docs" / "operations.md").read_text())
    assert m, "docs/operations.md has no by-hand recipe block"
    return [line.strip() for line in m.group(1).splitlines() if line.strip()]


def test_docs_by_hand_recipe_runs_as_written(netns_pair, pin_dir, broker, tmp_path):
    caps.require(caps.have_root() and caps.have_tool("curl"), "needs root and curl")
    env = {**os.environ, "NS": netns_pair.b, "IFACE": netns_pair.veth_b,
           "XDPGUARD_PIN_DIR": pin_dir, "XDPGUARD_TOPIC_PREFIX": broker.topic_prefix,
           "XDPGUARD_KAFKA_BOOTSTRAP": broker.kafka_bootstrap,
           "CAPTURE_METRICS_PORT": str(free_port()), "ENFORCER_METRICS_PORT": str(free_port()),
           "SCORER_DATADIR": str(tmp_path / "scorer-data")}
    exports: list[str] = []
    services: dict[str, subprocess.Popen] = {}
    ran: list[str] = []
    services_stopped = False

    def bash(line: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", "; ".join([*exports, line])], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    def stop_services() -> None:
        for name, proc in services.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in services.items():
            assert proc.wait(timeout=45) == 0, f"{name} did not stop cleanly on SIGTERM " \
                f"(exit {proc.returncode}): {(tmp_path / (name + '.log')).read_text()[-2000:]}"

    try:
        for line in recipe_lines():
            if line.startswith("export "):
                exports.append(line)
                continue
            if line.startswith("python -m "):
                name = line.split()[2]
                log = open(tmp_path / f"{name}.log", "w")
                services[name] = subprocess.Popen(["bash", "-c", "; ".join([*exports,
                                                                            "exec " + line])],
                                                  cwd=ROOT, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT)
                ran.append(line)
                continue
            if "topics delete" in line:
                stop_services()
                services_stopped = True
            if "topics tail" in line:
                netns_pair.ping(count=20, interval=0.1)  # traffic to publish
            deadline = time.monotonic() + (90 if line.startswith(("curl", "xdpguard topics tail"))
                                           else 0)
            while True:
                res = bash(line)
                if res.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(1)
            for name, proc in services.items():
                assert services_stopped or proc.poll() is None, f"{name} exited ({proc.returncode}) by `{line}`: " \
                    f"{(tmp_path / (name + '.log')).read_text()[-2000:]}"
            assert res.returncode == 0, f"`{line}` failed after {ran}:\n{res.stdout}{res.stderr}"
            assert "Traceback" not in res.stderr, f"`{line}`:\n{res.stderr}"
            ran.append(line)
        assert set(services) == {"services.capture", "services.scorer", "services.enforcer"}
        assert "xdpguard topics delete --yes" in ran
    finally:
        for proc in services.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        subprocess.run([str(ROOT / ".venv/bin/xdpguard"), "unload", "--all"], cwd=ROOT,
                       env=env, capture_output=True, timeout=60)
