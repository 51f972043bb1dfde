"""Per-object work spread over the CPU cores: helper processes for mask refinement.

After the network, the pipeline refines every box to a mask (:func:`analysis.segment.refine_mask`, ~1-2 ms of
Python per box: 0.2 s for a 2592x1944 image with ~350 boxes, 0.6 s for a dense one). Python threads do not help
(the per-box work holds the GIL; measured 0.95-1.0x), so :func:`map_boxes` hands every other box to helper
processes while the calling thread does its own share, and returns the results in box order, exactly as a
sequential loop would (each box is refined independently from the same image).

- Helpers: ``min(usable cores - 1, MAX_HELPERS)`` processes started with the ``spawn`` method (the app's threads
  are never forked; the same on Windows), created on first use or by :func:`warm_up`, shared by all callers
  (``ProcessPoolExecutor`` is thread-safe), stopped at interpreter exit. None on a 1-core machine or with
  ``CRYSTALQC_HELPERS=0``. As with any ``spawn`` start, a helper imports the main script again: a script that
  builds a model detector must guard its entry point (``if __name__ == "__main__":``); otherwise the helpers
  fail to start and the work stays in this process (with the warning below). ``python -m ...`` entry points,
  ``streamlit run`` and pytest need nothing.
- A helper gets only the pixels its boxes need: ``fn`` declares how far around a box it reads (``reach_px``), the
  helper pastes those windows into an otherwise empty image of the full size and calls ``fn`` on it, so ``fn``
  sees exactly what it would read from the real image (a 5 MP image is 20 MB; the windows of ~180 boxes ~3 MB).
  They travel through a pipe (pickled), never through a named shared-memory object or a file: pixels of a
  decrypted image exist only in process memory.
- Fewer than MIN_BOXES boxes are refined in-process.
- An exception raised by ``fn`` in a helper is re-raised here as it is. If a helper dies or cannot be reached
  (``BrokenProcessPool``, pickling error), the helpers are switched off for this process with a warning and the
  remaining boxes are refined in-process: the result is the same, only slower.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable: number of helper processes (0 = refine in-process only); default from the cores.
HELPERS_ENV = "CRYSTALQC_HELPERS"
#: Most helper processes (each holds its own numpy/OpenCV/scikit-image: ~165 MB resident, measured).
MAX_HELPERS = 3
#: Fewest boxes worth handing out. Measured on a 2592x1944 image, 2 cores, one helper (medians of 15, ms, sequential
#: -> shared): 8 boxes 6.1 -> 4.6, 16: 12.6 -> 8.2, 48: 35 -> 20, 96: 65 -> 37; below 8 the gain is within noise.
MIN_BOXES = 8

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_disabled_reason: str | None = None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def helper_count() -> int:
    """Helper processes :func:`map_boxes` uses now (0 = in-process only)."""
    if _disabled_reason is not None:
        return 0
    raw = os.environ.get(HELPERS_ENV, "").strip()
    if raw:
        try:
            return max(0, min(int(raw), MAX_HELPERS))
        except ValueError:
            logger.warning("%s=%r is not a number; using the default", HELPERS_ENV, raw)
    return max(0, min(usable_cores() - 1, MAX_HELPERS))


def _get_pool(n: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            _pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
            _pool_size = n
        return _pool


def _noop() -> int:
    return os.getpid()


def warm_up() -> None:
    """Start the helper processes now (they take ~1 s to import numpy/OpenCV) without waiting for them."""
    n = helper_count()
    if n:
        pool = _get_pool(n)
        for _ in range(n):
            pool.submit(_noop)


def _disable(reason: str) -> None:
    global _pool, _disabled_reason
    with _lock:
        _disabled_reason = reason
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
    logger.warning("helper processes switched off (%s); refining in this process only", reason)


def _refine_share(fn: Callable[[np.ndarray, Any], T], image: np.ndarray, boxes: Sequence[Any]) -> list[T]:
    return [fn(image, b) for b in boxes]


def box_windows(shape: tuple[int, int], boxes: Sequence[Any], reach_px: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) integer windows, clipped to ``shape`` (H, W), holding every pixel within ``reach_px`` of
    each float xyxy box (its corners rounded outwards)."""
    h, w = shape
    out = []
    for b in boxes:
        x0, y0 = int(np.floor(float(b[0]))) - reach_px, int(np.floor(float(b[1]))) - reach_px
        x1, y1 = int(np.ceil(float(b[2]))) + reach_px, int(np.ceil(float(b[3]))) + reach_px
        out.append((min(max(0, x0), w), min(max(0, y0), h), min(max(0, x1), w), min(max(0, y1), h)))
    return out


def _patches(image: np.ndarray, boxes: Sequence[Any], reach_px: int) -> list[tuple[int, int, np.ndarray]]:
    return [(x0, y0, np.ascontiguousarray(image[y0:y1, x0:x1]))
            for x0, y0, x1, y1 in box_windows(image.shape[:2], boxes, reach_px)]


def _refine_patched(fn: Callable[[np.ndarray, Any], T], shape: tuple[int, ...], dtype: str,
                    patches: Sequence[tuple[int, int, np.ndarray]], boxes: Sequence[Any]) -> list[T]:
    """In a helper: rebuild the pixels the boxes need in an empty full-size image, then refine."""
    image = np.zeros(shape, np.dtype(dtype))
    for x0, y0, patch in patches:
        image[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
    return _refine_share(fn, image, boxes)


def map_boxes(fn: Callable[[np.ndarray, Any], T], image: np.ndarray, boxes: Sequence[Any], *,
              reach_px: int) -> list[T]:
    """``[fn(image, b) for b in boxes]``, with the work shared between this thread and the helper processes.

    ``fn`` must be a module-level function (it is pickled by reference) that does not modify ``image`` and reads
    only the pixels within ``reach_px`` of the box it is given (and the image's shape and dtype).
    """
    boxes = list(boxes)
    image = np.asarray(image)
    n = helper_count() if len(boxes) >= MIN_BOXES else 0
    if n == 0:
        return _refine_share(fn, image, boxes)
    shares = [list(range(k, len(boxes), n + 1)) for k in range(n + 1)]  # interleaved: similar work per share
    futures: list[Future | None] = []
    try:
        pool = _get_pool(n)
        for share in shares[1:]:
            mine = [boxes[i] for i in share]
            futures.append(pool.submit(_refine_patched, fn, image.shape, image.dtype.str,
                                       _patches(image, mine, reach_px), mine))
    except (BrokenProcessPool, RuntimeError, OSError) as e:  # RuntimeError: pool shut down meanwhile
        _disable(f"could not start them: {e}")
        futures += [None] * (n - len(futures))
    results: list[Any] = [None] * len(boxes)
    for i, r in zip(shares[0], _refine_share(fn, image, [boxes[i] for i in shares[0]])):
        results[i] = r
    for share, fut in zip(shares[1:], futures):
        try:
            if fut is None:
                raise BrokenProcessPool("no helper")
            done = fut.result()
        except (BrokenProcessPool, CancelledError, OSError, pickle.PicklingError) as e:
            if _disabled_reason is None and not isinstance(e, CancelledError):  # cancelled: pool replaced/stopped
                _disable(f"a helper failed: {e}")
            done = _refine_share(fn, image, [boxes[i] for i in share])
        for i, r in zip(share, done):
            results[i] = r
    return results
