"""ui.archive: ImageResult <-> JSON bytes and cleaned image <-> 16-bit PNG, with every error path."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from analysis.records import ImageMeta, ImageResult, Particle
from ui.archive import ArchiveFormatError, cleaned_from_png, cleaned_to_png, result_from_json, result_to_json


def _particle(i: int, **over) -> Particle:
    base = dict(particle_id=i, class_name="crystal", confidence=0.9, x_min=1, y_min=2, x_max=11, y_max=22,
                area_px=150.5, perimeter_px=48.25, ecd_px=13.84, feret_max_px=22.4, feret_min_px=10.0,
                aspect_ratio=0.446, circularity=0.81, solidity=0.97, focus_score=0.31, on_border=False,
                excluded_reason=None)
    base.update(over)
    return Particle(**base)


def _result(**over) -> ImageResult:
    base = dict(name="plate 7 – µ.png", meta=ImageMeta("png", 64, 48, 16, 1, 1, ("16-bit scaled",)),
                particles=(_particle(1), _particle(2, class_name="agglomerate", on_border=True),
                           _particle(3, excluded_reason="dust", focus_score=float("nan"),
                                     confidence=np.float32(0.5).item(), x_min=np.int64(4))),
                pixel_size_um=0.5, include_border=False, detector="onnx:crystals 1.2", seconds=0.25)
    base.update(over)
    return ImageResult(**base)


def _same(a: ImageResult, b: ImageResult) -> bool:
    fields = [f.name for f in dataclasses.fields(ImageResult) if f.name not in ("particles", "cleaned")]
    if any(getattr(a, f) != getattr(b, f) for f in fields) or len(a.particles) != len(b.particles):
        return False
    for p, q in zip(a.particles, b.particles):
        for f in dataclasses.fields(Particle):
            x, y = getattr(p, f.name), getattr(q, f.name)
            if not (x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))):
                return False
    return True


def test_round_trip_is_exact_including_nan_numpy_scalars_and_unicode():
    res = _result()
    back, extra = result_from_json(result_to_json(res, extra={"analysis_id": "x", "n": [1, 2]}))
    assert _same(res, back)
    assert extra == {"analysis_id": "x", "n": [1, 2]}
    assert back.cleaned is None
    assert isinstance(back.particles[2].x_min, int) and back.particles[2].x_min == 4


def test_uncalibrated_result_and_no_extra_round_trip():
    res = _result(pixel_size_um=None, particles=())
    back, extra = result_from_json(result_to_json(res))
    assert _same(res, back) and extra == {}


def test_json_is_sorted_utf8_with_schema_and_version():
    doc = json.loads(result_to_json(_result()).decode("utf-8"))
    assert (doc["schema"], doc["version"]) == ("crystal-qc/image-result", 1)
    assert doc["name"] == "plate 7 – µ.png"


def test_cleaned_image_is_attached_on_load():
    cleaned = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    back, _ = result_from_json(result_to_json(_result()), cleaned=cleaned)
    assert back.cleaned is not None and back.cleaned.dtype == np.float32


def test_extra_must_be_a_json_dict():
    with pytest.raises(ArchiveFormatError, match="must be a dict"):
        result_to_json(_result(), extra=["no"])
    with pytest.raises(ArchiveFormatError, match="only JSON values"):
        result_to_json(_result(), extra={"x": object()})


def _doc() -> dict:
    return json.loads(result_to_json(_result()))


def _bad(mutate) -> bytes:
    doc = _doc()
    mutate(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("data, message", [
    (b"\xff\xfe", "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a crystal QC analysis"),
    (_bad(lambda d: d.update(schema="other")), "not a crystal QC analysis"),
    (_bad(lambda d: d.update(version=2)), "format version 2"),
    (_bad(lambda d: d.pop("detector")), "missing fields \\['detector'\\]"),
    (_bad(lambda d: d.update(surprise=1)), "unknown fields \\['surprise'\\]"),
    (_bad(lambda d: d["meta"].pop("width")), "image information has missing fields"),
    (_bad(lambda d: d["meta"].update(notes="x")), "notes must be a list"),
    (_bad(lambda d: d["meta"].update(width="64")), "meta.width must be an integer"),
    (_bad(lambda d: d.update(particles={})), "no particle list"),
    (_bad(lambda d: d["particles"][0].pop("ecd_px")), "particle 0 has missing fields"),
    (_bad(lambda d: d["particles"][1].update(particle_id=True)), "particle 1: particle_id must be an integer"),
    (_bad(lambda d: d["particles"][0].update(area_px="big")), "particle 0: area_px must be a number"),
    (_bad(lambda d: d["particles"][0].update(on_border=0)), "on_border must be true or false"),
    (_bad(lambda d: d["particles"][0].update(class_name=None)), "class_name must be text"),
    (_bad(lambda d: d["particles"][0].update(excluded_reason=5)), "excluded_reason must be text"),
    (_bad(lambda d: d.update(pixel_size_um=-1)), "pixel size -1.0 µm is out of range"),
    (_bad(lambda d: d.update(include_border="no")), "include_border must be true or false"),
    (_bad(lambda d: d.update(extra=[])), "malformed extra"),
    (_bad(lambda d: d.update(name=3)), "name must be text"),
])
def test_malformed_records_are_refused_with_a_reason(data, message):
    with pytest.raises(ArchiveFormatError, match=message):
        result_from_json(data)


def test_cleaned_png_round_trip_is_within_one_16_bit_step():
    rng = np.random.default_rng(1)
    cleaned = rng.random((37, 53), dtype=np.float32)
    original = cleaned.copy()
    png = cleaned_to_png(cleaned)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = cleaned_from_png(png)
    assert back.dtype == np.float32 and back.shape == (37, 53)
    assert np.max(np.abs(back - cleaned)) <= 0.5 / 65535 + 1e-7
    assert np.array_equal(cleaned, original)  # input untouched


def test_cleaned_png_clips_out_of_range_values():
    back = cleaned_from_png(cleaned_to_png(np.array([[-0.5, 1.5]], np.float32)))
    assert back.tolist() == [[0.0, 1.0]]


def test_cleaned_png_refuses_bad_input():
    with pytest.raises(ValueError, match="non-empty \\(H, W\\)"):
        cleaned_to_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        cleaned_to_png(np.zeros((0, 4), np.float32))
    with pytest.raises(ArchiveFormatError, match="cleaned image cannot be read"):
        cleaned_from_png(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
