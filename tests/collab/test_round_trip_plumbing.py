"""The researcher round trip without training (plumbing): export -> decrypt with the researcher tool -> a valid
YOLO data set -> an ONNX model (the shipped one, as a new version) packaged and signed with a fresh researcher key
-> the QC lead trusts the key -> import with every check, acceptance test against the active model, activation.
The training leg (fine-tune, export ONNX) is tests_training/test_round_trip.py (make test-train)."""
from __future__ import annotations

import hashlib
import json

import pytest

from collab import researcher as rtool
from collab.dataset import build_training_set, seal_export
from tests.collab import roundtrip
from tests.collab.conftest import options
from ui import models

SHIPPED_PACKAGE = roundtrip.REPO / "weights" / "crystal-yolo11n.cqcpkg"
NEW_VERSION = "9.0.0"  # above any shipped version


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped model as a researcher holds it: model.onnx + manifest.json unpacked from the signed package."""
    import detection.package as pkg

    contents = pkg.unpack(SHIPPED_PACKAGE.read_bytes())
    folder = tmp_path_factory.mktemp("shipped")
    (folder / "model.onnx").write_bytes(contents.model_bytes)
    (folder / "manifest.json").write_bytes(contents.manifest_bytes)
    return folder


@pytest.fixture(autouse=True)
def _small_golden(monkeypatch):
    golden = roundtrip.small_golden_set()
    monkeypatch.setattr(models, "golden_set", lambda: golden)


def test_export_decrypt_package_sign_import_accept(vault, analyses, researcher, key_file, tmp_path, capsys, shipped):
    SHIPPED = shipped
    ts = build_training_set(vault, analyses, options(), recipient=researcher)
    export = tmp_path / "export.age"
    export.write_bytes(seal_export(vault, ts, user="lead", qc_lead_confirmed=True))

    data_dir = tmp_path / "dataset"
    roundtrip.run("-m", "collab.researcher", "decrypt", str(export), "--identity", str(key_file),
                  "--out", str(data_dir))
    config = roundtrip.check_yolo_folder(data_dir)
    assert config["images"] == {"train": 2, "val": 1}
    # the researcher's evaluation on the export's validation image (the plant's labels as truth)
    assert rtool.main(["evaluate", "--data", str(data_dir), "--model", str(SHIPPED / "model.onnx")]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export-val")]
    assert len(row) == 1 and "onnx:crystal-yolo11n " in row[0] and row[0].split()[3] == "1"  # n = 1 image

    # (training would happen here: tests_training/) - the shipped weights stand in for the fine-tuned model
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    package = roundtrip.sign_package(SHIPPED / "model.onnx", SHIPPED / "manifest.json", version=NEW_VERSION,
                                     keys=tmp_path / "keys", out=tmp_path / f"crystal-yolo11n-{NEW_VERSION}.cqcpkg",
                                     training_data="plumbing test: shipped weights, no fine-tuning")
    entry, report = roundtrip.import_into_vault(vault, package, public_key=tmp_path / "keys" / "signing.pub")

    assert entry.name == manifest["name"] and entry.version == NEW_VERSION and entry.sha256 == manifest["sha256"]
    assert [r["model"] for r in report["rows"]] == ["candidate", "current"]
    cand, cur = report["rows"]
    assert cand["detector"] == f"onnx:crystal-yolo11n {NEW_VERSION}" and cur["detector"].startswith("onnx:crystal-yolo11n")
    # same weights: the acceptance test must see the same figures for both (a real comparison, not a stub)
    assert cand["count accuracy"] == cur["count accuracy"] and cand["F1"] == cur["F1"] and report["worse"] == []
    assert models.active_model(vault).entry == entry.entry
    model_bytes = models.load_model_bytes(vault, models.active_model(vault))
    assert hashlib.sha256(model_bytes).hexdigest() == manifest["sha256"]
    events = [e.event for e in vault.audit.entries()]
    assert events.index("export") < events.index("trusted_key_added") < events.index("model_import") \
        < events.index("model_activation")


def test_a_package_signed_by_an_untrusted_researcher_key_is_refused(vault, shipped):
    SHIPPED = shipped
    import detection.package as pkg
    from analysis.errors import ModelPackageError

    stranger = pkg.generate_private_key()
    fields = {**json.loads((SHIPPED / "manifest.json").read_text()), "version": NEW_VERSION, "author": "someone",
              "training_data": "x", "created": "2026-01-01T00:00:00+00:00"}
    data = pkg.build_package(fields, (SHIPPED / "model.onnx").read_bytes(), key=stranger)
    with pytest.raises(ModelPackageError, match=pkg.format_fingerprint(pkg.private_key_id(stranger))[:9]):
        models.check_package(vault, data)
    assert models.installed_models(vault) == []
