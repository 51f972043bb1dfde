"""Analyze: upload an image (or pick a sample), see the cleaned image with detections, counts, sizes, CSVs.
Every analysis is saved in the vault (original, cleaned image, result, CSVs); settings changes are saved too."""
from __future__ import annotations

import hashlib

import streamlit as st

from analysis.errors import CrystalQCError
from analysis.io import load_image
from analysis.pipeline import AnalysisOptions, analyze_bytes
from ui import models, session
from ui.analyses import report_csvs, save_analysis
from ui.resources import get_detector, get_model_detector, sample_images
from ui.result_view import render_result
from ui.settings import DETECTORS, MAX_PIXEL_SIZE_UM

LAST = "last_analysis"  # (run key, AnalysisInfo | None, ImageResult) of this session; dropped at lock


def _save_setting(field: str, key: str) -> None:
    """on_change of a settings widget: persist it in the vault (audited as settings_change)."""
    value = st.session_state.get(key)
    if field == "pixel_size_um":
        value = float(value or 0.0)
    try:
        session.update_settings(**{field: value})
    except (CrystalQCError, ValueError, OSError) as e:
        session.set_notice("error", f"The setting could not be saved: {e}")


vault = session.require_vault()
prefs = session.settings()
st.title("Analyze an image")

with st.sidebar:
    st.subheader("Measurement")
    pixel_size = st.number_input("Pixel size (µm per pixel, 0 = uncalibrated)", min_value=0.0,
                                 max_value=MAX_PIXEL_SIZE_UM - 1.0, value=prefs.pixel_size_um, step=0.01,
                                 format="%.4f", key="pixel_size", on_change=_save_setting,
                                 args=("pixel_size_um", "pixel_size"))
    include_border = st.checkbox("Count particles touching the border", value=prefs.include_border,
                                 key="include_border", on_change=_save_setting,
                                 args=("include_border", "include_border"))
    detector_kind = st.selectbox("Detector", list(DETECTORS), index=DETECTORS.index(prefs.detector), key="detector",
                                 help="auto uses the model activated on the Models screen, else the shipped model"
                                      " when one is installed, else the classical one",
                                 on_change=_save_setting, args=("detector", "detector"))

upload = st.file_uploader("Micrograph (PNG, JPEG, TIFF or BMP)", type=["png", "jpg", "jpeg", "tif", "tiff", "bmp"],
                          key="upload")
samples = sample_images()
sample_name = st.selectbox("…or try a sample image", ["—"] + [p.name for p in samples], key="sample")

source: tuple[str, bytes, str] | None = None
if upload is not None:
    source = (upload.name, upload.getvalue(), "upload")
elif sample_name != "—":
    path = next(p for p in samples if p.name == sample_name)
    source = (path.name, path.read_bytes(), "sample")

if source is None:
    st.info("Upload a micrograph or pick a sample to start. Every analysis is saved in the encrypted vault.")
    st.stop()


def _detector(kind: str, active: models.ModelEntry | None):
    """The active researcher model (Models screen) for "auto", else the shipped default / classical detector.
    The model's bytes are checked against the accepted manifest's sha256 before they are loaded."""
    if kind != "auto" or active is None:
        return get_detector(kind)
    data = models.load_model_bytes(vault, active)
    return get_model_detector(active.sha256, data, name=active.name, version=active.version)


try:
    active_model = models.active_model(vault)
except CrystalQCError as e:
    st.error(f"The active model cannot be used: {e}")
    st.stop()
options = AnalysisOptions(pixel_size_um=pixel_size or None, include_border=include_border)
name, data, kind = source
# Reruns (any widget change) reuse the result of the same image and options; kept in this session's memory only.
run_key = (name, hashlib.sha256(data).hexdigest(), detector_kind, active_model.sha256 if active_model else "",
           repr(options))
cached = st.session_state.get(LAST)
if cached is not None and cached[0] == run_key:
    _, info, result = cached
else:
    st.session_state.pop(LAST, None)
    try:
        with st.spinner(f"Analysing {name}…"):
            result = analyze_bytes(data, name=name, detector=_detector(detector_kind, active_model),
                                   options=options)
    except CrystalQCError as e:
        st.error(f"Cannot analyse {name}: {e}")
        st.stop()
    try:
        info = save_analysis(vault, data, result, source=kind, user=vault.user)
    except (CrystalQCError, OSError) as e:
        info = None
        st.error(f"The analysis could not be saved in the vault: {e}")
    st.session_state[LAST] = (run_key, info, result)

if info is not None:
    st.caption(f"Saved in the vault as analysis {info.analysis_id} (see History).")
render_result(result, csvs=report_csvs(result), analysis_id=info.analysis_id if info else None, key="analyze",
              original=lambda: load_image(data, name=name, max_pixels=options.max_pixels)[0])
