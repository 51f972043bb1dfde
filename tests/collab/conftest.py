"""Fixtures of the collaboration tests: a vault with saved analyses whose original files carry planted metadata
markers (JPEG EXIF Artist + UserComment, PNG tEXt, TIFF ImageDescription), a researcher key pair, and helpers."""
from __future__ import annotations

import hashlib
import io
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, PngImagePlugin

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from collab.crypto_age import generate_identity, identity_file_text
from collab.dataset import ExportOptions
from collab.recipients import add_researcher
from tests.app.conftest import crystal_image, png_bytes
from ui.analyses import save_analysis
from vault import KdfParams, Vault

PASSPHRASE = "correct horse battery staple"
OPERATOR = "Olga Operatorsdottir"
PRODUCT = "PRODUCT-ZX81"
LOT = "LOT-4711-SECRET"
#: Strings planted in the original files' metadata (and file names); none may appear in an export.
MARKERS = {
    "jpeg_artist": "MARKER-EXIF-ARTIST-7f3a",
    "jpeg_comment": "MARKER-EXIF-USERCOMMENT-91bc",
    "png_text": "MARKER-PNG-TEXT-chunk-55d2",
    "tiff_description": "MARKER-TIFF-IMAGEDESCRIPTION-e0e1",
    "file_name": "MARKER-FILENAME-batch-2231",
}


def jpeg_with_exif(pixels: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x013B] = MARKERS["jpeg_artist"]  # Artist (IFD0)
    exif[0x010F] = "MARKER-CAMERA-MAKE"  # Make
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9286] = b"ASCII\x00\x00\x00" + MARKERS["jpeg_comment"].encode()  # UserComment
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif)
    data = buf.getvalue()
    assert MARKERS["jpeg_artist"].encode() in data and MARKERS["jpeg_comment"].encode() in data
    return data


def png_with_text(pixels: np.ndarray) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", MARKERS["png_text"])
    info.add_text("Author", OPERATOR)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info)
    data = buf.getvalue()
    assert MARKERS["png_text"].encode() in data
    return data


def tiff_with_description(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, description=MARKERS["tiff_description"], metadata=None)
    data = buf.getvalue()
    assert MARKERS["tiff_description"].encode() in data
    return data


_PLANTED: dict[str, bytes] = {}


def planted_files() -> dict[str, bytes]:
    """Three originals with planted metadata: name -> bytes (names carry a marker too)."""
    if not _PLANTED:
        _PLANTED.update(_make_planted())
    return dict(_PLANTED)


def _make_planted() -> dict[str, bytes]:
    pixels = crystal_image()
    return {f"{MARKERS['file_name']}.jpg": jpeg_with_exif(pixels),
            f"{MARKERS['file_name']}.png": png_with_text(np.flipud(pixels).copy()),
            f"{MARKERS['file_name']}.tif": tiff_with_description(np.fliplr(pixels).copy())}


_RESULTS: dict[tuple, object] = {}


def save(vault: Vault, name: str, data: bytes, *, pixel_size_um: float | None = 0.5) -> str:
    """Analyse (classical detector; results cached per process, they are deterministic) and save as OPERATOR."""
    key = (name, hashlib.sha256(data).hexdigest(), pixel_size_um)
    if key not in _RESULTS:
        _RESULTS[key] = analyze_bytes(data, name=name, detector=ClassicalDetector(),
                                      options=AnalysisOptions(pixel_size_um=pixel_size_um))
    result = _RESULTS[key]
    info = save_analysis(vault, data, result, source="upload", user=OPERATOR, product=PRODUCT, lot=LOT)
    return info.analysis_id


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALQC_STATE_DIR", str(tmp_path / "user-state"))
    for var in ("CRYSTALQC_VAULT", "CRYSTALQC_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def vault(tmp_path):
    v, _ = Vault.create(tmp_path / "vault", PASSPHRASE, kdf_params=KdfParams.minimum(), user="lead")
    yield v
    v.lock()


@pytest.fixture
def analyses(vault) -> list[str]:
    """Ids of three saved analyses (JPEG with EXIF, PNG with tEXt, TIFF with ImageDescription)."""
    return [save(vault, name, data) for name, data in planted_files().items()]


@pytest.fixture
def identity() -> tuple[str, str]:
    """(private identity, public key) of the researcher."""
    return generate_identity()


@pytest.fixture
def key_file(tmp_path, identity) -> Path:
    path = tmp_path / "key.txt"
    path.write_text(identity_file_text(identity[0]), encoding="ascii")
    return path


@pytest.fixture
def researcher(vault, identity):
    return add_researcher(vault, "Dr. Ada Researcher", identity[1], user="lead")


def options(**changes) -> ExportOptions:
    base = {"purpose": "fine-tune the crystal detector on plant images", "plant": "plant-A",
            "expires": date.today() + timedelta(days=90)}
    return ExportOptions(**{**base, **changes})


__all__ = ["MARKERS", "OPERATOR", "PRODUCT", "LOT", "options", "save", "planted_files", "png_bytes"]
