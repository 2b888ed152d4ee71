"""Capability checks: skip on a developer laptop, fail in CI (CI=true)."""
from __future__ import annotations

import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


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
            return any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f)
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
