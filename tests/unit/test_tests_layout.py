"""Test helpers live in one place: tests/support/ and conftest files. A tier folder holds only
test modules (and its conftest), and no test module, benchmark or helper imports a test module
(its helpers would run its tests' collection, and a tier would depend on another's)."""
from __future__ import annotations

from pathlib import Path

from tests.support.imports import imported_modules

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
TIERS = ("unit", "kernel", "broker")


def imports_of_test_modules(root: Path = ROOT) -> list[str]:
    """Every import of a test module (tests/<tier>/*, tests/test_*) outside pytest's own
    conftest plugins, as `file:line imports module`."""
    bad = []
    files = sorted(p for d in ("tests", "bench") for p in (root / d).rglob("*.py"))
    for path in files:
        for line, mod in imported_modules(path, root):
            parts = mod.split(".")
            if parts[0] != "tests" or len(parts) < 2 or parts[1] == "support":
                continue
            if parts[1] in TIERS or parts[1].startswith(("test_", "conftest")):
                bad.append(f"{path.relative_to(root)}:{line} imports {mod}")
    return bad


def test_no_module_imports_a_test_module():
    bad = imports_of_test_modules()
    assert not bad, "move the helper or fixture to tests/support or a conftest.py:\n" + "\n".join(bad)


def test_tier_folders_hold_only_tests_and_conftest():
    stray = [str(p.relative_to(ROOT)) for tier in TIERS for p in sorted((TESTS / tier).glob("*.py"))
             if not p.name.startswith("test_") and p.name not in ("conftest.py", "__init__.py")]
    assert not stray, f"helpers belong in tests/support: {stray}"


def test_the_check_can_fail(tmp_path):
    """It sees absolute, `from tests.<tier> import`, and relative imports of test modules, and
    lets tests.support through."""
    (tmp_path / "bench").mkdir()
    tier = tmp_path / "tests" / "kernel"
    tier.mkdir(parents=True)
    (tier / "test_a.py").write_text("from tests.broker.test_b import helper\n"
                                    "from tests.support.services import metric\n")
    (tier / "test_c.py").write_text("from . import test_a\nfrom .test_a import x\n")
    (tmp_path / "bench" / "b.py").write_text("from tests.kernel import test_a\n")
    found = imports_of_test_modules(tmp_path)
    assert found == ["bench/b.py:1 imports tests.kernel",
                     "tests/kernel/test_a.py:1 imports tests.broker.test_b",
                     "tests/kernel/test_c.py:1 imports tests.kernel.test_a",
                     "tests/kernel/test_c.py:2 imports tests.kernel.test_a"], found
