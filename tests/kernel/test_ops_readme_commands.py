"""The README's two commands work as written for root on a minimal Debian (no sudo there) and for
a user with sudo (issue 14, item 1): scripts/demo and scripts/test source scripts/as-root before
anything else, which goes on as root without ever calling sudo, re-runs the script with sudo
(keeping the xdpguard variables) for another user, and says in one line that root is needed when
there is no sudo. A fake `sudo` on PATH records how it was called."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import caps
from tests.support.services import ROOT

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def bindir():
    """A folder readable by nobody (pytest's tmp_path is not) holding scripts/as-root, a probe
    script sourcing it the way scripts/demo does, and a fake sudo writing its arguments to
    sudo.log (writable by nobody)."""
    caps.require(caps.have_root() and caps.have_tool("setpriv"), "needs root and setpriv")
    d = Path(tempfile.mkdtemp(prefix="xg-asroot-"))
    d.chmod(0o777)
    try:
        yield from _fill(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _fill(d: Path):
    shutil.copy(ROOT / "scripts" / "as-root", d / "as-root")
    probe = d / "probe"
    probe.write_text('#!/usr/bin/env bash\nset -euo pipefail\n. "$(dirname "$0")/as-root"\n'
                     'echo "reached as $(id -u) with $*"\n')
    sudo = d / "sudo"
    sudo.write_text(f'#!/bin/sh\necho "$@" > {d}/sudo.log\necho "XDPGUARD_X=$XDPGUARD_X" >> '
                    f'{d}/sudo.log\n')
    for f in (probe, sudo, d / "as-root"):
        f.chmod(0o755)
    yield d


def run(cmd, path, **kw):
    env = {"PATH": path, "XDPGUARD_X": "kept", "HOME": "/"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, **kw)


def test_root_goes_on_without_sudo(bindir):
    (bindir / "sudo").write_text("#!/bin/sh\necho sudo must not be called >&2\nexit 99\n")
    res = run([str(bindir / "probe"), "a1"], f"{bindir}:/usr/bin:/bin")
    assert res.returncode == 0 and res.stdout.strip() == "reached as 0 with a1", res.stderr


def test_another_user_is_rerun_with_sudo_keeping_the_xdpguard_variables(bindir):
    res = run([*NOBODY, str(bindir / "probe"), "a1", "a 2"], f"{bindir}:/usr/bin:/bin")
    assert res.returncode == 0, res.stderr
    args, kept = (bindir / "sudo.log").read_text().splitlines()
    assert args == f"--preserve-env=XDPGUARD_X -- {bindir}/probe a1 a 2"
    assert kept == "XDPGUARD_X=kept"


def test_another_user_without_sudo_gets_one_line(bindir):
    (bindir / "sudo").unlink()
    res = run([*NOBODY, str(bindir / "probe")], f"{bindir}:/usr/bin:/bin")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [f"{bindir}/probe: needs root: run it as root (sudo is "
                                       "not installed)"]


def test_the_readme_commands_are_the_scripts_and_they_source_as_root_first():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["scripts/demo", "scripts/test"], commands
    assert "stops the broker it started" in readme
    for name in ("demo", "test"):
        lines = (ROOT / "scripts" / name).read_text().splitlines()
        code = [l for l in lines if l.strip() and not l.startswith("#")]
        assert code[:2] == ["set -euo pipefail", '. "$(dirname "$0")/as-root"'], code[:2]
        assert os.access(ROOT / "scripts" / name, os.X_OK)
    assert not re.search(r"^\s*sudo ", readme, re.M), "a README command still starts with sudo"
