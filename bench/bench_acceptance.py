"""How long a model import's acceptance test takes with the plant's own reviewed analyses.

    python bench/bench_acceptance.py [--images 30] [--size 2592x1944] [--model FILE]

Fills a temporary vault with ``--images`` analyses of rendered medium micrographs (held-out seeds 900000+, JPEG, the
classical detector's results, each marked checked as a technician would), then times ``ui.models.plant_set`` (reading
and checking them back) and ``ui.models.acceptance_test`` of the shipped model (or ``--model``) against itself: the
golden set plus both models on every plant image. Prints the seconds and the report's plant line (the same model on
both sides: a difference of exactly 0). Never asserts on time.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes, make_detector  # noqa: E402
from detection.synthetic import render_image  # noqa: E402
from ui import models  # noqa: E402
from ui.analyses import save_analysis, set_checked  # noqa: E402
from vault import KdfParams, Vault  # noqa: E402

PASSPHRASE = "benchmark passphrase, not secret"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=models.PLANT_MAX_IMAGES)
    ap.add_argument("--size", default="2592x1944")
    ap.add_argument("--model", type=Path, default=None, help=".cqcpkg or .onnx (default: the shipped package)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    detector = make_detector("onnx", model_path=args.model)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {detector.label}")
    with tempfile.TemporaryDirectory() as tmp:
        vault, _ = Vault.create(Path(tmp) / "vault", PASSPHRASE, kdf_params=KdfParams.minimum(), user="bench")
        try:
            for k in range(args.images):
                image, _ = render_image(900_000 + k, size=(w, h), difficulty="medium", colour="grey")
                data = cv2.imencode(".jpg", image)[1].tobytes()
                result = analyze_bytes(data, name=f"lot{k}.jpg", detector=ClassicalDetector(),
                                       options=AnalysisOptions())
                info = save_analysis(vault, data, result, source="upload", user="bench")
                set_checked(vault, info.analysis_id, checked=True, user="bench")
            t0 = time.perf_counter()
            plant = models.plant_set(vault)
            t1 = time.perf_counter()
            report = models.acceptance_test(detector, detector, plant=plant)
            t2 = time.perf_counter()
        finally:
            vault.lock()
    print(f"{len(plant.items)} reviewed {w}x{h} analyses: plant_set {t1 - t0:.2f} s, acceptance test (golden set "
          f"{report['golden']['images']} images + both models on the plant images) {t2 - t1:.1f} s")
    print(f"plant: {models.plant_summary(report['plant'])}")
    print(f"  {models.plant_difference_text(report['plant'])[:120]}")


if __name__ == "__main__":
    main()
