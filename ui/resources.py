"""Resources shared across browser sessions (``st.cache_resource``): never decrypted data, only code objects."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.pipeline import Detector, make_detector

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


@st.cache_resource(show_spinner="Loading the detector…")
def get_detector(kind: str = "auto") -> Detector:
    """One detector per kind for the whole server process (detectors are stateless and thread-safe)."""
    return make_detector(kind)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def get_model_detector(sha256: str, _model_bytes: bytes, *, name: str, version: str) -> Detector:
    """One detector per accepted model (keyed by its sha256; the bytes are not hashed again by Streamlit).

    The bytes come from a package the caller has checked against ``sha256`` (ui.models.load_model_bytes); model
    bytes are not plant data, but they stay out of ``st.cache_data`` all the same.
    """
    from ui.models import detector_from_bytes

    return detector_from_bytes(_model_bytes, name=name, version=version)


def active_detector(vault, active, kind: str = "auto") -> Detector:
    """The detector the app runs for ``kind``: for "auto" the active researcher model ``active`` (a
    ui.models.ModelEntry of ``vault``; its bytes are checked against the accepted sha256 before they are loaded),
    else - or when no model is active - the shipped default / classical one. Raises CrystalQCError as
    ui.models.load_model_bytes and make_detector do."""
    if kind != "auto" or active is None:
        return get_detector(kind)
    from ui.models import load_model_bytes

    data = load_model_bytes(vault, active)
    return get_model_detector(active.sha256, data, name=active.name, version=active.version)


def sample_images() -> list[Path]:
    """The bundled sample images a new user can try at once."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"})
