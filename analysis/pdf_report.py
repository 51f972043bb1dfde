"""One-page PDF report of an analysis (one image or a batch), drawn with fpdf2 alone (no browser, no plotting stack).

The page (A4 portrait): title and time; a block of labels (images, product, lot, operator, analysis ids, model,
calibration, border rule); a thumbnail of the overlay beside the summary table (counts, agglomerate fraction,
excluded objects by reason, number-weighted D10/D50/D90 and span, volume-weighted D50, density); a histogram of the
counted particles' ECD (number-weighted %, bars drawn as rectangles, D10/D50/D90 marked); for a batch, one line per
image; the statistics' warnings. Sizes are in µm when every image is calibrated, else in px, and the unit is printed
next to every value.

Text from users (product, lot, file names) is untrusted: control characters are replaced, every value is cut to the
width it has on the page, and characters the font cannot encode are replaced, so no label can break the page or the
PDF. A DejaVu Sans font found on the system (see :data:`FONT_CANDIDATES`) is embedded for full Unicode; without one
the PDF core font Helvetica is used and text outside Latin-1 is shown as "?".
"""
from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from analysis.records import ImageResult
from analysis.stats import (DValues, SizeSummary, histogram, pooled_sizes, summarize_particles, summarize_result,
                            summarize_results)

#: Where a Unicode TTF font is looked for (regular, bold); the first pair whose regular file exists is used.
FONT_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
    ("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf", "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf"),
)

#: The longest side (px) of the overlay thumbnail embedded in the PDF (keeps the file small for 5 Mpx images).
THUMBNAIL_MAX_SIDE_PX = 1200
THUMBNAIL_JPEG_QUALITY = 85
#: Per-image lines listed for a batch; the rest are summed up in one line.
MAX_BATCH_ROWS = 10
HIST_BINS = 20

_PAGE_W, _PAGE_H, _MARGIN = 210.0, 297.0, 12.0
_GREEN, _GREY, _DARK = (0, 158, 115), (110, 110, 110), (40, 40, 40)


def build_pdf_report(results: ImageResult | Sequence[ImageResult], *, overlay_png: bytes | None = None,
                     model_version: str | None = None, profile: str = "", operator: str = "", product: str = "",
                     lot: str = "", created: datetime | None = None, analysis_ids: Sequence[str] = (),
                     unicode_font: bool = True) -> bytes:
    """A one-page PDF (bytes) reporting ``results`` (one ImageResult, or several pooled as a batch).

    overlay_png: PNG/JPEG bytes of the overlay (or any picture) to show as a thumbnail; None shows none.
    model_version: what found the objects (default: the results' ``detector`` labels, e.g. "onnx:crystal 1.0.0").
    profile: the calibration profile's name ("" for none); the µm/px printed come from the results themselves.
    operator/product/lot: labels printed as given (cleaned and cut to fit). created: the analysis time (aware
    datetimes are shown in UTC; default now). analysis_ids: the vault ids, printed (the first few) when given.
    unicode_font: embed a DejaVu font when one is found (False: always the core font, Latin-1 text).

    Raises ValueError for an empty list of results or a non-positive pixel size (as analysis.stats does) and for
    overlay bytes that are not a readable picture.
    """
    items = [results] if isinstance(results, ImageResult) else list(results)
    if not items:
        raise ValueError("a report needs at least one result")
    summary = _summary(items)
    created = created or datetime.now(timezone.utc)
    if created.tzinfo is not None:
        created = created.astimezone(timezone.utc)
    thumbnail = _thumbnail(overlay_png) if overlay_png is not None else None

    pdf = _Page(unicode_font=unicode_font)
    pdf.set_title("Crystal QC analysis report")
    pdf.set_creator("Crystal QC")
    pdf.set_creation_date(created if created.tzinfo else created.replace(tzinfo=timezone.utc))
    pdf.add_page()

    calibrated = summary.number_um is not None
    unit = summary.unit
    # Title line.
    pdf.font(15, bold=True)
    pdf.set_xy(_MARGIN, _MARGIN)
    pdf.text_cell(120, 8, "Crystal QC analysis report")
    pdf.font(9)
    pdf.set_text_color(*_GREY)
    pdf.set_xy(_PAGE_W - _MARGIN - 66, _MARGIN + 1)
    pdf.text_cell(66, 6, f"{created:%Y-%m-%d %H:%M:%S} {'UTC' if created.tzinfo else ''}".strip(), align="R")
    pdf.set_text_color(0, 0, 0)

    # Labels block.
    detectors = model_version if model_version is not None else "; ".join(dict.fromkeys(r.detector for r in items))
    labels = [
        ("Image" if len(items) == 1 else "Images", _names(items)),
        ("Product", product or "-"),
        ("Lot", lot or "-"),
        ("Operator", operator or "-"),
        ("Analysis id" if len(analysis_ids) <= 1 else "Analysis ids", _ids(analysis_ids)),
        ("Model / detector", detectors or "-"),
        ("Calibration", _calibration(items, profile)),
        ("Border rule", _border_rule(items)),
    ]
    y = _MARGIN + 11
    for label, value in labels:
        pdf.set_xy(_MARGIN, y)
        pdf.font(9, bold=True)
        pdf.text_cell(34, 5, label)
        pdf.font(9)
        pdf.text_cell(_PAGE_W - 2 * _MARGIN - 34, 5, value)
        y += 5.2
    y += 3

    # Thumbnail (left) and summary table (right).
    top = y
    box_w, box_h = 92.0, 72.0
    if thumbnail is not None:
        with Image.open(thumbnail) as probe:
            w_px, h_px = probe.size
        thumbnail.seek(0)
        scale = min(box_w / w_px, box_h / h_px)
        w, h = w_px * scale, h_px * scale
        pdf.image(thumbnail, x=_MARGIN, y=top, w=w, h=h)
        pdf.set_draw_color(*_GREY)
        pdf.rect(_MARGIN, top, w, h)
        pdf.set_xy(_MARGIN, top + h + 0.5)
        pdf.font(7)
        pdf.set_text_color(*_GREY)
        pdf.text_cell(box_w, 4, "green crystal · orange agglomerate · blue border · red excluded")
        pdf.set_text_color(0, 0, 0)
    else:
        pdf.set_xy(_MARGIN, top + box_h / 2 - 3)
        pdf.font(9)
        pdf.set_text_color(*_GREY)
        pdf.text_cell(box_w, 6, "No overlay image" if len(items) == 1 else
                      f"{len(items)} images: each image's overlay is in its own report", align="C")
        pdf.set_text_color(0, 0, 0)
    _summary_table(pdf, summary, unit=unit, n_images=len(items), x=_MARGIN + box_w + 6, y=top,
                   w=_PAGE_W - 2 * _MARGIN - box_w - 6)
    y = top + box_h + 5
    pdf.set_xy(_MARGIN, y)
    pdf.font(8)
    reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.excluded_by_reason.items())
    pdf.text_cell(_PAGE_W - 2 * _MARGIN, 4.5, f"Not counted, by reason: {reasons or 'none'}")
    y += 8

    # Histogram.
    sizes = pooled_sizes(items)  # µm exactly when the summary is calibrated
    dv = summary.dvalues()
    _histogram(pdf, sizes, dv, unit=unit, x=_MARGIN, y=y, w=_PAGE_W - 2 * _MARGIN, h=58)
    y += 58 + 6

    # Batch lines, then warnings, within the page (room for up to 3 warnings is kept).
    bottom = _PAGE_H - _MARGIN - 6
    if len(items) > 1:
        room = bottom - y - 4.5 * min(3, len(summary.warnings))
        y = _batch_rows(pdf, items, unit=unit, calibrated=calibrated, y=y, max_rows=int((room - 19) // 4.4))
    if summary.warnings:
        pdf.font(8)
        pdf.set_text_color(150, 60, 0)
        for warning in summary.warnings:
            if y + 4.5 > bottom:
                break
            pdf.set_xy(_MARGIN, y)
            pdf.text_cell(_PAGE_W - 2 * _MARGIN, 4.5, f"Note: {warning}")
            y += 4.5
        pdf.set_text_color(0, 0, 0)

    # Footer.
    pdf.font(7)
    pdf.set_text_color(*_GREY)
    pdf.set_xy(_MARGIN, _PAGE_H - _MARGIN - 4)
    pdf.text_cell(_PAGE_W - 2 * _MARGIN, 4,
                  f"Crystal QC · model: {detectors or '-'} · operator: {operator or '-'} · "
                  f"{created:%Y-%m-%d %H:%M}", align="C")
    return bytes(pdf.output())


# --- page helpers --------------------------------------------------------------------------------------------------


class _Page(FPDF):
    """An A4 page with one font family (DejaVu when available, else Helvetica) and text that always fits."""

    def __init__(self, *, unicode_font: bool) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.set_auto_page_break(False)  # one page: everything is placed and cut to fit
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.unicode = False
        self.family = "helvetica"
        fonts = _find_font() if unicode_font else None
        if fonts is not None:
            regular, bold = fonts
            self.add_font("dejavu", "", regular)
            self.add_font("dejavu", "B", bold)
            self.family, self.unicode = "dejavu", True

    def font(self, size: float, *, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)

    def safe(self, text: object) -> str:
        """Printable text: control/format characters become spaces; outside Latin-1 -> "?" for the core font."""
        out = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") else c for c in str(text))
        out = out.encode("utf-8", "replace").decode("utf-8")
        if self.unicode:  # glyphs the embedded font lacks would print as nothing: show "?" as the core font does
            cmap = self.current_font.cmap
            out = "".join(c if c == " " or ord(c) in cmap else "?" for c in out)
        else:
            out = out.encode("latin-1", "replace").decode("latin-1")
        return " ".join(out.split())

    def fit(self, text: object, width: float) -> str:
        """``text`` made safe and cut (with an ellipsis) so it fits ``width`` mm in the current font."""
        s = self.safe(text)
        limit = width - 1.0
        if self.get_string_width(s) <= limit:
            return s
        ell = "…" if self.unicode else "..."
        lo, hi = 0, len(s)
        while lo < hi:  # longest prefix that fits with the ellipsis
            mid = (lo + hi + 1) // 2
            if self.get_string_width(s[:mid] + ell) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return s[:lo].rstrip() + ell

    def text_cell(self, w: float, h: float, text: object, *, align: str = "L", fill: bool = False,
                  border: int | str = 0) -> None:
        self.cell(w, h, self.fit(text, w), border=border, align=align, fill=fill, new_x=XPos.RIGHT,
                  new_y=YPos.TOP)


def _find_font() -> tuple[str, str] | None:
    for regular, bold in FONT_CANDIDATES:
        if Path(regular).is_file():
            return regular, bold if Path(bold).is_file() else regular
    return None


def _thumbnail(data: bytes) -> io.BytesIO:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            thumb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError("the overlay for the report is not a readable picture") from e
    thumb.thumbnail((THUMBNAIL_MAX_SIDE_PX, THUMBNAIL_MAX_SIDE_PX))
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)  # embedded as is (DCT): ~10x smaller than Flate
    out.seek(0)
    return out


def _summary(items: list[ImageResult]) -> SizeSummary:
    return summarize_result(items[0]) if len(items) == 1 else summarize_results(items)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _names(items: list[ImageResult]) -> str:
    if len(items) == 1:
        return items[0].name
    return f"{len(items)} images: " + ", ".join(r.name for r in items)


def _ids(ids: Sequence[str]) -> str:
    ids = list(ids)
    if not ids:
        return "-"
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _calibration(items: list[ImageResult], profile: str) -> str:
    scales = {r.pixel_size_um for r in items}
    named = f"profile {profile}: " if profile else ""
    if scales == {None}:
        return f"{named}uncalibrated (sizes in px)"
    if None in scales:
        return f"{named}some images uncalibrated (sizes in px)"
    if len(scales) == 1:
        return f"{named}{_num(scales.pop(), 6)} µm/px (sizes in µm)"
    return f"{named}{len(scales)} different pixel sizes (sizes in µm, each image with its own)"


def _border_rule(items: list[ImageResult]) -> str:
    rules = {r.include_border for r in items}
    if rules == {True}:
        return "particles touching the image border are counted"
    if rules == {False}:
        return "particles touching the image border are not counted"
    return "differs between images"


def _summary_table(pdf: _Page, s: SizeSummary, *, unit: str, n_images: int, x: float, y: float, w: float) -> None:
    dv = s.number_um if s.number_um is not None else s.number
    vv = s.volume_um if s.volume_um is not None else s.volume
    frac = "n/a" if not math.isfinite(s.agglomerate_fraction) else f"{100 * s.agglomerate_fraction:.1f} %"
    rows = [
        ("Crystals", str(s.n_crystals)),
        ("Agglomerates", str(s.n_agglomerates)),
        ("Counted in total", str(s.n_total)),
        ("Agglomerate fraction (count)", frac),
        ("Excluded (not counted)", str(s.n_excluded)),
        (f"D10 ({unit})", _num(dv.d10)),
        (f"D50 ({unit})", _num(dv.d50)),
        (f"D90 ({unit})", _num(dv.d90)),
        ("Span (D90-D10)/D50", _num(dv.span)),
        (f"D50 volume-weighted ({unit})", _num(vv.d50)),
    ]
    if s.particles_per_mm2 is not None:
        rows.append(("Particles per mm²", _num(s.particles_per_mm2)))
    if n_images > 1:
        rows.insert(0, ("Images pooled", str(n_images)))
    pdf.set_xy(x, y)
    pdf.font(10, bold=True)
    pdf.text_cell(w, 6, "Summary" + (" (all images pooled)" if n_images > 1 else "") + ", number-weighted")
    y += 7
    label_w = w * 0.62
    pdf.set_fill_color(242, 242, 242)
    for i, (label, value) in enumerate(rows):
        pdf.set_xy(x, y)
        pdf.font(9)
        pdf.text_cell(label_w, 5.6, label, fill=i % 2 == 0)
        pdf.font(9, bold=True)
        pdf.text_cell(w - label_w, 5.6, value, align="R", fill=i % 2 == 0)
        y += 5.6


def _histogram(pdf: _Page, sizes: np.ndarray, dv: DValues, *, unit: str, x: float, y: float, w: float,
               h: float) -> None:
    pdf.set_xy(x, y)
    pdf.font(10, bold=True)
    pdf.text_cell(w, 6, f"Size distribution: equivalent circle diameter ({unit}), number-weighted")
    top = y + 8
    left, bottom = x + 14, top + h - 16
    right = x + w - 2
    plot_w, plot_h = right - left, bottom - top
    pdf.set_draw_color(*_DARK)
    pdf.set_line_width(0.25)
    pdf.line(left, bottom, right, bottom)
    pdf.line(left, top, left, bottom)
    if sizes.size == 0:
        pdf.font(9)
        pdf.set_text_color(*_GREY)
        pdf.set_xy(left, top + plot_h / 2 - 3)
        pdf.text_cell(plot_w, 6, "No particles counted: no size distribution", align="C")
        pdf.set_text_color(0, 0, 0)
        return
    edges, pct = histogram(sizes, bins=HIST_BINS)
    lo, hi = float(edges[0]), float(edges[-1])
    y_max = _nice_step(float(pct.max()))

    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    def py(v: float) -> float:
        return bottom - v / y_max * plot_h

    pdf.set_fill_color(*_GREEN)
    pdf.set_draw_color(255, 255, 255)
    pdf.set_line_width(0.1)
    for e0, e1, p in zip(edges[:-1], edges[1:], pct):
        if p > 0:
            pdf.rect(px(e0), py(p), px(e1) - px(e0), bottom - py(p), style="DF")
    # Axes, ticks and labels.
    pdf.set_draw_color(*_DARK)
    pdf.set_line_width(0.25)
    pdf.font(7)
    step = _nice_step((hi - lo) / 6)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    for v in np.arange(math.ceil(lo / step - 1e-9) * step, hi + step * 1e-6, step):
        pdf.line(px(v), bottom, px(v), bottom + 1.2)
        pdf.set_xy(px(v) - 10, bottom + 1.3)
        pdf.text_cell(20, 3.5, f"{v:.{decimals}f}", align="C")
    for v in (0.0, y_max / 2, y_max):
        pdf.line(left - 1.2, py(v), left, py(v))
        pdf.set_xy(left - 13, py(v) - 1.7)
        pdf.text_cell(11.5, 3.5, f"{v:g} %", align="R")
    pdf.font(8)
    pdf.set_xy(left, bottom + 5.5)
    pdf.text_cell(plot_w, 4, f"ECD ({unit})", align="C")
    # D10 / D50 / D90 markers.
    pdf.set_draw_color(80, 80, 80)
    pdf.set_dash_pattern(dash=1.0, gap=0.8)
    pdf.font(7)
    for label, value in (("D10", dv.d10), ("D50", dv.d50), ("D90", dv.d90)):
        if math.isfinite(value) and lo <= value <= hi:
            pdf.line(px(value), top + 3, px(value), bottom)
            pdf.set_xy(min(max(px(value) - 12, left), right - 24), top - 0.5)
            pdf.text_cell(24, 3.5, f"{label} {_num(value)}", align="C")
    pdf.set_dash_pattern()


def _nice_step(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value; 1 for value <= 0 (tick steps, axis maxima)."""
    if not value > 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value - 1e-12:
            return step * power
    return 10 * power


def _batch_rows(pdf: _Page, items: list[ImageResult], *, unit: str, calibrated: bool, y: float,
                max_rows: int) -> float:
    pdf.font(10, bold=True)
    pdf.set_xy(_MARGIN, y)
    pdf.text_cell(120, 6, "Per image")
    y += 6.5
    widths = (78, 22, 26, 20, 20, 20)
    heads = ("Image", "Crystals", "Agglomerates", f"D10 ({unit})", f"D50 ({unit})", f"D90 ({unit})")
    pdf.font(8, bold=True)
    pdf.set_xy(_MARGIN, y)
    for wcol, head in zip(widths, heads):
        pdf.text_cell(wcol, 4.6, head, align="L" if head == "Image" else "R", border="B")
    y += 5
    pdf.font(8)
    shown = items[:max(1, min(MAX_BATCH_ROWS, max_rows))]
    for r in shown:
        s = summarize_particles(r.particles, pixel_size_um=r.pixel_size_um if calibrated else None,
                                include_border=r.include_border)
        dv = s.dvalues()
        pdf.set_xy(_MARGIN, y)
        for wcol, value, align in zip(widths, (r.name, s.n_crystals, s.n_agglomerates, _num(dv.d10),
                                               _num(dv.d50), _num(dv.d90)), "LRRRRR"):
            pdf.text_cell(wcol, 4.4, value, align=align)
        y += 4.4
    if len(items) > len(shown):
        pdf.set_xy(_MARGIN, y)
        pdf.set_text_color(*_GREY)
        pdf.text_cell(150, 4.4, f"and {len(items) - len(shown)} more images (see the summary CSV)")
        pdf.set_text_color(0, 0, 0)
        y += 4.4
    return y + 3
