"""Only vault/crypto.py may import `cryptography`; format.py stays free of crypto and file I/O."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

VAULT = Path(__file__).resolve().parents[2] / "vault"


def _roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(VAULT.glob("*.py")), ids=lambda p: p.name)
def test_only_crypto_imports_cryptography(path):
    assert ("cryptography" in _roots(path)) == (path.name == "crypto.py")


def test_format_has_no_crypto_or_io():
    roots = _roots(VAULT / "format.py")
    assert not roots & {"cryptography", "os", "pathlib", "shutil", "vault.crypto"}
