"""The wheel works on its own: installed into a fresh virtualenv from the wheelhouse (no index, as
in the image), away from the source tree, its CLI finds the XDP C source and the shipped model
(package data found with importlib.resources): `load --print-c`, `analyze` on the seed capture,
`evaluate` on one capture."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.support.compose import ROOT

# images are built (cold: minutes) and stacks started inside these tests
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def installed(wheelhouse, tmp_path_factory):
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-index", "--find-links",
                          wheelhouse, "-c", str(ROOT / "constraints.txt"), "xdpguard"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return venv


def run(venv, cwd, *args: str) -> subprocess.CompletedProcess:
    # only the virtualenv: no PYTHONPATH, no checkout as working directory
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(cwd), "MPLBACKEND": "Agg"}
    return subprocess.run([str(venv / "bin/xdpguard"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    res = subprocess.run([str(installed / "bin/python"), "-c",
                          "import services, services.common.paths as p; "
                          "print(services.__file__); print(p.BPF_DIR); print(p.MODELS_DIR)"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, env={})
    assert res.returncode == 0, res.stderr
    for line in res.stdout.splitlines():
        assert line.startswith(str(installed)), res.stdout
        assert str(ROOT) not in line


def test_load_print_c_finds_the_xdp_source(installed, tmp_path):
    res = run(installed, tmp_path, "load", "--print-c")
    assert res.returncode == 0, res.stderr
    first, _, source = res.stdout.partition("\n")
    shipped = next(installed.glob("lib/python3*/site-packages/services/bpf"))
    assert first.startswith(f"// cflags: -I{shipped} ")
    assert source == (ROOT / "bpf/xdpguard.c").read_text()
    assert not (shipped / "xdpguard.c").is_symlink() and (shipped / "xdpguard.h").is_file()


def test_analyze_on_the_seed_capture_uses_the_shipped_model(installed, tmp_path, shared_dir):
    out = tmp_path / "cmds.json"
    res = run(installed, tmp_path, "analyze", "--file",
              str(shared_dir / "data/seed-capture/firewall_log.json"), "--dry-run", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert sum(line.startswith("[") for line in res.stdout.splitlines()) == 29
    assert len(json.loads(out.read_text())) == 29


def test_evaluate_on_one_capture_writes_the_report(installed, tmp_path, shared_dir):
    pcaps = shared_dir / "data/pcaps"
    with open(pcaps / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["file"] == "chrissanders+packets/synscan.pcapng")
    manifest = tmp_path / "one.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow({**row, "file": os.fspath(pcaps / row["file"])})
    res = run(installed, tmp_path, "evaluate", "--manifest", str(manifest), "--split", "time",
              "--out", str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    report = json.loads((tmp_path / "ev/report.json").read_text())
    assert report["overall"]["counts"]["attack_packets"] > 0
    assert (tmp_path / "ev/report.md").is_file() and (tmp_path / "ev/report.png").is_file()
