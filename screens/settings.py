"""Settings: calibration profiles (table, add / edit / delete, default, measured from a stage micrometer image) and
the analysis thresholds. Every change is saved in the vault and audited (ui.session.update_settings); the logic lives
in ui.settings and analysis.calibration. The micrometer image is only read in memory, never stored."""
from __future__ import annotations

import dataclasses
import hashlib
from datetime import date

import pandas as pd
import streamlit as st

from analysis.calibration import measure_stage_micrometer_bytes
from analysis.errors import CrystalQCError
from ui import session
from ui import settings as cfg

NEW = "\u2795 New profile"
MEASURED = "settings_micrometer"  # {(sha256, division): measurement} of this session (numbers only)
FORM_KEYS = ("profile_name", "profile_um_per_px", "profile_microscope", "profile_objective", "profile_date",
             "profile_note", "profile_scale", "profile_make_default")


def _save(**changes: object) -> bool:
    try:
        session.update_settings(**changes)
    except (CrystalQCError, ValueError, OSError) as e:
        session.set_notice("error", f"Not saved: {e}")
        return False
    return True


# ------------------------------------------------------------------------------------------------ profiles
def _fill_form(profile: cfg.CalibrationProfile | None, **overrides: object) -> None:
    values = {"profile_name": "", "profile_um_per_px": None, "profile_microscope": "", "profile_objective": "",
              "profile_date": None, "profile_note": "", "profile_scale": 1.0, "profile_make_default": False}
    if profile is not None:
        values.update(profile_name=profile.name, profile_um_per_px=profile.um_per_px,
                      profile_microscope=profile.microscope, profile_objective=profile.objective,
                      profile_date=date.fromisoformat(profile.calibrated_on) if profile.calibrated_on else None,
                      profile_note=profile.note, profile_scale=profile.analysis_scale,
                      profile_make_default=profile.name == session.settings().default_profile)
    values.update(overrides)
    for key, value in values.items():
        st.session_state[key] = value


def _picked() -> None:
    pick = st.session_state.get("profile_pick", NEW)
    _fill_form(None if pick == NEW else cfg.profile_by_name(session.settings(), pick))


def _save_profile() -> None:
    state = st.session_state
    um = state.get("profile_um_per_px")
    day = state.get("profile_date")
    try:
        if um is None:
            raise cfg.SettingsError("Enter the pixel size in µm per pixel (or measure it from a stage micrometer).")
        profile = cfg.CalibrationProfile(
            name=state.get("profile_name", ""), um_per_px=float(um), microscope=state.get("profile_microscope", ""),
            objective=state.get("profile_objective", ""), calibrated_on=day.isoformat() if day else "",
            note=state.get("profile_note", ""), analysis_scale=float(state.get("profile_scale", 1.0)))
        current = session.settings()
        pick = state.get("profile_pick", NEW)
        if pick == NEW:
            new = cfg.add_profile(current, profile)
        else:
            new = cfg.update_profile(current, pick, profile)
        if state.get("profile_make_default"):
            new = cfg.set_default_profile(new, profile.name)
        elif new.default_profile == profile.name:
            new = cfg.set_default_profile(new, "")
    except cfg.SettingsError as e:
        session.set_notice("error", f"The profile was not saved: {e}")
        return
    if _save(profiles=new.profiles, default_profile=new.default_profile):
        state["profile_pick"] = profile.name
        session.set_notice("success", f"Calibration profile '{profile.name}' saved ({profile.um_per_px:g} µm/px).")


def _delete_profile() -> None:
    pick = st.session_state.get("profile_pick", NEW)
    try:
        new = cfg.remove_profile(session.settings(), pick)
    except cfg.SettingsError as e:
        session.set_notice("error", str(e))
        return
    if _save(profiles=new.profiles, default_profile=new.default_profile):
        st.session_state["profile_pick"] = NEW
        _fill_form(None)
        st.session_state["profile_delete_confirm"] = False
        session.set_notice("success", f"Calibration profile '{pick}' deleted.")


def _default_changed() -> None:
    try:
        new = cfg.set_default_profile(session.settings(), st.session_state.get("set_default_profile", ""))
    except cfg.SettingsError as e:
        session.set_notice("error", str(e))
        return
    _save(default_profile=new.default_profile)


def _use_measurement(um_per_px: float, note: str) -> None:
    st.session_state["profile_pick"] = NEW
    _fill_form(None, profile_um_per_px=float(f"{um_per_px:.6g}"), profile_date=date.today(), profile_note=note)
    session.set_notice("info", "The measured pixel size is in the profile form: name the profile and save it.")


def _measure(upload, division: float, max_pixels: int):
    """The measurement of this upload and division (computed once per session; numbers only are kept)."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    cache = st.session_state.setdefault(MEASURED, {})
    key = (digest, float(division))
    if key not in cache:
        measurement = measure_stage_micrometer_bytes(data, division_um=division, name=upload.name,
                                                     max_pixels=max_pixels)
        cache[key] = measurement
        session.record("calibration_measured", {"image_sha256": digest, "division_um": float(division),
                                                "um_per_px": measurement.um_per_px,
                                                "spacing_px": measurement.spacing_px,
                                                "quality": round(measurement.quality, 3)})
    return cache[key]


# ------------------------------------------------------------------------------------------------ thresholds
#: widget key -> (settings field, type)
THRESHOLDS = {"set_confidence": "confidence_threshold", "set_min_ecd": "min_ecd_px", "set_focus": "focus_threshold",
              "set_cleaning": "cleaning_strength", "set_include_border": "include_border",
              "set_max_mp": "max_megapixels", "set_idle": "idle_lock_minutes", "set_detector": "detector"}


def _threshold_changed(key: str) -> None:
    field = THRESHOLDS[key]
    value = st.session_state.get(key)
    if _save(**{field: value}) and field == "idle_lock_minutes":
        st.session_state.pop("idle_minutes", None)  # the sidebar's widget shows the new value on this run


vault = session.require_vault()
prefs = session.settings()
st.title("Settings")
st.caption("Saved in the encrypted vault; every change is recorded in the audit log.")

# Widgets show the saved settings: a change that was refused snaps back.
for widget_key, field_name in THRESHOLDS.items():
    st.session_state[widget_key] = getattr(prefs, field_name)
st.session_state["set_default_profile"] = prefs.default_profile
names = [p.name for p in prefs.profiles]
if st.session_state.get("profile_pick") not in [NEW, *names]:
    st.session_state["profile_pick"] = NEW
    _fill_form(None)
elif any(k not in st.session_state for k in FORM_KEYS):
    _picked()

# ------------------------------------------------------------------------------------------------ calibration
st.header("Calibration profiles")
st.write("A profile is the pixel size (µm per pixel) of one microscope and objective. Analyses use the default "
         "profile unless another one is picked; without a profile, sizes are reported in pixels.")
if prefs.profiles:
    st.dataframe(pd.DataFrame(cfg.profile_rows(prefs)), hide_index=True, width="stretch",
                 column_config={"µm per px": st.column_config.NumberColumn(format="%.5f"),
                                "default": st.column_config.CheckboxColumn()})
else:
    st.info("No calibration profile yet: add one below or measure it from a stage micrometer image.")
st.selectbox("Default profile", ["", *names], key="set_default_profile", on_change=_default_changed,
             format_func=lambda n: n or cfg.UNCALIBRATED_LABEL,
             help="Used by every new analysis unless the Analyze screen picks another profile.")

with st.expander("Measure the pixel size from a stage micrometer image", expanded=False):
    st.write("Photograph the ruled scale of a stage micrometer with the same microscope, objective and camera "
             "settings as the crystals, in focus, with at least 4 divisions across the image (any orientation). "
             "The image is only read in memory, it is not kept.")
    micrometer = st.file_uploader("Stage micrometer image (PNG, JPEG, TIFF or BMP)",
                                  type=["png", "jpg", "jpeg", "tif", "tiff", "bmp"], key="micrometer_upload")
    division = st.number_input("Spacing of one division (µm)", min_value=0.0, max_value=100_000.0, value=10.0,
                               step=1.0, format="%.3f", key="micrometer_division",
                               help="Printed on the micrometer: e.g. 10 µm for a 1 mm scale with 100 divisions.")
    if micrometer is not None:
        try:
            m = _measure(micrometer, division, int(round(prefs.max_megapixels * 1e6)))
        except CrystalQCError as e:
            st.error(f"No pixel size measured: {e}")
        else:
            c1, c2, c3, c4 = st.columns(4)
            c1.metric("Pixel size", f"{m.um_per_px:.5f} µm/px")
            c2.metric("Division spacing", f"{m.spacing_px:.2f} px")
            c3.metric("Divisions across the image", f"{m.n_periods:.1f}")
            c4.metric("Quality", f"{m.quality:.2f}")
            st.caption(f"Scale direction {m.angle_deg:.1f}° from the image's horizontal axis. Check the number of "
                       "divisions against the image: a wrong count means a wrong pixel size.")
            st.button("Use this pixel size for a new profile", key="micrometer_use", on_click=_use_measurement,
                      args=(m.um_per_px, cfg.micrometer_note(division, m.spacing_px, m.quality)))

st.subheader("Add or edit a profile")
st.selectbox("Profile", [NEW, *names], key="profile_pick", on_change=_picked)
with st.form("profile_form"):
    st.text_input("Name", key="profile_name", max_chars=80, help="e.g. 'Axio 10x'; unique.")
    st.number_input("Pixel size (µm per pixel)", min_value=0.0, max_value=cfg.MAX_PIXEL_SIZE_UM - 1.0, value=None,
                    step=0.001, format="%.6f", key="profile_um_per_px",
                    help="Micrometres covered by one pixel of the analysed image.")
    c1, c2 = st.columns(2)
    c1.text_input("Microscope", key="profile_microscope", max_chars=80)
    c2.text_input("Objective", key="profile_objective", max_chars=80, help="e.g. 10x")
    st.date_input("Calibrated on", value=None, key="profile_date")
    st.text_input("Note", key="profile_note", max_chars=80)
    st.number_input("Analysis scale", min_value=cfg.MIN_SCALE, max_value=cfg.MAX_SCALE, step=0.05, format="%.2f",
                    key="profile_scale",
                    help="1 = analyse images at their own size (images of small crystals are enlarged "
                         "automatically). Set 0.5 for an objective or camera that shows crystals about twice as "
                         "large as the development images (most crystals wider than ~120 px, outlines soft even in "
                         "focus): the real test tiles re-imaged that way went from F1 0.78 to 0.87. Positions and "
                         "sizes are always reported in the image's own pixels.")
    st.checkbox("Make this the default profile", key="profile_make_default")
    st.form_submit_button("Save profile", on_click=_save_profile)
if st.session_state.get("profile_pick", NEW) != NEW:
    pick_name = st.session_state["profile_pick"]
    confirm = st.checkbox(f"I want to delete the profile '{pick_name}'", key="profile_delete_confirm")
    st.button("Delete profile", key="profile_delete", disabled=not confirm, on_click=_delete_profile,
              help="Saved analyses keep the pixel size they were measured with.")

# ------------------------------------------------------------------------------------------------ thresholds
st.header("Detection thresholds")
st.slider("Minimum detector confidence", 0.0, 1.0, step=0.01, key="set_confidence",
          on_change=_threshold_changed, args=("set_confidence",),
          help="0 to 1. Objects the detector is less sure of are excluded as 'low confidence' (drawn, not "
               "counted). Higher: fewer false detections, more missed crystals. Default 0.05: the model's boxes "
               "scoring 0.05-0.25 count only where the outline of an object is found in them.")
lo, hi = cfg.RANGES["min_ecd_px"]
st.number_input("Minimum size (equivalent circular diameter, px)", min_value=lo, max_value=hi, step=0.5,
                format="%.2f", key="set_min_ecd", on_change=_threshold_changed, args=("set_min_ecd",),
                help="In pixels of the analysed image, not µm: it is about what the image can resolve. Objects "
                     "whose area equals a disk smaller than this diameter are excluded as dust. 0 keeps everything.")
default_profile = cfg.profile_by_name(prefs, prefs.default_profile)
size_note = f"= an area of {cfg.area_from_ecd(prefs.min_ecd_px):.1f} px²"
if default_profile is not None:
    size_note += f", {prefs.min_ecd_px * default_profile.um_per_px:.2f} µm with the profile '{default_profile.name}'"
st.caption(size_note)
lo, hi = cfg.RANGES["focus_threshold"]
st.number_input("Focus threshold (particle diameter / edge blur width)", min_value=lo, max_value=hi, step=0.1,
                format="%.1f", key="set_focus", on_change=_threshold_changed, args=("set_focus",),
                help="A ratio, no unit: a particle's ECD divided by the width of its blurred outline (both in px). "
                     "Below it the particle is excluded as out of focus. 3 = the blur must be narrower than a third "
                     "of the particle; 0 turns the check off.")

st.header("Image cleaning")
lo, hi = cfg.RANGES["cleaning_strength"]
st.slider("Cleaning strength", lo, hi, step=0.1, key="set_cleaning", on_change=_threshold_changed,
          args=("set_cleaning",),
          help="Multiplies the denoiser's smoothing before detection: 1 = tuned default, 0 = none. Raise it for "
               "noisy images; too much blurs thin crystal rims (they then read as out of focus).")

st.header("Border rule")
st.checkbox("Count particles touching the image border", key="set_include_border", on_change=_threshold_changed,
            args=("set_include_border",),
            help="A particle cut by the image edge shows only part of its size. Off (default): such particles are "
                 "drawn but not counted in the statistics.")

st.header("Image size cap")
lo, hi = cfg.RANGES["max_megapixels"]
st.number_input("Largest image accepted (megapixels)", min_value=lo, max_value=hi, step=1.0, format="%.1f",
                key="set_max_mp", on_change=_threshold_changed, args=("set_max_mp",),
                help="Larger images are refused before they are decoded (protects the computer against huge or "
                     "malicious files). 50 MP fits 2592 x 1944 frames and 40 MP cameras; larger images need more "
                     "memory and time.")

st.header("Idle lock")
st.number_input("Lock after … minutes without activity", min_value=cfg.MIN_IDLE_MINUTES,
                max_value=cfg.MAX_IDLE_MINUTES, step=1.0, key="set_idle", on_change=_threshold_changed,
                args=("set_idle",), help="The vault locks itself (keys wiped, screens cleared) after this time.")

st.header("Detector")
st.selectbox("Detector", list(cfg.DETECTORS), key="set_detector", on_change=_threshold_changed,
             args=("set_detector",),
             help="auto: the model activated on the Models screen, else the shipped model when installed, else the "
                  "classical one. classical: rule-based outlines, no neural network.")
