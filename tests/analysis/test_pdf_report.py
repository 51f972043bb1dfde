"""The one-page PDF report: a valid single page, the facts a QC lead needs in its text, robust to zero particles,
uncalibrated images, batches and hostile labels (read back with pypdf)."""
from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pypdf
import pytest

import analysis.pdf_report as pdf_report
from analysis.io import encode_png
from analysis.pdf_report import build_pdf_report
from analysis.records import ImageMeta, ImageResult, Particle

WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def particle(pid: int, ecd: float, *, cls: str = "crystal", reason: str | None = None,
             on_border: bool = False) -> Particle:
    area = np.pi * ecd**2 / 4
    return Particle(particle_id=pid, class_name=cls, confidence=0.9, x_min=10, y_min=10, x_max=30, y_max=30,
                    area_px=area, perimeter_px=np.pi * ecd, ecd_px=ecd, feret_max_px=ecd, feret_min_px=ecd,
                    aspect_ratio=1.0, circularity=1.0, solidity=1.0, focus_score=1.0, on_border=on_border,
                    excluded_reason=reason)


def result(particles=(), *, name="plate.png", pixel_size_um=None, detector="onnx:crystal-yolo11n 1.0.0",
           include_border=False) -> ImageResult:
    meta = ImageMeta(format="png", width=400, height=300, bit_depth=8, channels=1)
    return ImageResult(name=name, meta=meta, particles=tuple(particles), pixel_size_um=pixel_size_um,
                       include_border=include_border, detector=detector, seconds=0.1)


def sample_result(**kw) -> ImageResult:
    # 7 crystals of ECD 10..70 px, 1 agglomerate of 80 px, 1 dust (excluded), 1 crystal on the border (not counted)
    parts = [particle(i + 1, 10.0 * (i + 1)) for i in range(7)]
    parts += [particle(8, 80.0, cls="agglomerate"), particle(9, 5.0, cls="dust", reason="dust"),
              particle(10, 40.0, on_border=True)]
    return result(parts, **kw)


def read(pdf: bytes) -> tuple[int, str]:
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    return len(reader.pages), " ".join(page.extract_text() for page in reader.pages)


@pytest.fixture(params=[True, False], ids=["unicode-font", "core-font"])
def unicode_font(request):
    if request.param and pdf_report._find_font() is None:
        pytest.skip("no DejaVu font on this machine; the core-font variant covers the fallback")
    return request.param


def test_single_image_report_is_one_page_with_the_facts(unicode_font):
    overlay = encode_png(np.full((300, 400, 3), 128, np.uint8))
    pdf = build_pdf_report(sample_result(pixel_size_um=0.5), overlay_png=overlay, profile="Olympus 10x",
                           operator="alice", product="Paracetamol", lot="L-0042", created=WHEN,
                           analysis_ids=["20250304T050607Z-0a1b2c3d"], unicode_font=unicode_font)
    pages, text = read(pdf)
    assert pages == 1
    for expected in ("Crystal QC analysis report", "plate.png", "Paracetamol", "L-0042", "alice",
                     "20250304T050607Z-0a1b2c3d", "onnx:crystal-yolo11n 1.0.0", "profile Olympus 10x",
                     "0.5 µm/px", "2025-03-04 05:06:07 UTC", "Crystals 7", "Agglomerates 1",
                     "Counted in total 8", "Agglomerate fraction (count) 12.5 %", "dust 1", "on border 1",
                     "D50 (µm)", "Particles per mm²"):
        assert expected in text, expected
    # Number-weighted D50 of 10..80 px = 45 px = 22.5 µm at 0.5 µm/px (numpy's percentile), printed with 3 digits.
    assert "D50 (µm) 22.5" in text
    assert "(px)" not in text


def test_uncalibrated_report_says_so_and_uses_pixels(unicode_font):
    pdf = build_pdf_report(sample_result(), operator="bob", created=WHEN, unicode_font=unicode_font)
    pages, text = read(pdf)
    assert pages == 1
    assert "uncalibrated (sizes in px)" in text
    assert "D50 (px) 45" in text and "ECD (px)" in text
    assert "(µm)" not in text
    assert "No overlay image" in text
    assert "Particles per mm²" not in text  # density needs a pixel size


def test_zero_particles_gives_a_clear_page_not_an_error(unicode_font):
    pdf = build_pdf_report(result(), operator="carol", created=WHEN, unicode_font=unicode_font)
    pages, text = read(pdf)
    assert pages == 1
    assert "Crystals 0" in text and "Agglomerates 0" in text
    assert "No particles counted: no size distribution" in text
    assert "D50 (px) n/a" in text and "Agglomerate fraction (count) n/a" in text


def test_batch_pools_images_and_lists_each(unicode_font):
    a = sample_result(name="a.png", pixel_size_um=1.0)
    b = result([particle(1, 100.0), particle(2, 100.0, cls="agglomerate")], name="b.png", pixel_size_um=1.0)
    pdf = build_pdf_report([a, b], operator="dan", created=WHEN, analysis_ids=["id1", "id2", "id3", "id4"],
                           unicode_font=unicode_font)
    pages, text = read(pdf)
    assert pages == 1
    assert "2 images: a.png, b.png" in text
    assert "Images pooled 2" in text and "Crystals 8" in text and "Agglomerates 2" in text
    assert "id1, id2, id3 and 1 more" in text
    assert "Per image" in text and "b.png 1 1" in text


def test_a_long_batch_stays_on_one_page(unicode_font):
    many = [sample_result(name=f"img_{i:03d}.png") for i in range(40)]
    pages, text = read(build_pdf_report(many, created=WHEN, unicode_font=unicode_font))
    assert pages == 1
    listed = sum(f"img_{i:03d}.png 7 1" in text for i in range(40))
    assert 1 <= listed <= pdf_report.MAX_BATCH_ROWS
    assert f"and {40 - listed} more images" in text
    assert "Crystals 280" in text


@pytest.mark.parametrize("label", [
    "x" * 5000,                                   # far too long for a line
    "Lot (1) \\ [2] <3> %PDF-1.4 endstream EOF",  # PDF syntax characters
    "bad\x00nul\r\nline\tbreak\x1b[31m",          # control characters
    "ÄÖÜ éè 日本語 😀 \u202eevil\ud800",          # accents, CJK, emoji, bidi override, lone surrogate
])
def test_user_text_cannot_break_the_pdf(label, unicode_font):
    pdf = build_pdf_report(sample_result(name=label), operator=label, product=label, lot=label, profile=label,
                           created=WHEN, unicode_font=unicode_font)
    pages, text = read(pdf)
    assert pages == 1
    assert "Crystals 7" in text  # the rest of the page is intact
    assert "\x00" not in text and "\x1b" not in text


def test_core_font_replaces_what_latin1_cannot_show():
    pdf = build_pdf_report(sample_result(), product="Grün 日本", created=WHEN, unicode_font=False)
    _, text = read(pdf)
    assert "Grün ??" in text


def test_unicode_font_keeps_accents_and_marks_missing_glyphs():
    if pdf_report._find_font() is None:
        pytest.skip("no DejaVu font on this machine")
    _, text = read(build_pdf_report(sample_result(), product="Grün Ωmega 日", created=WHEN))
    assert "Grün Ωmega ?" in text


def test_without_a_system_font_the_core_font_is_used(monkeypatch):
    monkeypatch.setattr(pdf_report, "FONT_CANDIDATES", (("/nonexistent/DejaVuSans.ttf", "/nonexistent/b.ttf"),))
    pdf = build_pdf_report(sample_result(), product="Ωmega", created=WHEN)
    _, text = read(pdf)
    assert "?mega" in text
    assert b"Helvetica" in pdf


def test_large_overlay_is_embedded_as_a_thumbnail():
    rng = np.random.default_rng(1)
    big = encode_png(rng.integers(0, 255, (1944, 2592, 3), dtype=np.uint8))  # 5 Mpx of noise: ~15 MB raw
    pdf = build_pdf_report(sample_result(), overlay_png=big, created=WHEN)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    [image] = reader.pages[0].images
    assert max(image.image.size) == pdf_report.THUMBNAIL_MAX_SIDE_PX
    assert image.name.endswith(".jpg")  # embedded as JPEG, not as a lossless copy of the noise
    assert len(pdf) < len(big) / 5


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="at least one result"):
        build_pdf_report([])
    with pytest.raises(ValueError, match="not a readable picture"):
        build_pdf_report(sample_result(), overlay_png=b"\x89PNG not really")


def test_default_model_version_is_the_detector_label_and_time_defaults_to_now():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    _, text = read(build_pdf_report([sample_result(detector="classical"), sample_result(detector="onnx:m 2.0")]))
    assert "classical; onnx:m 2.0" in text
    stamp = text.split("Crystal QC analysis report", 1)[1].split("UTC", 1)[0].strip()
    assert datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc) >= before


@pytest.mark.parametrize("value, expected", [(0, 1.0), (0.07, 0.1), (3, 5), (12.5, 20), (21, 25), (50, 50)])
def test_axis_steps_are_round_numbers(value, expected):
    assert pdf_report._nice_step(value) == pytest.approx(expected)


def text_rows(pdf: bytes) -> list[tuple[float, str]]:
    """(height above the page's bottom edge in mm, text) of every piece of text drawn."""
    rows: list[tuple[float, str]] = []

    def visit(text, cm, tm, _font, _size):
        if text.strip():
            rows.append(((tm[5] * cm[3] + cm[5]) / 72 * 25.4, text))

    pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text(visitor_text=visit)
    return sorted(rows)


def test_a_crowded_batch_keeps_its_text_above_the_footer():
    # 30 images, mixed calibration and few particles: the per-image list and the warnings compete for room.
    many = [sample_result(name=f"img_{i:03d}.png", pixel_size_um=None if i % 2 else 0.5) for i in range(30)]
    pdf = build_pdf_report(many, created=WHEN)
    rows = text_rows(pdf)
    (footer_y, footer), (next_y, _) = rows[0], rows[1]
    assert footer.startswith("Crystal QC · model:")
    assert footer_y >= 10  # inside the page, above the bottom margin
    assert next_y > footer_y + 3  # nothing printed over the footer
    _, text = read(pdf)
    assert "Note: 15 of 30 images have no pixel size" in text
