"""The pure ui modules stay free of Streamlit (so they can move into a package), and no decrypted data is cached
process-wide: nothing in app.py, screens/ or ui/ uses st.cache_data, and st.cache_resource only in ui/resources.py."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.importscan import imported_roots

ROOT = Path(__file__).resolve().parents[2]
PURE = ("archive.py", "analyses.py", "settings.py", "passphrase.py", "models.py")
APP_SOURCES = sorted([ROOT / "app.py", *(ROOT / "screens").glob("*.py"), *(ROOT / "ui").glob("*.py")])


@pytest.mark.parametrize("name", PURE)
def test_pure_ui_modules_do_not_import_streamlit(name):
    assert "streamlit" not in imported_roots(ROOT / "ui" / name)


def _names_used(path: Path) -> set[str]:
    used = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.alias):
            used.add(node.name.rsplit(".", 1)[-1])
    return used


@pytest.mark.parametrize("path", APP_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_decrypted_data_in_process_wide_caches(path):
    used = _names_used(path)
    assert "cache_data" not in used
    if path.name != "resources.py":
        assert "cache_resource" not in used


def test_there_are_sources_to_check():
    assert len(APP_SOURCES) >= 10
    assert "cache_resource" in _names_used(ROOT / "ui" / "resources.py")  # the checker sees a real use
