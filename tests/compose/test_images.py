"""The images: the build context .dockerignore leaves is the wheelhouse and the lock file only;
the xdpguard image runs the CLI with its shipped files; a second build of an unchanged tree builds
nothing (images are tagged by content hash)."""
from __future__ import annotations

import subprocess

import pytest

from tests.support.compose import ROOT, docker

# images are built (cold: minutes) and stacks started inside these tests
pytestmark = pytest.mark.timeout(1200)


def test_build_context_is_the_wheelhouse_and_the_lock_file(images):
    listing = subprocess.run(
        ["docker", "build", "--no-cache", "-q", "-f", "-", "."], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={"PATH": "/usr/bin:/bin:/usr/local/bin", "DOCKER_BUILDKIT": "0"},
        input=f"FROM {images['XDPGUARD_BASE_IMAGE']}\nCOPY . /ctx\n"
              "RUN cd /ctx && find . -type f | sort > /files\n")
    assert listing.returncode == 0, listing.stderr
    image = listing.stdout.strip().splitlines()[-1]
    try:
        files = docker("run", "--rm", image, "cat", "/files").stdout.split()
    finally:
        docker("rmi", image, check=False)
    others = [f for f in files if f != "./constraints.txt"
              and not (f.startswith("./.cache/images/wheelhouse/") and f.endswith(".whl"))]
    assert others == [] and "./constraints.txt" in files
    assert any(f.startswith("./.cache/images/wheelhouse/xdpguard-") for f in files)


def test_the_image_runs_the_cli_with_its_shipped_files(images):
    out = docker("run", "--rm", images["XDPGUARD_IMAGE"], "sh", "-c",
                 "xdpguard load --print-c | head -n 1; xdpguard config | grep '^SCORER_MODEL='").stdout
    assert "-I/opt/venv/lib/python3.11/site-packages/services/bpf " in out
    assert "SCORER_MODEL=/opt/venv/lib/python3.11/site-packages/services/models/xdpguard-if.joblib" in out
    model = docker("run", "--rm", images["XDPGUARD_IMAGE"], "cat",
                   "/opt/venv/lib/python3.11/site-packages/services/models/xdpguard-if.json").stdout
    assert model == (ROOT / "models/xdpguard-if.json").read_text()


def test_an_unchanged_tree_builds_nothing(images):
    res = subprocess.run([str(ROOT / "scripts/images"), "build"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert dict(line.split("=", 1) for line in res.stdout.splitlines()) == images
    assert "building" not in res.stderr and "making" not in res.stderr, res.stderr
