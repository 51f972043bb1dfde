"""First inference of an untrusted ONNX model in a separate, resource-limited process.

:func:`run_first_inference` starts ``sys.executable -I -B -c <bootstrap>`` (isolated mode: no PYTHONPATH, no user
site, no .pyc writes) with an almost empty environment. The child, before it imports numpy or onnxruntime, sets

* ``RLIMIT_AS`` (address space) to ``memory_mb``: an allocation beyond it fails inside the child instead of
  exhausting the machine;
* ``RLIMIT_CPU`` to the wall timeout + a margin (SIGXCPU, then SIGKILL): a backstop should the parent die;
* ``RLIMIT_FSIZE`` = 0 (no file can be written) and ``RLIMIT_CORE`` = 0 (no core dump).

It then reads the model bytes from its stdin (never a temporary file), runs ``onnx.checker`` (with shape inference),
creates a one-thread onnxruntime CPU session and runs one blank (grey 114/255) and one random input of shape
(1, 3, H, W), and writes a one-line JSON report to a private copy of its stdout (fd 1 itself is pointed at stderr so
that library output cannot corrupt the report). The parent enforces the wall timeout (kills the child) and turns
every failure into :class:`analysis.errors.ModelPackageError`: "time limit", "memory limit", "crashed (signal ...)",
or the checker/runtime error. The child's stderr is discarded (a model cannot flood the app's memory through it).

Platforms without POSIX resource limits (Windows) are refused: :func:`sandbox_available` is False there. RLIMIT_AS
is enforced by Linux; macOS does not enforce it reliably (untested).

This module imports only the standard library at top level, so the child applies its limits before any heavy import.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.errors import ModelPackageError

logger = logging.getLogger(__name__)

_ROOT = str(Path(__file__).resolve().parent.parent)
#: Extra CPU seconds the child may use beyond the wall timeout before the kernel stops it (parent gone).
CPU_MARGIN_S = 5
#: Largest model the child accepts on stdin (bytes).
MAX_MODEL_BYTES = 512 * 1024 * 1024
#: Largest report (bytes) the parent reads back.
_MAX_REPORT_BYTES = 64 * 1024
_EXIT_REPORTED_ERROR = 3
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); from detection.sandbox import child_main; "
    "raise SystemExit(child_main(sys.argv[2:]))"
)
_GREY = 114.0 / 255.0  # the letterbox padding value


@dataclass(frozen=True)
class SandboxReport:
    """Outcome of a first inference that completed.

    ``input_shape``: the (1, 3, H, W) shape fed. ``output_shapes``: one tuple per model output. ``load_s``: session
    creation; ``blank_s``/``random_s``: one run each (seconds). ``outputs_finite``: no NaN/inf in any output.
    ``peak_rss_mb``: the child's peak resident memory (MiB).
    """

    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    load_s: float
    blank_s: float
    random_s: float
    outputs_finite: bool
    peak_rss_mb: float


def sandbox_available() -> bool:
    """True where the child's resource limits can be set (POSIX ``resource``; tested on Linux)."""
    return importlib.util.find_spec("resource") is not None and hasattr(signal, "SIGXFSZ")


def _clean(text: str, limit: int = 200) -> str:
    """A short, printable excerpt of a message that may come from an untrusted model."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() and ord(c) < 128 else "?" for c in text)
    return text[:limit] + ("..." if len(text) > limit else "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_first_inference(
    model_bytes: bytes,
    *,
    timeout_s: float = 60,
    memory_mb: int = 2048,
    input_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> SandboxReport:
    """Load and run the model once in a child process with limits (module docstring); the caller stays unharmed.

    ``input_size`` (height, width) is used where the model's input has symbolic spatial dimensions.
    Raises ModelPackageError when the child exceeds the wall time ``timeout_s`` (killed), runs out of its
    ``memory_mb`` address space, crashes on a signal, or reports a checker/load/run failure; ValueError for
    non-positive limits.
    """
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout_s and memory_mb must be positive, got {timeout_s}, {memory_mb}")
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)) or len(model_bytes) == 0:
        raise ModelPackageError("The model file is empty; rebuild the model package.")
    if len(model_bytes) > MAX_MODEL_BYTES:
        raise ModelPackageError(f"The model file is larger than {MAX_MODEL_BYTES // 2**20} MiB.")
    if not sandbox_available():
        raise ModelPackageError(
            "New models cannot be tried safely on this operating system (no process resource limits); install "
            "model packages on a Linux PC."
        )
    h, w = input_size if input_size is not None else (0, 0)
    cpu_s = math.ceil(timeout_s) + CPU_MARGIN_S
    cmd = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, _ROOT, str(int(memory_mb)), str(cpu_s), str(int(h)),
           str(int(w)), str(int(seed))]
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    start = time.perf_counter()
    # stderr goes nowhere: a model that makes a library log without end must not fill the app's memory.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            cwd=_ROOT, start_new_session=True, close_fds=True)
    try:
        out, _ = proc.communicate(input=bytes(model_bytes), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise ModelPackageError(
            f"The model was killed: time limit ({timeout_s:g} s) exceeded on its first inference. It is too slow "
            "for this PC or built to hang; the package is refused."
        ) from None
    wall_s = time.perf_counter() - start
    rc = proc.returncode
    if rc < 0:
        name = _signal_name(-rc)
        if -rc in (signal.SIGXCPU, signal.SIGKILL):
            limit = "CPU time limit" if -rc == signal.SIGXCPU else "CPU time or memory limit"
            raise ModelPackageError(
                f"The model was killed ({name}): {limit} exceeded on its first inference; the package is refused."
            )
        raise ModelPackageError(
            f"The model crashed the inference process ({name}) on its first inference (memory limit "
            f"{memory_mb} MiB); the package is refused and the app is unaffected."
        )
    report = _read_report(out)
    if rc == _EXIT_REPORTED_ERROR or "error" in report:
        kind, detail = str(report.get("error", "unknown")), _clean(report.get("detail", ""))
        if kind == "memory":
            raise ModelPackageError(
                f"The model was stopped: memory limit ({memory_mb} MiB) exceeded on its first inference ({detail}); "
                "the package is refused."
            )
        what = {"checker": "fails the ONNX checker", "load": "cannot be loaded by onnxruntime",
                "run": "fails to run", "input": "has an unusable input"}.get(kind, "failed in the sandbox")
        raise ModelPackageError(f"The model {what}: {detail}")
    if rc != 0:
        raise ModelPackageError(f"The inference process ended with exit code {rc}; the package is refused.")
    try:
        result = SandboxReport(
            input_shape=tuple(int(v) for v in report["input_shape"]),
            output_shapes=tuple(tuple(int(v) for v in s) for s in report["output_shapes"]),
            load_s=float(report["load_s"]),
            blank_s=float(report["blank_s"]),
            random_s=float(report["random_s"]),
            outputs_finite=bool(report["outputs_finite"]),
            peak_rss_mb=float(report["peak_rss_mb"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelPackageError("The inference process returned an unreadable report; the package is refused.") from e
    logger.info("first inference ok in %.2f s: outputs %s", wall_s, result.output_shapes)
    return result


def _read_report(out: bytes) -> dict:
    lines = out[-_MAX_REPORT_BYTES:].strip().splitlines()
    if not lines:
        return {}
    try:
        report = json.loads(lines[-1])
    except (ValueError, RecursionError):
        return {}
    return report if isinstance(report, dict) else {}


# ------------------------------------------------------------------------------------------------ child process


def _set_limits(memory_mb: int, cpu_s: int) -> None:
    import resource

    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 2))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write to a file then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _kind_of(exc: BaseException, default: str) -> str:
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "bad_alloc" in text or "failed to allocate" in text or "out of memory" in text:
        return "memory"
    return default


def child_main(argv: list[str]) -> int:
    """Entry point of the child (argv: memory_mb cpu_s height width seed). Returns the exit code."""
    memory_mb, cpu_s, h, w, seed = (int(v) for v in argv)
    _set_limits(memory_mb, cpu_s)
    report_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the report
    report = _child_work(h, w, seed)
    with os.fdopen(report_fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(report) + "\n")
    return _EXIT_REPORTED_ERROR if "error" in report else 0


def _child_work(h: int, w: int, seed: int) -> dict:
    stage = "load"
    try:
        data = sys.stdin.buffer.read(MAX_MODEL_BYTES + 1)
        if len(data) > MAX_MODEL_BYTES:
            return {"error": "load", "detail": "model too large"}
        import numpy as np
        import onnx.checker
        from detection.ort import ort

        stage = "checker"
        onnx.checker.check_model(data, full_check=True)
        stage = "load"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        t0 = time.perf_counter()
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t0
        del data
        stage = "input"
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            return {"error": "input", "detail": "the model needs exactly one 4-D image input"}
        dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        dims = [d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape]
        shape = (1, 3, dims[2] or h, dims[3] or w)
        if min(shape) <= 0:
            return {"error": "input", "detail": "the model input size is dynamic and no size was given"}
        stage = "run"
        blank = np.full(shape, _GREY, dtype=dtype)
        rand = np.random.default_rng(seed).random(shape, dtype=np.float32).astype(dtype)
        times, shapes, finite = [], [], True
        for x in (blank, rand):
            t0 = time.perf_counter()
            outs = session.run(None, {inputs[0].name: x})
            times.append(time.perf_counter() - t0)
            shapes = [list(np.shape(o)) for o in outs]
            finite = finite and all(bool(np.isfinite(np.asarray(o, dtype=np.float64)).all()) for o in outs)
    except Exception as e:  # any failure of the untrusted model is reported, never raised
        detail = f"{type(e).__name__}: {str(e)[:500]}" if str(e) else type(e).__name__
        return {"error": _kind_of(e, stage), "detail": detail}
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"input_shape": list(shape), "output_shapes": shapes, "load_s": load_s, "blank_s": times[0],
            "random_s": times[1], "outputs_finite": finite, "peak_rss_mb": peak_mb}
