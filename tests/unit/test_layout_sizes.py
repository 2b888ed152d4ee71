"""Sizes a reader can hold in their head: no module under services/ over 400 lines, and no
function over 80 lines unless a `# Long function: <why>` comment in its first lines says why."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE, MAX_FUNCTION = 400, 80


def _modules():
    return sorted((ROOT / "services").rglob("*.py"))


def long_functions(path: Path) -> list[str]:
    """Functions of `path` over MAX_FUNCTION lines without a 'Long function:' comment."""
    lines = path.read_text().splitlines()
    out = []
    for node in ast.walk(ast.parse("\n".join(lines), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            head = "\n".join(lines[node.lineno - 1: node.lineno + 8])
            if n > MAX_FUNCTION and "# Long function:" not in head:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} has {n} lines")
    return out


def test_no_module_over_400_lines():
    big = [f"{p.relative_to(ROOT)}: {n}" for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE]
    assert not big, big


def test_no_function_over_80_lines_without_a_reason():
    found = [f for p in _modules() for f in long_functions(p)]
    assert not found, "\n".join(found)


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    mod = tmp_path / "m.py"
    mod.write_text(f"def f():\n{body}\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert long_functions(mod) and "f has" in long_functions(mod)[0]
        mod.write_text(f"def f():\n    # Long function: one table, read top to bottom\n{body}\n")
        assert not long_functions(mod)
    finally:
        ROOT = old
