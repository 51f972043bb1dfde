"""Where an analysis spends its time: stage clocks that are off unless a caller asks for them.

    with stage_clock() as seconds:
        analyze_bytes(data, name="x.png", detector=detector)
    # seconds == {"load": 0.05, "clean": 0.08, "detect": 0.60, "detect.outlines": 0.14, "focus": 0.03, ...}

The pipeline marks its stages with :func:`stage`; outside a :func:`stage_clock` block that costs one context-variable
lookup per stage and records nothing, so the app and the CLI pay nothing measurable. A stage that runs twice (the
enlarged second pass of a small-crystal image) adds up. Names with a dot are parts of the stage before the dot
(``detect.outlines`` is inside ``detect``), so the stages without a dot add up to (almost) the whole analysis.
Made for ``bench/bench_pipeline.py``, which prints the stages; times are wall-clock seconds of the calling thread (work it hands to
helper processes or threads counts while it waits for them).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_CLOCK: ContextVar[dict[str, float] | None] = ContextVar("crystalqc_stage_clock", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the wall time of the block to ``name`` in the active :func:`stage_clock`; nothing when none is active."""
    clock = _CLOCK.get()
    if clock is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        clock[name] = clock.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def stage_clock() -> Iterator[dict[str, float]]:
    """Collect the stages run inside the block (this thread / context) into a new dict of seconds per stage name."""
    clock: dict[str, float] = {}
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)
