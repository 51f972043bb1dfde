"""Only vault/crypto.py may import `cryptography`; format.py stays free of crypto and file I/O."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.importscan import imported_roots

VAULT = Path(__file__).resolve().parents[2] / "vault"


@pytest.mark.parametrize("path", sorted(VAULT.glob("*.py")), ids=lambda p: p.name)
def test_only_crypto_imports_cryptography(path):
    assert ("cryptography" in imported_roots(path)) == (path.name == "crypto.py")


def test_format_has_no_crypto_or_io():
    roots = imported_roots(VAULT / "format.py")
    assert not roots & {"cryptography", "os", "pathlib", "shutil", "vault.crypto"}
