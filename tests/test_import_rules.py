"""Architecture rules from DESIGN.md, checked on the source (no imports executed)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.importscan import imported_roots

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("analysis", "detection", "vault")


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def test_there_are_sources_to_check():
    assert len(_sources(*PACKAGES)) >= 5


@pytest.mark.parametrize("path", _sources(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_packages_never_import_streamlit(path):
    assert "streamlit" not in imported_roots(path)


@pytest.mark.parametrize("path", _sources(*PACKAGES, "screens", "ui") + [ROOT / "app.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_training_code_imports_torch_or_ultralytics(path):
    roots = imported_roots(path)
    if path.parent.name == "detection" and path.name.startswith(("train", "export")):
        return
    assert not roots & {"torch", "torchvision", "ultralytics"}, f"{path} imports training-only packages"


def test_rule_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom streamlit import x\nimport torch.nn as nn\nfrom . import sibling\n")
    assert imported_roots(probe) == {"os", "streamlit", "torch"}
