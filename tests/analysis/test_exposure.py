"""analysis.exposure: over-exposed micrographs get a note the technician can act on; ordinary ones do not."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.exposure import OVEREXPOSED_FRACTION, exposure_note, saturated_fraction
from analysis.pipeline import analyze_bytes, make_detector


def _scene(white_fraction: float, *, bits: int = 8) -> np.ndarray:
    """A 200 x 300 grey micrograph: background at 0.75, a dark-rimmed crystal, and the top ``white_fraction`` of
    the rows clipped to full scale."""
    top = 2**bits - 1
    img = np.full((200, 300), 0.75 * top)
    cv2.circle(img, (150, 150), 20, 0.3 * top, 3)
    img[: int(round(white_fraction * 200))] = top
    return img.astype(np.uint8 if bits == 8 else np.uint16)


def test_the_fraction_counts_pixels_at_full_scale_only():
    img = np.full((10, 10), 0.99, np.float32)
    img[:3] = 1.0
    img[3, :5] = 1.0 - 0.4 / 255  # within half a grey level of white: clipped
    assert saturated_fraction(img) == pytest.approx(0.35)
    assert saturated_fraction(np.zeros((0, 5))) == 0.0


@pytest.mark.parametrize("bits", [8, 16])
def test_an_image_mostly_at_full_white_gets_a_note_and_an_ordinary_one_none(bits):
    det = make_detector("classical")
    over = _scene(0.6, bits=bits)
    ok, png = cv2.imencode(".png", over)
    result = analyze_bytes(png.tobytes(), name="over.png", detector=det)
    notes = [n for n in result.meta.notes if n.startswith("Over-exposed")]
    assert len(notes) == 1 and "60 % of the pixels" in notes[0] and "exposure time" in notes[0]
    ok, png = cv2.imencode(".png", _scene(OVEREXPOSED_FRACTION - 0.05, bits=bits))
    assert not any(n.startswith("Over-exposed") for n in analyze_bytes(png.tobytes(), name="ok.png",
                                                                         detector=det).meta.notes)


def test_the_note_starts_at_the_threshold():
    img = np.full((100, 100), 0.75, np.float32)
    img[: int(OVEREXPOSED_FRACTION * 100)] = 1.0
    assert exposure_note(img) is not None
    img[0] = 0.75
    assert exposure_note(img) is None
