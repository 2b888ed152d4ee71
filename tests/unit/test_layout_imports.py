"""The package map of docs/architecture.md, enforced: which xdpguard package may import which,
and which heavy third-party libraries each may reach.

Static (every `import` in every module, including imports inside functions) and dynamic (the
node services' entry points imported in a fresh interpreter pull in none of the offline stack).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.imports import imported_modules

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"

# package -> the xdpguard packages it may import (itself always allowed)
ALLOWED = {
    "common": set(),
    "records": {"common"},
    "dataplane": {"common", "records"},
    "wire": {"common", "records"},
    "detection": {"common", "records"},
    "offline": {"common", "records", "wire", "detection"},
    "capture": {"common", "records", "dataplane", "wire"},
    "enforcer": {"common", "records", "dataplane", "wire"},
    "scorer": {"common", "records", "wire", "detection"},
    "manager": {"common", "records", "dataplane", "wire", "detection", "offline",
                "capture", "enforcer", "scorer"},
}
# package -> third-party top-level modules it must not import
HEAVY = {"aiokafka", "faust", "mode", "bcc", "sklearn", "joblib", "matplotlib", "scapy"}
FORBIDDEN = {
    "common": HEAVY,
    "records": HEAVY | {"numpy", "msgpack"},
    "dataplane": HEAVY - {"bcc"},
    "wire": HEAVY - {"aiokafka"},
    "detection": HEAVY - {"sklearn", "joblib"},
    "offline": {"faust", "mode", "bcc"},
    "capture": HEAVY - {"aiokafka", "bcc"},
    "enforcer": HEAVY - {"aiokafka", "bcc"},
    "scorer": HEAVY - {"aiokafka", "faust", "mode", "sklearn", "joblib"},
    "manager": set(),
}


def test_every_package_is_in_the_map():
    pkgs = {p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists()}
    assert pkgs == set(ALLOWED), "a package was added or removed: update ALLOWED and docs"


def violations(pkg: str, root: Path = ROOT) -> list[str]:
    """Every import in services/<pkg>/ under `root` that the map forbids, as
    `file:line imports module`."""
    bad = []
    for path in sorted((root / "services" / pkg).rglob("*.py")):
        for line, mod in imported_modules(path, root):
            parts = mod.split(".")
            if parts[0] == "services" and len(parts) > 1:
                target = parts[1]
                if target != pkg and target not in ALLOWED[pkg]:
                    bad.append(f"{path.relative_to(root)}:{line} imports services.{target}")
            elif parts[0] in FORBIDDEN[pkg]:
                bad.append(f"{path.relative_to(root)}:{line} imports {parts[0]}")
    return bad


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_package_imports_follow_the_map(pkg):
    bad = violations(pkg)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("entry", ["services.capture.__main__", "services.enforcer.__main__"])
def test_node_services_load_no_offline_stack(entry):
    code = (f"import sys, importlib; importlib.import_module({entry!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'scapy', 'sklearn', 'faust') or m.startswith('services.offline') "
            "or m.startswith('services.detection')); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{entry} loads {out.stdout.strip()}"


def test_the_rule_can_fail(tmp_path):
    """The check sees every spelling of a forbidden import (absolute, from a bare package,
    relative, inside a function) and lets the allowed ones through."""
    mod = tmp_path / "services" / "detection" / "x.py"
    mod.parent.mkdir(parents=True)
    mod.write_text("from services.records import rules\n"
                   "from services import common\n"
                   "from services import wire\n"
                   "import services.offline.pcap\n"
                   "def f():\n"
                   "    from ..dataplane import maps\n"
                   "    from .. import capture\n"
                   "    import aiokafka\n"
                   "    from faust import App\n")
    assert violations("detection", tmp_path) == [
        "services/detection/x.py:3 imports services.wire",
        "services/detection/x.py:4 imports services.offline",
        "services/detection/x.py:6 imports services.dataplane",
        "services/detection/x.py:7 imports services.capture",
        "services/detection/x.py:8 imports aiokafka",
        "services/detection/x.py:9 imports faust"]
