"""Whole-pipeline speed: median seconds per image (load -> clean -> detect -> exclude -> measure -> tables).

    python bench/bench_pipeline.py [--detector classical|onnx|auto|hybrid ...] [--model FILE ...] [--repeats 5]

``--detector`` and ``--model`` may be repeated; each ``--model`` (a ``.cqcpkg``, verified like the shipped package,
or a bare ``.onnx``) adds one ONNX detector. Default: the classical detector and the shipped model. Images are
rendered by the synthetic generator (medium difficulty) at 1280x1024 and 2592x1944 and encoded as PNG, so decoding
is part of the time. The detectors take turns on each image (the machine is shared and noisy: turns spread the
noise evenly), after one warm-up image per size. Prints per size and detector the median and minimum wall time, the
median CPU time of this process (less sensitive to other jobs; with N threads it can reach N x wall) and the mean
count; then each detector's median relative to the first, and how its time grows with the number of particles on an
image (least-squares line over the images: seconds at no particle plus milliseconds per particle found, and the
slowest image), because the rendered scenes range from a few dozen to a few hundred crystals and a dense slurry
image costs more than the median. Last, per size and detector, the median seconds of each stage of the pipeline
(``analysis.timing``: load, clean, detect with the model passes and the outlines inside it, focus, exclusions,
measure, and the rest: reports, records), so speed work can start from where the time goes. Never asserts on time.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from analysis.pipeline import AnalysisOptions, analyze_bytes, make_detector  # noqa: E402
from analysis.report import particles_table, summary_table  # noqa: E402
from analysis.timing import stage_clock  # noqa: E402
from detection.synthetic import render_image  # noqa: E402

SIZES = ((1280, 1024), (2592, 1944))


def describe(detector) -> str:
    """Label plus, for a model, how it runs (fixed-size tiles or whole image) and its threads."""
    model = getattr(detector, "model", None)
    model = getattr(model, "model", model)  # HybridDetector -> OnnxPipelineDetector -> OnnxDetector
    if model is None or not hasattr(model, "dynamic_input"):
        return detector.label
    how = "dynamic size: whole image" if model.dynamic_input else f"fixed {model.meta.imgsz[0]} px tiles"
    return f"{detector.label} ({how}, {model.threads} threads)"


def per_particle(seconds: list[float], particles: list[int]) -> str:
    """One line: the least-squares line seconds = a + b * particles over the images, and the slowest image.

    ``particles``: every particle the pipeline measured on the image (counted and excluded: each one is refined,
    scored and measured). The line needs two different counts; otherwise only the slowest image is given.
    """
    slowest = max(range(len(seconds)), key=seconds.__getitem__)
    tail = f"slowest image {seconds[slowest]:.3f} s ({particles[slowest]} particles)"
    if len(set(particles)) < 2:
        return tail
    b, a = np.polyfit(np.asarray(particles, float), np.asarray(seconds, float), 1)
    return (f"time ~ {a:.3f} s + {b * 1000:.2f} ms x particles ({min(particles)}-{max(particles)} per image); "
            + tail)


#: The order stages are printed in (the pipeline's order); unknown names go last.
_ORDER = {n: i for i, n in enumerate(("load", "exposure", "clean", "resize", "detect", "detect.network",
                                      "detect.outlines", "focus", "exclude", "measure"))}


def stage_line(clocks: list[dict[str, float]], wall: list[float]) -> str:
    """Median seconds per stage over the images (``analysis.timing`` names; ``a.b`` is part of ``a`` and is shown
    inside it), then ``other``: the median of each image's wall time less its top-level stages."""
    names = sorted({n for c in clocks for n in c},
                   key=lambda n: (_ORDER.get(n, _ORDER.get(n.split(".")[0], len(_ORDER)) + 0.5), n))
    med = {n: statistics.median(c.get(n, 0.0) for c in clocks) for n in names}
    other = statistics.median(w - sum(v for n, v in c.items() if "." not in n) for c, w in zip(clocks, wall))
    parts = []
    for n in (n for n in names if "." not in n):
        inner = [f"{m.split('.', 1)[1]} {med[m]:.3f}" for m in names if m.startswith(n + ".")]
        parts.append(f"{n} {med[n]:.3f}" + (f" ({', '.join(inner)})" if inner else ""))
    return " · ".join(parts + [f"other {other:.3f}"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", action="append", default=None, help="repeatable; default classical + onnx")
    ap.add_argument("--model", action="append", type=Path, default=[], help="repeatable: .cqcpkg or .onnx file")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--also-without-candidates", action="store_true",
                    help="each --model also without its confirmed candidates (OnnxDetectorOptions.candidate_threshold 0)")
    args = ap.parse_args()
    options = AnalysisOptions()
    kinds = args.detector if args.detector is not None else ([] if args.model else ["classical", "onnx"])
    detectors = [make_detector(k, options=options) for k in kinds]
    detectors += [make_detector("onnx", model_path=p, options=options) for p in args.model]
    names = [f"{k}" for k in kinds] + [f"--model {p.name}" for p in args.model]
    if args.also_without_candidates:
        for p, det in list(zip(args.model, detectors[len(kinds):])):
            detectors.append(dataclasses.replace(det, options=dataclasses.replace(det.options, candidate_threshold=0.0)))
            names.append(f"{p.name} no candidates")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, det in zip(names, detectors):
        print(f"  {name}: {describe(det)}")
    print(f"{'size':>11} {'detector':<28} {'median s':>9} {'min s':>7} {'cpu s':>7} {'particles':>9}")
    for w, h in SIZES:
        pngs = []
        for seed in range(args.repeats):
            image, _truth = render_image(1000 + seed, size=(w, h), difficulty="medium")
            ok, png = cv2.imencode(".png", image)
            pngs.append(png.tobytes())
        wall = [[] for _ in detectors]
        cpu = [[] for _ in detectors]
        counts = [0 for _ in detectors]
        measured = [[] for _ in detectors]
        stages = [[] for _ in detectors]
        for det in detectors:  # warm-up (first-run allocations of a new input size)
            analyze_bytes(pngs[0], name="warmup.png", detector=det, options=options)
        for seed, data in enumerate(pngs):
            for i, det in enumerate(detectors):
                t0, c0 = time.perf_counter(), time.process_time()
                with stage_clock() as clock:
                    result = analyze_bytes(data, name=f"bench_{seed}.png", detector=det, options=options)
                particles_table([result])
                summary_table([result])
                wall[i].append(time.perf_counter() - t0)
                stages[i].append(clock)
                cpu[i].append(time.process_time() - c0)
                counts[i] += sum(p.counted for p in result.particles)
                measured[i].append(len(result.particles))
        medians = [statistics.median(t) for t in wall]
        for i, name in enumerate(names):
            print(f"{w:>5}x{h:<5} {name[:28]:<28} {medians[i]:9.3f} {min(wall[i]):7.3f} "
                  f"{statistics.median(cpu[i]):7.3f} {counts[i] / len(pngs):9.0f}")
        if len(detectors) > 1:
            ratios = ", ".join(f"{n}: {m / medians[0]:.2f}" for n, m in zip(names[1:], medians[1:]))
            print(f"{'':>11} median time relative to {names[0]}: {ratios}")
        for i, name in enumerate(names):
            print(f"{'':>11} {name[:28]:<28} {per_particle(wall[i], measured[i])}")
        for i, name in enumerate(names):
            print(f"{'':>11} {name[:28]:<28} stages, median s: {stage_line(stages[i], wall[i])}")


if __name__ == "__main__":
    main()
