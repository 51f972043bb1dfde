"""Reading a module's imports from its source (no code executed), for the layering tests of every package."""
from __future__ import annotations

import ast
from pathlib import Path


def imported_roots(path: Path) -> set[str]:
    """Top-level package names that ``path`` imports absolutely, anywhere in the file (``import a.b`` -> ``a``,
    ``from a.b import c`` -> ``a``); relative imports are the package's own and are left out."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots
