"""analysis.exposure: over-exposed micrographs get a note the technician can act on; ordinary ones do not."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.exposure import OVEREXPOSED_FRACTION, exposure_note, full_scale, saturated_fraction
from analysis.pipeline import analyze_bytes, make_detector


def _scene(white_fraction: float, *, bits: int = 8) -> np.ndarray:
    """A 200 x 300 grey micrograph: background at 0.75, a dark-rimmed crystal, and the top ``white_fraction`` of
    the rows clipped to full scale (2**bits - 1; 8-bit samples for ``bits`` 8, else 16-bit samples)."""
    top = 2**bits - 1
    img = np.full((200, 300), 0.75 * top)
    cv2.circle(img, (150, 150), 20, 0.3 * top, 3)
    img[: int(round(white_fraction * 200))] = top
    return img.astype(np.uint8 if bits == 8 else np.uint16)


def _notes(img: np.ndarray, det) -> list[str]:
    ok, png = cv2.imencode(".png", img)
    assert ok
    result = analyze_bytes(png.tobytes(), name="scene.png", detector=det)
    return [n for n in result.meta.notes if n.startswith("Over-exposed")]


def test_the_fraction_counts_pixels_at_full_scale_only():
    img = np.full((10, 10), 0.99, np.float32)
    img[:3] = 1.0
    img[3, :5] = 1.0 - 0.4 / 255  # within half a grey level of white: clipped
    assert saturated_fraction(img) == pytest.approx(0.35)
    assert saturated_fraction(np.zeros((0, 5))) == 0.0


@pytest.mark.parametrize("bits", [8, 16, 12, 10, 14])
def test_an_image_mostly_at_full_white_gets_a_note_and_an_ordinary_one_none(bits):
    """8 and 16-bit files clip at the format's full scale; 10/12/14-bit sensors written unscaled into 16-bit files
    clip at their own."""
    det = make_detector("classical")
    notes = _notes(_scene(0.6, bits=bits), det)
    assert len(notes) == 1 and "60 % of the pixels" in notes[0] and "exposure time" in notes[0]
    assert (f"{bits}-bit sensor" in notes[0]) == (bits not in (8, 16))
    assert _notes(_scene(OVEREXPOSED_FRACTION - 0.05, bits=bits), det) == []


def test_an_unclipped_12_bit_image_in_a_16_bit_file_gets_no_note():
    """Its brightest value stays below 4095, so nothing is taken for a sensor's full scale."""
    img = _scene(0.6, bits=12)
    img[img == 4095] = 4000
    assert saturated_fraction(img.astype(np.float32) / 65535) == 0.0
    assert _notes(img, make_detector("classical")) == []


def test_no_8_bit_level_is_taken_for_a_sensor_full_scale():
    """An 8-bit image whose brightest grey is next to 1/64, 1/16 or 1/4 of white keeps white as its full scale."""
    for top in range(1, 255):
        img = np.full((4, 4), top / 255, np.float32)
        assert full_scale(img) == (1.0, None)
        assert saturated_fraction(img) == 0.0


def test_the_note_starts_at_the_threshold():
    img = np.full((100, 100), 0.75, np.float32)
    img[: int(OVEREXPOSED_FRACTION * 100)] = 1.0
    assert exposure_note(img) is not None
    img[0] = 0.75
    assert exposure_note(img) is None
