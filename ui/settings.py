"""The app's settings, kept in the vault as ``settings.json`` (no Streamlit import).

JSON: ``{"version": 1, "pixel_size_um": float >= 0 (0 = uncalibrated), "include_border": bool,
"detector": "auto" | "classical", "idle_lock_minutes": float in [1, 240]}``. A missing entry means the defaults; a
field that is missing or out of range falls back to its default (logged as a warning without the value), so a
damaged settings entry never locks a user out.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

from vault import EntryNotFoundError, Vault

logger = logging.getLogger(__name__)

SETTINGS_NAME = "settings.json"
DETECTORS: tuple[str, ...] = ("auto", "classical")
MIN_IDLE_MINUTES = 1.0
MAX_IDLE_MINUTES = 240.0
MAX_PIXEL_SIZE_UM = 1e4


@dataclass(frozen=True)
class AppSettings:
    """``pixel_size_um`` µm per pixel (0 = uncalibrated); ``idle_lock_minutes`` idle time before the app locks."""

    pixel_size_um: float = 0.0
    include_border: bool = False
    detector: str = "auto"
    idle_lock_minutes: float = 15.0


DEFAULTS = AppSettings()


def _valid(name: str, value: object) -> bool:
    if name == "include_border":
        return isinstance(value, bool)
    if name == "detector":
        return value in DETECTORS
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if name == "pixel_size_um":
        return 0.0 <= value < MAX_PIXEL_SIZE_UM
    return MIN_IDLE_MINUTES <= value <= MAX_IDLE_MINUTES  # idle_lock_minutes


def settings_from_json(data: bytes) -> AppSettings:
    """Settings from JSON bytes; unreadable JSON or invalid fields fall back to the defaults (with a warning)."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        logger.warning("the stored settings are not valid JSON; using the defaults")
        return DEFAULTS
    if not isinstance(doc, dict):
        logger.warning("the stored settings are not a JSON object; using the defaults")
        return DEFAULTS
    values = {}
    for field in dataclasses.fields(AppSettings):
        value = doc.get(field.name, getattr(DEFAULTS, field.name))
        if not _valid(field.name, value):
            logger.warning("stored setting %s is invalid; using its default", field.name)
            value = getattr(DEFAULTS, field.name)
        values[field.name] = float(value) if field.type == "float" else value
    return AppSettings(**values)


def settings_to_json(settings: AppSettings) -> bytes:
    """Canonical JSON bytes (sorted keys) of ``settings``.

    Raises:
        ValueError: a field is out of range (the message names the field).
    """
    doc = {"version": 1}
    for field in dataclasses.fields(AppSettings):
        value = getattr(settings, field.name)
        if not _valid(field.name, value):
            raise ValueError(f"setting {field.name} is out of range")
        doc[field.name] = value
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def load_settings(vault: Vault) -> AppSettings:
    """The settings stored in ``vault``, or the defaults when there are none.

    Raises:
        VaultLockedError, VaultCorruptedError (a damaged entry).
    """
    try:
        return settings_from_json(vault.get(SETTINGS_NAME))
    except EntryNotFoundError:
        return DEFAULTS


def save_settings(vault: Vault, settings: AppSettings, *, user: str) -> dict:
    """Store ``settings`` and record ``settings_change`` with the changed fields (old and new values).
    Returns the changes ``{field: [old, new]}``; nothing is written when nothing changed.

    Raises:
        ValueError: a field out of range. VaultError, OSError from the vault.
    """
    old = load_settings(vault)
    changes = {f.name: [getattr(old, f.name), getattr(settings, f.name)] for f in dataclasses.fields(AppSettings)
               if getattr(old, f.name) != getattr(settings, f.name)}
    if not changes:
        return {}
    vault.put(SETTINGS_NAME, settings_to_json(settings), kind="settings")
    vault.audit.append("settings_change", user=user, details={"changed": changes})
    return changes
