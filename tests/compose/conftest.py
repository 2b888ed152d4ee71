"""Fixtures of the compose tier: a Docker daemon (started if none answers, stopped again if this
session started it), the images built by `scripts/images build` (cached by content hash between
runs), the wheelhouse, and the compose command (v2 plugin or Debian's docker-compose 1.29)."""
from __future__ import annotations

import subprocess

import pytest

from tests.support import caps
from tests.support.compose import ROOT, compose_command


def _images(*args: str, timeout: float = 1800) -> str:
    res = subprocess.run([str(ROOT / "scripts/images"), *args], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"scripts/images {' '.join(args)} failed:\n{res.stderr[-4000:]}"
    return res.stdout


@pytest.fixture(scope="session")
def docker_daemon():
    caps.require(caps.have_root(), "compose tests need root (dockerd, XDP, namespaces)")
    caps.require(caps.have_tool("dockerd"), "compose tests need Docker (scripts/setup installs docker.io)")
    started = _images("daemon", "start", timeout=120).strip() == "started"
    yield
    if started:
        _images("daemon", "stop", timeout=120)


@pytest.fixture(scope="session")
def images(docker_daemon) -> dict[str, str]:
    """XDPGUARD_BASE_IMAGE, XDPGUARD_IMAGE, XDPGUARD_KAFKA_IMAGE of this tree's content."""
    out = _images("build")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def wheelhouse() -> str:
    return _images("wheels").strip().splitlines()[-1]


@pytest.fixture(scope="session")
def compose_cmd(docker_daemon) -> list[str]:
    cmd = compose_command()
    caps.require(cmd is not None, "neither `docker compose` nor docker-compose is installed")
    return cmd
