"""The researcher round trip WITH training (make test-train; needs .venv-train with torch + ultralytics, minutes on
a CPU): a tiny rendered set saved as analyses in a vault -> exported through the app's exporter (collab.dataset)
-> decrypted with the researcher tool -> trained 1 epoch from the yolo yaml, then fine-tuned 1 epoch from that
checkpoint with --init-weights (the path a researcher takes with the shipped model's .pt) -> evaluated on the
export's validation image -> exported to ONNX (detection.export) -> packaged and signed with a fresh researcher
key -> trusted, imported, acceptance-tested against the active model and activated through ui.models.

Accuracy is not the point (8 images, 64 px, 2 epochs): the test proves the plumbing with real training code.
Kept out of tests/ (make test has no torch): run ``make test-train``; it fails (never skips) without the training
venv. The training subprocesses run under ``nice -n 19`` with one torch thread."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from collab.crypto_age import generate_identity, identity_file_text
from collab.dataset import ExportOptions, build_training_set, seal_export
from collab.recipients import add_researcher
from detection.evaluate import synthetic_set
from tests.collab import roundtrip
from ui import models
from ui.analyses import list_analyses, save_analysis
from vault import KdfParams, Vault

REPO = roundtrip.REPO
TRAIN_PY = Path(os.environ.get("CRYSTALQC_TRAIN_PYTHON", REPO / ".venv-train" / "bin" / "python"))
N_IMAGES, SIZE, IMGSZ, EXPORT_IMGSZ = 10, (256, 256), 64, 256


def train_run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(["nice", "-n", "19", str(TRAIN_PY), *args], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        raise AssertionError(f"{args[:2]} exited {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def train(data_yaml: Path, out: Path, *extra: str) -> dict:
    train_run("-m", "detection.train", "--data", str(data_yaml), "--model", "yolo11n.yaml", "--imgsz", str(IMGSZ),
              "--epochs", "1", "--batch", "4", "--workers", "0", "--threads", "1", "--device", "cpu",
              "--out", str(out), *extra)
    record = json.loads((out / "training.json").read_text())
    assert record["status"] == "finished" and (out / "weights" / "best.pt").is_file()
    return record


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALQC_STATE_DIR", str(tmp_path / "state"))
    golden = roundtrip.small_golden_set()
    monkeypatch.setattr(models, "golden_set", lambda: golden)


def test_export_decrypt_train_finetune_evaluate_export_package_import(tmp_path):
    if not TRAIN_PY.is_file():
        pytest.fail(f"No training venv at {TRAIN_PY}: run `make test-train` (it creates .venv-train) or set"
                    " CRYSTALQC_TRAIN_PYTHON.")
    timings = {}
    t0 = time.perf_counter()
    vault, _ = Vault.create(tmp_path / "vault", "correct horse battery staple", kdf_params=KdfParams.minimum(),
                            user="lead")
    with vault:
        # 1. the plant: rendered micrographs analysed and saved, exported to the researcher's key
        for item in synthetic_set(N_IMAGES, seed=777_000, difficulty="easy", size=SIZE):
            result = analyze_bytes(item.data, name=item.name, detector=ClassicalDetector(),
                                   options=AnalysisOptions(pixel_size_um=0.5))
            save_analysis(vault, item.data, result, source="upload", user="tech")
        secret, public = generate_identity()
        key_file = tmp_path / "key.txt"
        key_file.write_text(identity_file_text(secret))
        researcher = add_researcher(vault, "Dr. Ada Researcher", public, user="lead")
        ids = [a.analysis_id for a in list_analyses(vault)]
        ts = build_training_set(vault, ids, ExportOptions(purpose="round-trip test", plant="plant-T",
                                                          expires=date.today() + timedelta(days=7)),
                                recipient=researcher)
        export = tmp_path / "export.age"
        export.write_bytes(seal_export(vault, ts, user="lead", qc_lead_confirmed=True))
        timings["render+analyse+export"] = time.perf_counter() - t0

        # 2. the researcher: decrypt (app venv), train + fine-tune (training venv), evaluate, export ONNX
        data_dir = tmp_path / "dataset"
        roundtrip.run("-m", "collab.researcher", "decrypt", str(export), "--identity", str(key_file),
                      "--out", str(data_dir))
        assert roundtrip.check_yolo_folder(data_dir)["images"] == {"train": 8, "val": 2}
        t1 = time.perf_counter()
        base = train(data_dir / "data.yaml", tmp_path / "runs" / "base")
        tuned = train(data_dir / "data.yaml", tmp_path / "runs" / "tuned", "--init-weights",
                      str(tmp_path / "runs" / "base" / "weights" / "best.pt"))
        assert tuned["init_weights"].endswith("best.pt") and tuned["data"]["images"] == {"train": 8, "val": 2}
        assert "metrics" in base and "metrics" in tuned
        timings["train 1 epoch + fine-tune 1 epoch"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        onnx_dir = tmp_path / "crystal-yolo11n"
        train_run("-m", "detection.export", "--weights", str(tmp_path / "runs" / "tuned" / "weights" / "best.pt"),
                  "--out", str(onnx_dir), "--name", "crystal-yolo11n", "--version", "1.1.0",
                  "--imgsz", str(EXPORT_IMGSZ))
        timings["export onnx"] = time.perf_counter() - t2
        evaluation = roundtrip.run("-m", "collab.researcher", "evaluate", "--data", str(data_dir),
                                   "--model", str(onnx_dir / "model.onnx"))
        assert "export-val" in evaluation.stdout and "onnx:crystal-yolo11n 1.1.0" in evaluation.stdout

        # 3. package, sign, and back into the plant's app: trust, import, acceptance test, activate
        t3 = time.perf_counter()
        package = roundtrip.sign_package(onnx_dir / "model.onnx", onnx_dir / "manifest.json", version="1.1.0",
                                         keys=tmp_path / "keys", out=tmp_path / "crystal-yolo11n-1.1.0.cqcpkg",
                                         training_data="round-trip test: 8 exported plant images, 1+1 epochs")
        entry, report = roundtrip.import_into_vault(vault, package, public_key=tmp_path / "keys" / "signing.pub")
        timings["package+import+acceptance"] = time.perf_counter() - t3
        assert entry.version == "1.1.0" and [r["model"] for r in report["rows"]] == ["candidate", "current"]
        assert report["rows"][0]["detector"] == "onnx:crystal-yolo11n 1.1.0"
        assert all(roundtrip.finite(r["s / image"]) for r in report["rows"])
        active = models.active_model(vault)
        assert active.entry == entry.entry
        manifest = json.loads((onnx_dir / "manifest.json").read_text())
        assert hashlib.sha256(models.load_model_bytes(vault, active)).hexdigest() == manifest["sha256"]
        assert manifest["input_size"] == [EXPORT_IMGSZ, EXPORT_IMGSZ]
    timings["total"] = time.perf_counter() - t0
    print("round trip timings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    print("acceptance:", json.dumps(report["rows"]))
