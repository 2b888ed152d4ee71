"""Capability checks: skip on a developer laptop, fail in CI (CI=true); the pin directory a test
may use under bpffs."""
from __future__ import annotations

import os
import shutil
import uuid

import pytest

IN_CI = bool(os.environ.get("CI"))
BPFFS = "/sys/fs/bpf"


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI is set but {what}", pytrace=False)
    pytest.skip(what)


def have_root() -> bool:
    return os.geteuid() == 0


def have_bpffs() -> bool:
    try:
        with open("/proc/mounts") as f:
            return any(line.split()[1:3] == [BPFFS, "bpf"] for line in f)
    except OSError:
        return False


def have_bcc() -> bool:
    try:
        import bcc  # noqa: F401
    except Exception:
        return False
    return True


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def fresh_pin_dir() -> str:
    """A pin directory of the calling test's own, not created: /sys/fs/bpf/xdpguard-test-<8 hex>
    (a prefix no service uses; whoever loads into it unloads and removes it)."""
    return f"{BPFFS}/xdpguard-test-{uuid.uuid4().hex[:8]}"
