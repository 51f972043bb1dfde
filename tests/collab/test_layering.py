"""collab/ stays Streamlit-free and training-free; pyrage is imported in one place (collab/crypto_age.py), so the
encryption library can be audited or swapped there."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.importscan import imported_roots

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "collab").glob("*.py"))


def test_there_are_sources():
    assert {p.name for p in SOURCES} >= {"crypto_age.py", "dataset.py", "recipients.py", "researcher.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_collab_never_imports_streamlit_or_training_code(path):
    assert not imported_roots(path) & {"streamlit", "torch", "torchvision", "ultralytics"}


@pytest.mark.parametrize("path", SOURCES + sorted((ROOT / "screens").glob("*.py")) + sorted(ROOT.glob("ui/*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_crypto_age_imports_pyrage(path):
    assert ("pyrage" in imported_roots(path)) == (path == ROOT / "collab" / "crypto_age.py")
