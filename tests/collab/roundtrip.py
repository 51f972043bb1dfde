"""Steps of the researcher round trip shared by the plumbing test (tests/collab, no training) and the training
test (tests_training/, make test-train): each step is the documented command (docs/privacy.md) or the app's own
function, so the tests exercise what people run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from detection.train import check_data_config
from ui import models

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, python: str = sys.executable, timeout: float = 300, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """``python -m ...`` in the repository; raises with stdout/stderr when it fails."""
    out = subprocess.run([python, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])} exited {out.returncode}\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")
    return out


def check_yolo_folder(folder: Path) -> dict:
    """The extracted export is a valid YOLO data set: detection.train accepts data.yaml; every image has one label
    file (same stem and split) and vice versa; each label line is 'class cx cy w h' with a known class and a box
    inside the image; every image decodes to the size in the manifest. Returns the checked data config."""
    config = check_data_config(json.loads((folder / "data.yaml").read_text()), yaml_dir=folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for split in ("train", "val"):
        images = {p.stem for p in (folder / "images" / split).glob("*.png")}
        labels = {p.stem for p in (folder / "labels" / split).glob("*.txt")} if (folder / "labels" / split).is_dir() \
            else set()
        assert images == labels, f"{split}: images and labels differ"
    by_path = {r["image"]: r for r in manifest["images"]}
    assert sorted(by_path) == sorted(str(p.relative_to(folder)) for p in folder.glob("images/*/*.png"))
    for rel, row in by_path.items():
        img = cv2.imread(str(folder / rel), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (row["height"], row["width"])
        for line in (folder / row["label"]).read_text().splitlines():
            c, *box = line.split()
            cx, cy, w, h = map(float, box)
            assert c in ("0", "1") and 0 < w <= 1 and 0 < h <= 1
            assert -1e-6 <= cx - w / 2 and cx + w / 2 <= 1 + 1e-6 and -1e-6 <= cy - h / 2 and cy + h / 2 <= 1 + 1e-6
    assert config["names"] == {0: "crystal", 1: "agglomerate"}
    return config


def sign_package(model: Path, manifest: Path, *, version: str, keys: Path, out: Path, training_data: str) -> Path:
    """The researcher's packaging: keygen (once), build + sign, verify against their own public key."""
    if not (keys / "signing.pem").exists():
        run("-m", "detection.package", "keygen", "--out", str(keys), "--no-passphrase")
    run("-m", "detection.package", "build", "--model", str(model), "--manifest-from", str(manifest),
        "--version", version, "--author", "Dr. Ada Researcher, test lab", "--training-data", training_data,
        "--key", str(keys / "signing.pem"), "--out", str(out))
    run("-m", "detection.package", "verify", str(out), "--trusted-key", str(keys / "signing.pub"))
    return out


def import_into_vault(vault, package: Path, *, public_key: Path, user: str = "lead") -> tuple[models.ModelEntry, dict]:
    """What the QC lead does on the Models screen: trust the researcher's key, import (every check + sandbox),
    acceptance test against the current model, store, activate."""
    models.add_trusted_key(vault, public_key.read_bytes(), label="Dr. Ada Researcher", user=user)
    data = package.read_bytes()
    vp = models.check_package(vault, data)
    candidate = models.detector_from_bytes(vp.model_bytes, name=vp.manifest.name, version=vp.manifest.version)
    from analysis.pipeline import make_detector

    report = models.acceptance_test(candidate, make_detector("auto"))
    entry = models.store_package(vault, data, vp, report, user=user)
    models.activate(vault, entry.entry, user=user)
    return entry, report


def small_golden_set():
    """One small rendered image instead of the three 1280 x 1024 of the real acceptance test (speed)."""
    from detection.evaluate import synthetic_set

    return list(synthetic_set(1, seed=900_001, difficulty="medium", size=(320, 256)))


def finite(x) -> bool:
    return x is not None and np.isfinite(x)
