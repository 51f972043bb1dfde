"""The app's settings, kept in the vault as ``settings.json`` (no Streamlit import).

Schema (version 3)::

    {"version": 3,
     "profiles": [{"name": str, "um_per_px": float, "microscope": str, "objective": str,
                   "calibrated_on": "YYYY-MM-DD" | "", "note": str,
                   "analysis_scale": float}, ...],   # [0.25, 4], 1 = automatic; missing in older files = 1
     "default_profile": str,            # name of a profile; "" = uncalibrated (sizes in px)
     "confidence_threshold": float,     # [0, 1]      detector confidence below which an object is excluded
     "min_ecd_px": float,               # [0, 100]    px ECD below which an object is dust (0 = keep everything)
     "focus_threshold": float,          # [0, 20]     particle ECD / outline edge width (0 = no focus check)
     "cleaning_strength": float,        # [0, 3]      multiplies the denoiser's smoothing (1 = tuned default)
     "include_border": bool,            # count particles touching the image border
     "max_megapixels": float,           # [1, 100]    image size cap (MP), checked before decoding
     "idle_lock_minutes": float,        # [1, 240]
     "detector": "auto" | "classical",
     "pixel_size_um": float}            # legacy, see below

Defaults (:data:`DEFAULTS`) reproduce ``analysis.pipeline.AnalysisOptions()`` exactly: the minimum size of
8.74 px ECD is the dust limit ``ExclusionOptions.min_area_px`` = 60 px² (area = pi / 4 * ECD²).

Compatibility: version 1 files (``{"version": 1, "pixel_size_um", "include_border", "detector",
"idle_lock_minutes"}``, or no version at all) keep loading; a version 1 ``pixel_size_um`` > 0 becomes the profile
:data:`MIGRATED_PROFILE` and the default profile, so the old calibration keeps applying. ``pixel_size_um`` itself is
still read and written (the Analyze screen's manual pixel-size field uses it) but :func:`analysis_options` ignores
it: a calibration comes from a profile only.

Version 2 files (written up to session 6) hold the same fields. One value changed its meaning in between: the
default confidence floor went from 0.25 to 0.05 when the detector began to count low-scoring boxes that the
segmentation confirms (``detection.onnx_detector.CANDIDATE_THRESHOLD``). Every save writes every field, so a version 2
file holds 0.25 whenever nobody changed it, and that stored old default would silently switch the new objects off.
A version 2 (or older) ``confidence_threshold`` equal to :data:`LEGACY_CONFIDENCE_THRESHOLD` therefore reads as the
current default; :func:`migrate_stored_settings` writes that down once, as version 3, with a ``settings_migrated``
audit record (a lead who wants 0.25 sets it again; version 3 files are taken as they are).

Damage: a missing entry means the defaults; a field that is missing or out of range falls back to its default, an
invalid or duplicate profile is dropped, a default profile that names no profile becomes "" (each logged as a
warning without the value), so a damaged settings entry never locks a user out. Writing validates everything.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from datetime import date

from analysis.errors import CrystalQCError
from analysis.exclude import ExclusionOptions
from analysis.io import DEFAULT_MAX_PIXELS
from analysis.pipeline import AnalysisOptions
from analysis.preprocess import CleaningOptions
from analysis.rescale import MAX_SCALE, MIN_SCALE
from ui.analyses import clean_label
from vault import EntryNotFoundError, Vault

logger = logging.getLogger(__name__)

SETTINGS_NAME = "settings.json"
SETTINGS_VERSION = 3
#: The confidence floor every settings file held before version 3 unless a lead changed it (the default then).
LEGACY_CONFIDENCE_THRESHOLD = 0.25
DETECTORS: tuple[str, ...] = ("auto", "classical")
MIN_IDLE_MINUTES = 1.0
MAX_IDLE_MINUTES = 240.0
MAX_PIXEL_SIZE_UM = 1e4
MAX_PROFILES = 100
#: Name of the profile made from a version 1 ``pixel_size_um``.
MIGRATED_PROFILE = "Migrated calibration"

_EXCLUSION = ExclusionOptions()


def ecd_from_area(area_px: float) -> float:
    """Equivalent circular diameter (px) of an area (px²)."""
    return 2.0 * math.sqrt(float(area_px) / math.pi)


def area_from_ecd(ecd_px: float) -> float:
    """Area (px²) of a disk of diameter ``ecd_px``, rounded to 1e-6 px² so the default maps back exactly."""
    return round(math.pi / 4.0 * float(ecd_px) ** 2, 6)


DEFAULT_MIN_ECD_PX = ecd_from_area(_EXCLUSION.min_area_px)

#: Inclusive ranges of the numeric settings (pixel_size_um: [0, MAX_PIXEL_SIZE_UM)).
RANGES: dict[str, tuple[float, float]] = {
    "confidence_threshold": (0.0, 1.0),
    "min_ecd_px": (0.0, 100.0),
    "focus_threshold": (0.0, 20.0),
    "cleaning_strength": (0.0, 3.0),
    "max_megapixels": (1.0, 100.0),
    "idle_lock_minutes": (MIN_IDLE_MINUTES, MAX_IDLE_MINUTES),
}


class SettingsError(CrystalQCError, ValueError):
    """A settings or calibration-profile change that cannot be applied (the message says what to do)."""


@dataclass(frozen=True)
class CalibrationProfile:
    """One microscope/objective calibration: ``um_per_px`` micrometres per pixel of the analysed image.

    Text fields are stored stripped; ``calibrated_on`` is an ISO date ("2026-03-01") or "" (unknown).
    ``analysis_scale``: images of this microscope are analysed resized by this factor (``AnalysisOptions.scale``),
    e.g. 0.5 where crystals look twice as large as the shipped model was made for (a higher magnification, an
    oversampling camera: outlines soft even in focus); 1 = their own size, small crystals enlarged automatically.

    Raises:
        SettingsError: empty or invalid name, um_per_px not in (0, 1e4), bad date or text (message names the field).
    """

    name: str
    um_per_px: float
    microscope: str = ""
    objective: str = ""
    calibrated_on: str = ""
    note: str = ""
    analysis_scale: float = 1.0

    def __post_init__(self) -> None:
        try:
            name = clean_label(self.name, what="profile name")
            texts = {f: clean_label(getattr(self, f), what=f) for f in ("microscope", "objective", "note")}
        except ValueError as e:
            raise SettingsError(str(e)) from None
        if not name:
            raise SettingsError("Give the calibration profile a name (e.g. 'Axio 10x').")
        um = self.um_per_px
        if not (_is_number(um) and 0.0 < um < MAX_PIXEL_SIZE_UM):
            raise SettingsError(f"The pixel size of profile '{name}' must be a number of µm per pixel above 0 and "
                                f"below {MAX_PIXEL_SIZE_UM:g}.")
        scale = self.analysis_scale
        if not (_is_number(scale) and MIN_SCALE <= scale <= MAX_SCALE):
            raise SettingsError(f"The analysis scale of profile '{name}' must be a number from {MIN_SCALE:g} to "
                                f"{MAX_SCALE:g} (1 = the image's own size).")
        day = self.calibrated_on
        if not isinstance(day, str):
            raise SettingsError("The calibration date must be text (YYYY-MM-DD).")
        day = day.strip()
        if day:
            try:
                day = date.fromisoformat(day).isoformat()
            except ValueError:
                raise SettingsError(f"The calibration date of profile '{name}' must be a date like 2026-03-01."
                                    ) from None
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "um_per_px", float(um))
        object.__setattr__(self, "analysis_scale", float(scale))
        object.__setattr__(self, "calibrated_on", day)
        for field, value in texts.items():
            object.__setattr__(self, field, value)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AppSettings:
    """The app's settings (see the module docstring for units and ranges).

    ``pixel_size_um`` is legacy (version 1, the Analyze screen's manual field; 0 = uncalibrated);
    :func:`analysis_options` takes the calibration from ``default_profile`` (or a profile chosen per analysis).
    Construction does not validate (so a damaged value can be shown); :func:`settings_to_json` and
    :func:`check_settings` do.
    """

    pixel_size_um: float = 0.0
    include_border: bool = False
    detector: str = "auto"
    idle_lock_minutes: float = 15.0
    profiles: tuple[CalibrationProfile, ...] = ()
    default_profile: str = ""
    confidence_threshold: float = _EXCLUSION.confidence_threshold
    min_ecd_px: float = DEFAULT_MIN_ECD_PX
    focus_threshold: float = _EXCLUSION.focus_threshold
    cleaning_strength: float = CleaningOptions().strength
    max_megapixels: float = DEFAULT_MAX_PIXELS / 1e6


DEFAULTS = AppSettings()
_SCALARS = tuple(f.name for f in dataclasses.fields(AppSettings) if f.name not in ("profiles", "default_profile"))


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _valid(name: str, value: object) -> bool:
    if name == "include_border":
        return isinstance(value, bool)
    if name == "detector":
        return value in DETECTORS
    if not _is_number(value):
        return False
    if name == "pixel_size_um":
        return 0.0 <= value < MAX_PIXEL_SIZE_UM
    lo, hi = RANGES[name]
    return lo <= value <= hi


def _range_text(name: str) -> str:
    if name == "include_border":
        return "true or false"
    if name == "detector":
        return "one of " + ", ".join(DETECTORS)
    if name == "pixel_size_um":
        return f"0 to below {MAX_PIXEL_SIZE_UM:g}"
    lo, hi = RANGES[name]
    return f"{lo:g} to {hi:g}"


def _norm(name: str) -> str:
    return name.strip().casefold()


def check_settings(settings: AppSettings) -> None:
    """Raise SettingsError (message names the field and its range) unless every field is valid."""
    for name in _SCALARS:
        if not _valid(name, getattr(settings, name)):
            raise SettingsError(f"setting {name} is out of range (allowed: {_range_text(name)})")
    profiles = settings.profiles
    if not isinstance(profiles, tuple) or not all(isinstance(p, CalibrationProfile) for p in profiles):
        raise SettingsError("setting profiles must be a tuple of calibration profiles")
    if len(profiles) > MAX_PROFILES:
        raise SettingsError(f"at most {MAX_PROFILES} calibration profiles can be kept; delete unused ones")
    seen: set[str] = set()
    for p in profiles:
        if _norm(p.name) in seen:
            raise SettingsError(f"two calibration profiles are named '{p.name}'; names must be unique")
        seen.add(_norm(p.name))
    if settings.default_profile != "" and profile_by_name(settings, settings.default_profile) is None:
        raise SettingsError(f"the default profile '{settings.default_profile}' does not exist")


# ------------------------------------------------------------------------------------------------ profiles
def profile_by_name(settings: AppSettings, name: str) -> CalibrationProfile | None:
    """The profile called ``name`` (exact match after stripping spaces), or None."""
    if not isinstance(name, str):
        return None
    name = name.strip()
    return next((p for p in settings.profiles if p.name == name), None)


def _require(settings: AppSettings, name: str) -> CalibrationProfile:
    profile = profile_by_name(settings, name)
    if profile is None:
        known = ", ".join(f"'{p.name}'" for p in settings.profiles) or "none yet"
        raise SettingsError(f"There is no calibration profile named '{name}' (profiles: {known}). Pick one on the "
                            "Settings screen or create it there.")
    return profile


def _clash(settings: AppSettings, name: str, *, ignore: str | None = None) -> None:
    for p in settings.profiles:
        if p.name != ignore and _norm(p.name) == _norm(name):
            raise SettingsError(f"A calibration profile named '{p.name}' already exists; choose another name or "
                                "edit that profile.")


def add_profile(settings: AppSettings, profile: CalibrationProfile, *, make_default: bool = False) -> AppSettings:
    """A copy of ``settings`` with ``profile`` added (and made the default when asked).

    Raises:
        SettingsError: a profile with that name (case-insensitive) exists, or MAX_PROFILES reached.
    """
    if not isinstance(profile, CalibrationProfile):
        raise TypeError("profile must be a CalibrationProfile")
    _clash(settings, profile.name)
    if len(settings.profiles) >= MAX_PROFILES:
        raise SettingsError(f"At most {MAX_PROFILES} calibration profiles can be kept; delete unused ones first.")
    return dataclasses.replace(settings, profiles=settings.profiles + (profile,),
                               default_profile=profile.name if make_default else settings.default_profile)


def update_profile(settings: AppSettings, name: str, profile: CalibrationProfile) -> AppSettings:
    """A copy of ``settings`` with the profile ``name`` replaced by ``profile`` (same position; a rename is
    followed by the default profile).

    Raises:
        SettingsError: no profile ``name``, or the new name is taken by another profile.
    """
    old = _require(settings, name)
    _clash(settings, profile.name, ignore=old.name)
    profiles = tuple(profile if p.name == old.name else p for p in settings.profiles)
    default = profile.name if settings.default_profile == old.name else settings.default_profile
    return dataclasses.replace(settings, profiles=profiles, default_profile=default)


def remove_profile(settings: AppSettings, name: str) -> AppSettings:
    """A copy of ``settings`` without the profile ``name``; removing the default profile makes analyses
    uncalibrated (default "") until another default is chosen.

    Raises:
        SettingsError: no profile ``name``.
    """
    old = _require(settings, name)
    default = "" if settings.default_profile == old.name else settings.default_profile
    return dataclasses.replace(settings, profiles=tuple(p for p in settings.profiles if p.name != old.name),
                               default_profile=default)


def set_default_profile(settings: AppSettings, name: str) -> AppSettings:
    """A copy of ``settings`` whose default profile is ``name`` ("" = uncalibrated).

    Raises:
        SettingsError: no profile ``name``.
    """
    return dataclasses.replace(settings, default_profile="" if name == "" else _require(settings, name).name)


def analysis_options(settings: AppSettings, *, profile: str | None = None) -> AnalysisOptions:
    """The AnalysisOptions these settings stand for.

    profile: None = ``settings.default_profile``; "" = uncalibrated (sizes in px); else a profile name.
    Maps: pixel_size_um <- the profile's um_per_px; scale <- its analysis_scale; include_border;
    cleaning.strength <- cleaning_strength;
    exclusion.confidence_threshold, .focus_threshold, .min_area_px <- pi / 4 * min_ecd_px²;
    max_pixels <- max_megapixels * 1e6. Everything else keeps the pipeline's defaults.

    Raises:
        SettingsError (a ValueError): unknown profile name, or a setting out of range.
    """
    check_settings(settings)
    name = settings.default_profile if profile is None else profile
    chosen = None if name == "" else _require(settings, name)
    return AnalysisOptions(
        pixel_size_um=None if chosen is None else chosen.um_per_px,
        scale=1.0 if chosen is None else chosen.analysis_scale,
        include_border=settings.include_border,
        cleaning=dataclasses.replace(CleaningOptions(), strength=float(settings.cleaning_strength)),
        exclusion=dataclasses.replace(ExclusionOptions(), confidence_threshold=float(settings.confidence_threshold),
                                      focus_threshold=float(settings.focus_threshold),
                                      min_area_px=area_from_ecd(settings.min_ecd_px)),
        max_pixels=int(round(settings.max_megapixels * 1e6)),
    )


# ------------------------------------------------------------------------------------------------ display
UNCALIBRATED_LABEL = "Uncalibrated (sizes in px)"


def profile_rows(settings: AppSettings) -> list[dict]:
    """One row per profile for a table: name, µm per px, microscope, objective, calibrated on, analysis scale,
    note, default."""
    return [{"name": p.name, "µm per px": p.um_per_px, "microscope": p.microscope, "objective": p.objective,
             "calibrated on": p.calibrated_on, "analysis scale": p.analysis_scale, "note": p.note,
             "default": p.name == settings.default_profile}
            for p in settings.profiles]


def micrometer_note(division_um: float, spacing_px: float, quality: float) -> str:
    """The note kept with a profile measured from a stage micrometer image (fits a label)."""
    return f"stage micrometer: {division_um:g} µm divisions, {spacing_px:.3f} px apart, quality {quality:.2f}"


# ------------------------------------------------------------------------------------------------ JSON
def _profiles_from_json(items: object) -> tuple[CalibrationProfile, ...]:
    if not isinstance(items, list):
        logger.warning("stored calibration profiles are not a list; none are used")
        return ()
    profiles: list[CalibrationProfile] = []
    seen: set[str] = set()
    fields = {f.name for f in dataclasses.fields(CalibrationProfile)}
    for i, item in enumerate(items[:MAX_PROFILES]):
        try:
            if not isinstance(item, dict):
                raise SettingsError("not an object")
            profile = CalibrationProfile(**{k: v for k, v in item.items() if k in fields})
        except (SettingsError, TypeError):
            logger.warning("stored calibration profile #%d is invalid; it is left out", i + 1)
            continue
        if _norm(profile.name) in seen:
            logger.warning("stored calibration profile #%d repeats a name; it is left out", i + 1)
            continue
        seen.add(_norm(profile.name))
        profiles.append(profile)
    if len(items) > MAX_PROFILES:
        logger.warning("more than %d stored calibration profiles; the rest are left out", MAX_PROFILES)
    return tuple(profiles)


def _stored_version(doc: dict) -> object:
    return doc.get("version", 1)


def _legacy_changes(doc: dict) -> dict[str, list]:
    """``{field: [stored, current]}`` for the values of a pre-version-3 document that stand for an old default
    (see the module docstring); empty for version 3 and later."""
    version = _stored_version(doc)
    if not _is_number(version) or version >= 3:
        return {}
    stored = doc.get("confidence_threshold")
    if _is_number(stored) and stored == LEGACY_CONFIDENCE_THRESHOLD != DEFAULTS.confidence_threshold:
        return {"confidence_threshold": [float(stored), DEFAULTS.confidence_threshold]}
    return {}


def settings_from_json(data: bytes) -> AppSettings:
    """Settings from JSON bytes (version 1, 2 or 3); unreadable JSON or invalid fields fall back to the defaults
    (with a warning). A version 1 pixel size > 0 becomes the default profile :data:`MIGRATED_PROFILE`; a version 1
    or 2 confidence floor of :data:`LEGACY_CONFIDENCE_THRESHOLD` reads as the current default."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        logger.warning("the stored settings are not valid JSON; using the defaults")
        return DEFAULTS
    if not isinstance(doc, dict):
        logger.warning("the stored settings are not a JSON object; using the defaults")
        return DEFAULTS
    version = _stored_version(doc)
    if _is_number(version) and version > SETTINGS_VERSION:
        logger.warning("the stored settings come from a newer version (%s); reading the fields this version knows",
                       version)
    values: dict[str, object] = {}
    for name in _SCALARS:
        value = doc.get(name, getattr(DEFAULTS, name))
        if not _valid(name, value):
            logger.warning("stored setting %s is invalid; using its default", name)
            value = getattr(DEFAULTS, name)
        values[name] = value if name in ("include_border", "detector") else float(value)
    for name, (_, current) in _legacy_changes(doc).items():
        values[name] = current
    if version == 1:
        profiles: tuple[CalibrationProfile, ...] = ()
        default = ""
        if values["pixel_size_um"] > 0:
            profiles = (CalibrationProfile(MIGRATED_PROFILE, values["pixel_size_um"],
                                           note="pixel size set before calibration profiles existed"),)
            default = MIGRATED_PROFILE
    else:
        profiles = _profiles_from_json(doc.get("profiles", []))
        default = doc.get("default_profile", "")
        if not isinstance(default, str) or (default and not any(p.name == default for p in profiles)):
            logger.warning("the stored default calibration profile does not exist; analyses are uncalibrated")
            default = ""
    return AppSettings(profiles=profiles, default_profile=default, **values)


def settings_to_json(settings: AppSettings) -> bytes:
    """Canonical JSON bytes (version SETTINGS_VERSION, sorted keys) of ``settings``.

    Raises:
        SettingsError (a ValueError): a field is out of range (the message names the field).
    """
    check_settings(settings)
    doc: dict[str, object] = {"version": SETTINGS_VERSION}
    for name in _SCALARS:
        value = getattr(settings, name)
        doc[name] = value if name in ("include_border", "detector") else float(value)
    doc["profiles"] = [p.to_json() for p in settings.profiles]
    doc["default_profile"] = settings.default_profile
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def load_settings(vault: Vault) -> AppSettings:
    """The settings stored in ``vault``, or the defaults when there are none.

    Raises:
        VaultLockedError, VaultCorruptedError (a damaged entry).
    """
    try:
        return settings_from_json(vault.get(SETTINGS_NAME))
    except EntryNotFoundError:
        return DEFAULTS


def migrate_stored_settings(vault: Vault, *, user: str) -> dict[str, list]:
    """Write the stored settings down as the current version when reading them changed a value (see the module
    docstring), recording ``settings_migrated`` with ``{"changed": {field: [old, new]}, "from_version": v}``.
    Returns those changes ({} when there is nothing to migrate: no entry, version 3, or no old default stored).

    Raises:
        VaultLockedError, VaultCorruptedError (a damaged entry). VaultError, OSError from the vault.
    """
    try:
        raw = vault.get(SETTINGS_NAME)
    except EntryNotFoundError:
        return {}
    try:
        doc = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}  # unreadable: settings_from_json falls back to the defaults and says so
    changes = _legacy_changes(doc) if isinstance(doc, dict) else {}
    if not changes:
        return {}
    vault.put(SETTINGS_NAME, settings_to_json(settings_from_json(raw)), kind="settings")
    vault.audit.append("settings_migrated", user=user,
                       details={"changed": changes, "from_version": _stored_version(doc)})
    logger.info("settings migrated to version %d: %s", SETTINGS_VERSION, ", ".join(changes))
    return changes


def _profile_changes(old: tuple[CalibrationProfile, ...], new: tuple[CalibrationProfile, ...]) -> dict:
    """``{"added": {name: um_per_px}, "removed": {name: um_per_px}, "changed": {name: {field: [old, new]}}}``
    (empty parts left out). A renamed profile reads as removed + added."""
    before = {p.name: p for p in old}
    after = {p.name: p for p in new}
    out: dict[str, dict] = {}
    added = {n: p.um_per_px for n, p in after.items() if n not in before}
    removed = {n: p.um_per_px for n, p in before.items() if n not in after}
    changed = {}
    for n in before.keys() & after.keys():
        diff = {f.name: [getattr(before[n], f.name), getattr(after[n], f.name)]
                for f in dataclasses.fields(CalibrationProfile)
                if getattr(before[n], f.name) != getattr(after[n], f.name)}
        if diff:
            changed[n] = diff
    for key, part in (("added", added), ("removed", removed), ("changed", changed)):
        if part:
            out[key] = part
    if not out and [p.name for p in old] != [p.name for p in new]:
        out["order"] = [[p.name for p in old], [p.name for p in new]]
    return out


def save_settings(vault: Vault, settings: AppSettings, *, user: str) -> dict:
    """Store ``settings`` and record ``settings_change`` with the changed fields (old and new values; profiles as
    added/removed/changed, see :func:`_profile_changes`). Returns the changes; nothing is written when nothing
    changed.

    Raises:
        SettingsError (a ValueError): a field out of range. VaultError, OSError from the vault.
    """
    raw = settings_to_json(settings)
    old = load_settings(vault)
    changes: dict[str, object] = {}
    for f in dataclasses.fields(AppSettings):
        before, after = getattr(old, f.name), getattr(settings, f.name)
        if before == after:
            continue
        if f.name == "profiles":
            changes["profiles"] = _profile_changes(before, after)
        else:
            changes[f.name] = [before, after]
    if not changes:
        return {}
    vault.put(SETTINGS_NAME, raw, kind="settings")
    vault.audit.append("settings_change", user=user, details={"changed": changes})
    return changes
