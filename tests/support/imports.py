"""The imports a Python file makes, read statically (for the layout tests)."""
from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `path`, including imports inside
    functions; relative ones resolved against `path`'s package under `root`. `from M.N import x`
    gives M.N; from a bare package (`from services import offline`, `from . import x`) it gives
    the package's x, which may be a module (services.offline), not only M."""
    pkg_parts = path.relative_to(root).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg_parts[: len(pkg_parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
                names = [f"{mod}.{a.name}" for a in node.names] if not node.module else [mod]
            elif "." not in node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                names = [node.module]
            out += [(node.lineno, n) for n in names]
    return out
