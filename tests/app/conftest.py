"""Shared fixtures of the app tests: every vault under tmp_path, the seen-file folder in tmp, the minimum (fast)
Argon2id cost for new vaults, a controllable idle clock, and helpers that drive the lock screen with AppTest."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import ui.resources
import ui.session
from vault import KdfParams, Vault

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PASSPHRASE = "correct horse battery staple"
FAST_KDF = KdfParams.minimum()  # the enforced floor, as in tests/vault


class FakeClock:
    """Stands in for ui.session.clock (seconds, monotonic); ``advance`` moves it on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALQC_VAULT", str(tmp_path / "vault"))
    monkeypatch.setenv("CRYSTALQC_STATE_DIR", str(tmp_path / "user-state"))
    for var in ("CRYSTALQC_PASSPHRASE", "CRYSTALQC_NEW_PASSPHRASE", "CRYSTALQC_RECOVERY_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ui.session, "KDF_PARAMS", FAST_KDF)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(ui.session, "clock", fake)
    return fake


@pytest.fixture
def vault_path(tmp_path) -> Path:
    return tmp_path / "vault"


@pytest.fixture
def recovery_key(vault_path) -> str:
    """Create a vault (locked again at once) and return its recovery key."""
    vault, key = Vault.create(vault_path, PASSPHRASE, kdf_params=FAST_KDF, user="setup")
    vault.lock()
    return key


def open_vault(vault_path: Path, passphrase: str = PASSPHRASE) -> Vault:
    """The test's own view of the vault, through the public API (records unlock_ok like any unlock)."""
    return Vault.open(vault_path, passphrase, user="test")


def events(vault_path: Path) -> list:
    """All audit records (opens the vault with the test passphrase)."""
    with open_vault(vault_path) as v:
        return v.audit.entries()


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    return at


def unlock(at: AppTest, *, name: str = "alice", passphrase: str = PASSPHRASE) -> AppTest:
    at.text_input(key="unlock_name").input(name)
    at.text_input(key="unlock_pass").input(passphrase)
    at.button(key="unlock").click()
    return at.run()


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


@pytest.fixture
def app(recovery_key) -> AppTest:
    """An app session unlocked by "alice" and showing the Analyze screen."""
    at = unlock(new_app())
    assert not at.exception
    assert titles(at) == ["Analyze an image"]
    return at


def crystal_image(n: int = 6) -> np.ndarray:
    """Grey field with n well separated dark-rimmed rectangles (translucent crystals) and mild noise."""
    rng = np.random.default_rng(0)
    img = np.full((512, 640), 170, np.uint8)
    for i in range(n):
        x, y = 60 + (i % 3) * 190, 90 + (i // 3) * 220
        cv2.rectangle(img, (x, y), (x + 70, y + 40), 60, 2)
    noisy = img.astype(np.float32) + rng.normal(0, 2, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def samples(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes(crystal_image()))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "blank.png").write_bytes(png_bytes(np.full((300, 400), 170, np.uint8)))
    monkeypatch.setattr(ui.resources, "SAMPLES_DIR", folder)
    return folder


def pick_sample(at: AppTest, name: str) -> AppTest:
    at.selectbox(key="sample").select(name)
    return at.run()
