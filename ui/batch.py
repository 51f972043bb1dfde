"""Batches on the Analyze screen, without Streamlit: analyse and save several images one at a time, remember what
was done per image, summarise the batch and build its reports.

One image = one :class:`Item` (name, source, an identity for its content in this session, and a ``read`` function so
only one image's bytes are handled at a time). :func:`run_items` analyses each item, saves it in the vault with the
technician's labels, and reports progress; a bad image becomes an :class:`Outcome` with an error message and the
batch goes on. Saved outcomes keep their result WITHOUT the cleaned image (it is in the vault; the viewer loads the
one image being looked at), so a batch of 5 Mpx images does not hold 20 MB per image in the session.

:func:`run_key` says which analysis an item needs: the file's identity, the detector and the options (calibration
profile, thresholds). The labels (product, lot) are not part of it: they are recorded with each analysis when it is
saved, and changing them later does not analyse and save the same images again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from analysis.errors import CrystalQCError
from analysis.io import encode_png
from analysis.overlay import render_overlay
from analysis.pdf_report import THUMBNAIL_MAX_SIDE_PX, build_pdf_report
from analysis.pipeline import AnalysisOptions, Detector, analyze_bytes
from analysis.records import ImageResult
from analysis.report import particles_table, summary_table, to_csv_bytes
from analysis.stats import counted, pooled_sizes, summarize_particles
from ui.analyses import AnalysisInfo, clean_label, entry_name, save_analysis
from ui.archive import cleaned_from_png
from ui.settings import AppSettings
from vault import Vault

logger = logging.getLogger(__name__)

#: How the "no profile" choice is shown in the profile selectbox.
UNCALIBRATED_LABEL = "Uncalibrated (px)"
#: Analyses remembered per session (results without images: a few kB each); the oldest are forgotten first.
MAX_REMEMBERED = 200

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Labels:
    """What the technician says about a batch: product and lot (see ui.analyses.clean_label) and the calibration
    profile's name ("" = uncalibrated)."""

    product: str = ""
    lot: str = ""
    profile: str = ""


def check_labels(product: object, lot: object, *, profile: str = "") -> Labels:
    """Labels as stored (stripped). Raises ValueError with a message naming the bad field."""
    return Labels(product=clean_label(product, what="product"), lot=clean_label(lot, what="lot"),
                  profile=clean_label(profile, what="calibration profile"))


def profile_options(settings: AppSettings) -> list[str]:
    """Choices of the profile selectbox: the profile names, then "" (uncalibrated, shown as UNCALIBRATED_LABEL)."""
    return [p.name for p in settings.profiles] + [""]


def profile_label(name: str) -> str:
    """How a profile choice is shown: its name, or UNCALIBRATED_LABEL for ""."""
    return name or UNCALIBRATED_LABEL


def default_profile_index(settings: AppSettings, remembered: str | None = None) -> int:
    """Index in :func:`profile_options` of the profile to preselect: the one picked earlier in this session when it
    still exists, else the settings' default profile, else uncalibrated."""
    options = profile_options(settings)
    for name in (remembered, settings.default_profile):
        if name in options:  # a profile that exists, or "" (uncalibrated)
            return options.index(name)
    return len(options) - 1


@dataclass(frozen=True)
class Item:
    """One image to analyse. ``identity`` names its content within this session (an upload's file id, a sample's
    path and modification time); ``read()`` returns its bytes."""

    name: str
    source: str
    identity: str
    read: Callable[[], bytes]


@dataclass(frozen=True, eq=False)
class Outcome:
    """What became of one item. ``result`` is None when the image could not be analysed; ``info`` is None when it
    was not saved. ``error`` is the message for the technician (empty when all went well)."""

    name: str
    source: str
    result: ImageResult | None = None
    info: AnalysisInfo | None = None
    error: str = ""

    @property
    def n_counted(self) -> int:
        if self.result is None:
            return 0
        return len(counted(self.result.particles, include_border=self.result.include_border))

    def message(self) -> tuple[str, str] | None:
        """("error" | "warning", text) to show for this image, or None when there is nothing to say."""
        if self.result is None:
            detail = self.error.removeprefix(f"{self.name}: ")  # io's messages start with the name already
            return "error", f"{self.name} could not be analysed: {detail}"
        if self.info is None:
            return "error", (f"{self.name} was analysed but could not be saved in the vault: {self.error}. "
                             "Its result is shown below; analyse it again to save it.")
        if self.n_counted == 0:
            seen = len(self.result.particles)
            also = f" ({seen} other objects were seen and not counted)" if seen else ""
            return "warning", (f"No crystals or agglomerates were found in {self.name}{also}. The analysis is saved "
                               "as a zero count; check the image and the calibration profile.")
        return None


def run_key(identity: str, *, detector_id: str, options: AnalysisOptions) -> str:
    """A name for the analysis of one file with one detector and one set of options (hex, 32 chars)."""
    text = "\x1f".join((identity, detector_id, repr(options)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def run_items(items: Sequence[Item], *, detector: Detector, options: AnalysisOptions, vault: Vault, user: str,
              labels: Labels, progress: Progress | None = None) -> list[Outcome]:
    """Analyse and save each item in turn; one Outcome per item, in order.

    A file that cannot be read or analysed (typed errors, OSError) gives an Outcome with ``error`` and the next
    image is analysed. A result that cannot be saved (vault or disk errors) is kept with its cleaned image and an
    ``error``. Saved results are returned without their cleaned image (see :func:`cleaned_image`).
    progress: ``progress(done, total, name)`` before each image (``done`` images finished) and once at the end
    with ``done == total`` and name "".
    """
    outcomes: list[Outcome] = []
    total = len(items)
    for i, item in enumerate(items):
        if progress is not None:
            progress(i, total, item.name)
        outcomes.append(_run_one(item, detector=detector, options=options, vault=vault, user=user, labels=labels))
    if progress is not None:
        progress(total, total, "")
    return outcomes


def _run_one(item: Item, *, detector: Detector, options: AnalysisOptions, vault: Vault, user: str,
             labels: Labels) -> Outcome:
    try:
        data = item.read()
        result = analyze_bytes(data, name=item.name, detector=detector, options=options)
    except CrystalQCError as e:
        return Outcome(item.name, item.source, error=str(e))
    except OSError as e:
        return Outcome(item.name, item.source, error=f"the file cannot be read ({e.strerror or type(e).__name__})")
    except (ValueError, MemoryError, RuntimeError) as e:  # a library failing on a strange image: keep the batch going
        logger.warning("analysis failed unexpectedly: %s", type(e).__name__)
        return Outcome(item.name, item.source, error="the image could not be processed; check that it is a "
                                                     "micrograph in a supported format")
    try:
        info = save_analysis(vault, data, result, source=item.source, user=user, product=labels.product,
                             lot=labels.lot, profile=labels.profile)
    except (CrystalQCError, ValueError, OSError) as e:
        return Outcome(item.name, item.source, result=result, error=str(e) or type(e).__name__)
    return Outcome(item.name, item.source, result=dataclasses.replace(result, cleaned=None), info=info)


def remember(cache: dict[str, Outcome], key: str, outcome: Outcome) -> None:
    """Add ``outcome`` under ``key`` (newest last), forgetting the oldest beyond MAX_REMEMBERED."""
    cache.pop(key, None)
    cache[key] = outcome
    while len(cache) > MAX_REMEMBERED:
        cache.pop(next(iter(cache)))


def cleaned_image(outcome: Outcome, vault: Vault) -> np.ndarray | None:
    """The cleaned image of an analysed outcome: kept in memory for an unsaved one, else read from the vault
    (decrypted in memory). None when there is none.

    Raises VaultError (locked, damaged entry) and ArchiveFormatError from the vault read.
    """
    if outcome.result is None:
        return None
    if outcome.result.cleaned is not None:
        return outcome.result.cleaned
    if outcome.info is None:
        return None
    name = entry_name(outcome.info.analysis_id, "cleaned.png")
    return cleaned_from_png(vault.get(name)) if vault.exists(name) else None


# ------------------------------------------------------------------------------------------------ batch summary
def analysed(outcomes: Sequence[Outcome]) -> list[ImageResult]:
    return [o.result for o in outcomes if o.result is not None]


def overview_table(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """One row per image (failed ones too): status, counts, agglomerate %, number-weighted D10/D50/D90 and span
    (3 significant digits, in the image's unit; the CSVs have full precision), analysis id and message."""
    rows = []
    for o in outcomes:
        row = {"image": o.name, "status": "not analysed" if o.result is None else
               ("saved" if o.info is not None else "not saved"), "crystals": None, "agglomerates": None,
               "agglomerates %": None, "D10": None, "D50": None, "D90": None, "span": None, "unit": "",
               "analysis id": o.info.analysis_id if o.info else "", "message": (o.message() or ("", ""))[1]}
        if o.result is not None:
            r = o.result
            s = summarize_particles(r.particles, pixel_size_um=r.pixel_size_um, include_border=r.include_border)
            dv = s.dvalues()
            row.update({"crystals": s.n_crystals, "agglomerates": s.n_agglomerates,
                        "agglomerates %": _pct(s.agglomerate_fraction), "D10": _sig(dv.d10),
                        "D50": _sig(dv.d50), "D90": _sig(dv.d90), "span": _sig(dv.span),
                        "unit": s.unit})
        rows.append(row)
    return pd.DataFrame(rows, columns=["image", "status", "crystals", "agglomerates", "agglomerates %", "D10", "D50",
                                       "D90", "span", "unit", "analysis id", "message"])


def batch_csvs(outcomes: Sequence[Outcome]) -> dict[str, bytes]:
    """The batch's CSV reports (the CSV contract of analysis.report): particles of every analysed image, and the
    summary with one row per image plus the ``__batch__`` row."""
    results = analysed(outcomes)
    return {"particles": to_csv_bytes(particles_table(results)), "summary": to_csv_bytes(summary_table(results))}


def overlay_png(result: ImageResult, cleaned: np.ndarray, *, show: Sequence[str],
                max_side_px: int | None = None) -> bytes:
    """PNG bytes of the overlay (RGB) of ``result`` on ``cleaned`` with the classes in ``show``."""
    rgb = render_overlay(cleaned, result.particles, include_border=result.include_border, show=show,
                         max_side_px=max_side_px)
    return encode_png(rgb[..., ::-1])


def report_pdf(outcomes: Sequence[Outcome], *, operator: str, cleaned: np.ndarray | None = None,
               created: datetime | None = None) -> bytes:
    """The one-page PDF report of one outcome (with its overlay when ``cleaned`` is given) or of a batch (pooled).

    Product, lot and profile come from the saved analyses (a note when they differ), the time from the first one;
    ``operator`` is who asks for the report.
    Raises ValueError when nothing was analysed.
    """
    done = [o for o in outcomes if o.result is not None]
    if not done:
        raise ValueError("nothing was analysed, so there is nothing to report")
    infos = [o.info for o in done if o.info is not None]
    first = infos[0] if infos else None
    when = created or (_parse_time(first.created) if first else None) or datetime.now(timezone.utc)
    picture = None
    if len(done) == 1 and cleaned is not None:
        picture = overlay_png(done[0].result, cleaned, show=("crystal", "agglomerate", "border", "excluded"),
                              max_side_px=THUMBNAIL_MAX_SIDE_PX)
    return build_pdf_report([o.result for o in done], overlay_png=picture, operator=operator,
                            product=_common(i.product for i in infos), lot=_common(i.lot for i in infos),
                            profile=_common(i.profile for i in infos), created=when,
                            analysis_ids=[i.analysis_id for i in infos])


def _common(values: Iterable[str]) -> str:
    """The one value all saved analyses share, "" when there are none, else a note that they differ."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) <= 1:
        return distinct[0] if distinct else ""
    return f"{len(distinct)} different values (see History)"


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _sig(x: float) -> float | None:
    """``x`` to 3 significant digits (as the metrics show it), None when not finite."""
    return float(f"{x:.3g}") if math.isfinite(x) else None


def _pct(x: float) -> float | None:
    return round(100.0 * x, 1) if math.isfinite(x) else None
