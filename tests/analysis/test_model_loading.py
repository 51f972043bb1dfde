"""Loading models for the pipeline: signed packages verified at load, the shipped package, no silent fallback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import analysis.pipeline as pipeline
import detection.package as pkg
from analysis.__main__ import main as cli_main
from analysis.errors import DetectorUnavailableError, ModelPackageError
from analysis.onnx_adapter import load_package_detector, manifest_input_kind
from analysis.pipeline import ClassicalDetector, find_shipped_model, make_detector
from detection.onnx_detector import OnnxDetectorOptions
from tests.detection.onnx_fixtures import band_model

FIELDS = {"name": "crystal-test", "version": "1.2.0", "author": "Test author", "training_data": "rendered tiles",
          "created": "2026-11-27T10:00:00+00:00", "metrics": {"mAP50": 0.9}}
PROJECT = pkg.generate_private_key()
STRANGER = pkg.generate_private_key()
TRUSTED = {pkg.private_key_id(PROJECT): pkg.public_key_of(PROJECT)}


def write_package(path: Path, *, model: bytes | None = None, key=PROJECT, **over) -> Path:
    path.write_bytes(pkg.build_package({**FIELDS, **over}, band_model() if model is None else model, key=key))
    return path


def flip_byte(path: Path, offset_from_end: int) -> Path:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def keys_dir(tmp_path, monkeypatch):
    """A trusted-keys folder holding the test project key, used by make_detector for .cqcpkg files."""
    folder = tmp_path / "trusted_keys"
    folder.mkdir()
    (folder / "project.pub").write_bytes(pkg.public_key_pem(pkg.public_key_of(PROJECT)))
    monkeypatch.setattr(pipeline, "SHIPPED_KEYS_DIR", folder)
    return folder


def test_signed_package_loads_with_its_name_and_version(tmp_path):
    det = load_package_detector(write_package(tmp_path / "m.cqcpkg"), trusted_keys=TRUSTED)
    assert det.label == "onnx:crystal-test 1.2.0"
    assert det.model.meta.names == ("crystal", "agglomerate", "mimic") and det.model.dynamic_input is False
    img = np.zeros((64, 64), np.float32)
    img[10:20, 5:30] = 1.0
    boxes, _, cls = det.model.predict_boxes(img, options=OnnxDetectorOptions(tile_overlap_px=16))
    assert boxes.tolist() == [[5, 10, 30, 20]] and cls.tolist() == [0]


def test_dynamic_size_package_loads_and_its_manifest_must_say_so(tmp_path):
    dyn_input = {"name": "images", "shape": ["batch", 3, "height", "width"], "dtype": "float32"}
    fixed_input = {"name": "images", "shape": ["batch", 3, 64, 64], "dtype": "float32"}
    good = write_package(tmp_path / "dyn.cqcpkg", model=band_model(dynamic_size=True), input=dyn_input)
    assert load_package_detector(good, trusted_keys=TRUSTED).model.dynamic_input is True
    lying = write_package(tmp_path / "lie.cqcpkg", model=band_model(dynamic_size=True), input=fixed_input)
    with pytest.raises(ModelPackageError, match="manifest says the model input size is fixed"):
        load_package_detector(lying, trusted_keys=TRUSTED)
    lying2 = write_package(tmp_path / "lie2.cqcpkg", input=dyn_input)
    with pytest.raises(ModelPackageError, match="manifest says the model input size is dynamic"):
        load_package_detector(lying2, trusted_keys=TRUSTED)


def test_manifest_input_kind():
    assert manifest_input_kind({"input": {"shape": ["batch", 3, "height", "width"]}}) == "dynamic"
    assert manifest_input_kind({"input": {"shape": ["batch", 3, 640, 640]}}) == "fixed"
    assert manifest_input_kind({"input": {"shape": ["batch", 3, 640, "w"]}}) is None
    assert manifest_input_kind({"input": {"shape": ["batch", 3, True, False]}}) is None
    assert manifest_input_kind({}) is None and manifest_input_kind({"input": "x"}) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_package(p, key=None), "not signed"),
        (lambda p: write_package(p, key=STRANGER), "unknown key"),
        (lambda p: flip_byte(write_package(p), 300), "sha256"),  # a byte inside model.onnx
        (lambda p: (p.write_bytes(b"not a package"), p)[1], "not a crystal QC model package"),
    ],
    ids=["unsigned", "untrusted-key", "tampered-model", "not-a-package"],
)
def test_refused_packages_raise_a_clear_error(tmp_path, make, message):
    with pytest.raises(ModelPackageError, match=message):
        load_package_detector(make(tmp_path / "bad.cqcpkg"), trusted_keys=TRUSTED)


def test_tampered_manifest_fails_the_signature(tmp_path):
    path = write_package(tmp_path / "m.cqcpkg")
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"version":"1.2.0"', b'"version":"1.2.1"', 1))
    with pytest.raises(ModelPackageError, match="signature does not match"):
        load_package_detector(path, trusted_keys=TRUSTED)


def test_no_trusted_key_and_missing_file(tmp_path):
    with pytest.raises(ModelPackageError, match="No trusted key"):
        load_package_detector(write_package(tmp_path / "m.cqcpkg"), trusted_keys={})
    with pytest.raises(DetectorUnavailableError, match="cannot read"):
        load_package_detector(tmp_path / "missing.cqcpkg", trusted_keys=TRUSTED)


def test_find_shipped_model_takes_signed_packages_only(tmp_path):
    assert find_shipped_model(tmp_path / "none") is None
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "model.onnx").write_bytes(band_model())  # an unsigned folder is never a shipped model
    assert find_shipped_model(tmp_path) is None
    write_package(tmp_path / "b-model.cqcpkg")
    write_package(tmp_path / "a-model.cqcpkg")
    assert find_shipped_model(tmp_path) == tmp_path / "a-model.cqcpkg"


def test_auto_uses_a_verified_shipped_package(tmp_path, keys_dir, monkeypatch):
    path = write_package(tmp_path / "shipped.cqcpkg")
    monkeypatch.setattr(pipeline, "find_shipped_model", lambda: path)
    assert make_detector("auto").label == "onnx:crystal-test 1.2.0"
    assert make_detector("hybrid").label.startswith("hybrid(onnx:crystal-test")


@pytest.mark.parametrize("kind", ["auto", "onnx", "hybrid"])
def test_a_tampered_shipped_package_is_an_error_not_a_classical_fallback(tmp_path, keys_dir, monkeypatch, kind):
    path = flip_byte(write_package(tmp_path / "shipped.cqcpkg"), 300)
    monkeypatch.setattr(pipeline, "find_shipped_model", lambda: path)
    with pytest.raises(ModelPackageError, match=r"shipped.cqcpkg cannot be used: .*sha256.*classical detector"):
        make_detector(kind)
    assert isinstance(make_detector("classical"), ClassicalDetector)  # still available when asked for


def test_a_package_signed_by_another_key_is_refused_for_the_shipped_model(tmp_path, keys_dir, monkeypatch):
    path = write_package(tmp_path / "shipped.cqcpkg", key=STRANGER)
    monkeypatch.setattr(pipeline, "find_shipped_model", lambda: path)
    with pytest.raises(ModelPackageError, match="unknown key"):
        make_detector("auto")


def test_auto_without_any_shipped_package_is_classical(monkeypatch):
    monkeypatch.setattr(pipeline, "find_shipped_model", lambda: None)
    assert isinstance(make_detector("auto"), ClassicalDetector)
    with pytest.raises(DetectorUnavailableError, match="no model found"):
        make_detector("onnx")


def test_cli_reports_a_tampered_package_and_analyses_nothing(tmp_path, keys_dir, capsys):
    bad = flip_byte(write_package(tmp_path / "m.cqcpkg"), 300)
    image = tmp_path / "img.png"
    import cv2

    cv2.imwrite(str(image), np.full((64, 64), 180, np.uint8))
    code = cli_main([str(image), "--out", str(tmp_path / "out"), "--model", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "error: The model package m.cqcpkg cannot be used" in err
    assert not (tmp_path / "out").exists()


SHIPPED = find_shipped_model()


@pytest.mark.skipif(SHIPPED is None, reason="no model package shipped in weights/")
def test_the_shipped_package_verifies_against_the_project_key_and_a_flipped_byte_is_refused(tmp_path):
    keys = pkg.load_trusted_keys(pipeline.SHIPPED_KEYS_DIR)
    det = load_package_detector(SHIPPED, trusted_keys=keys)
    manifest = json.loads(pkg.unpack(SHIPPED.read_bytes()).manifest_bytes)
    assert det.label == f"onnx:{manifest['name']} {manifest['version']}"
    copy = tmp_path / SHIPPED.name
    copy.write_bytes(SHIPPED.read_bytes())
    flip_byte(copy, 1000)  # inside model.onnx (the signature member is ~170 bytes)
    with pytest.raises(ModelPackageError, match="sha256"):
        load_package_detector(copy, trusted_keys=keys)
