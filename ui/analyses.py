"""The analyses the app keeps in the vault: save one, list them, load one back (no Streamlit import).

Vault names (all encrypted, like everything in the vault)::

    images/<sha256 hex of the file>   kind "image"   the original file as uploaded (stored once per content)
    analyses/<id>/cleaned.png         kind "image"   the cleaned image, 16-bit grey PNG (ui.archive)
    analyses/<id>/particles.csv       kind "report"  analysis.report.particles_table as CSV
    analyses/<id>/summary.csv         kind "report"  analysis.report.summary_table as CSV
    analyses/<id>/result.json         kind "result"  ui.archive JSON; written LAST, so its presence marks a complete
                                                     analysis (an interrupted save leaves entries that are not listed)

``<id>`` is the UTC time ``YYYYmmddTHHMMSSZ`` + ``-`` + 8 random hex digits, so names sort by time. The index
metadata of ``result.json`` carries the summary shown in the history list, so listing decrypts nothing but the index.

Invalidation: a saved analysis is never deleted (a QC record must stay traceable). A lead who finds one wrong (wrong
image, lot or calibration) marks it invalid with a reason (:func:`invalidate_analysis`; ``analysis_invalidated`` in
the audit log); the mark lives in the index metadata of ``result.json`` (``invalidated``: reason, by, at), so the
history still lists it, flagged, while lot comparisons, trends and the industry comparison leave it out. It can be
restored with a reason (:func:`restore_analysis`, ``analysis_restored``). An invalidated analysis takes no
corrections until it is restored.

Checked mark: a technician who reviewed a result and found it right (with the corrections in force, if any) marks it
checked (:func:`set_checked`; ``analysis_checked`` / ``analysis_unchecked`` in the audit log); the mark lives in the
index metadata of ``result.json`` too (``checked``: by, at). A checked or corrected analysis is *reviewed*
(:attr:`AnalysisInfo.reviewed`): its result is a person's label for the image, which the labelled-data export chooses
by default and the acceptance test of a new model measures on (``ui.models.plant_set``).
"""
from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from analysis.records import ImageResult
from analysis.report import particles_table, summary_table, to_csv_bytes
from analysis.stats import summarize_result
from ui.archive import ArchiveFormatError, cleaned_from_png, cleaned_to_png, result_from_json, result_to_json
from vault import EntryNotFoundError, Vault

ANALYSES_PREFIX = "analyses/"
IMAGES_PREFIX = "images/"
REPORTS: tuple[str, ...] = ("particles", "summary")
SOURCES: tuple[str, ...] = ("upload", "sample")
_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
#: One read-modify-write of a saved analysis at a time: its corrections (ui.corrections) and its validity mark. The
#: app is one process and two sessions could change the same analysis at once.
WRITE_LOCK = threading.Lock()


@dataclass(frozen=True)
class AnalysisInfo:
    """One saved analysis as listed in the history. ``created`` is UTC ISO-8601; ``d50`` is the number-weighted
    D50 in ``unit`` ("µm" when calibrated, else "px"), None when nothing was counted. ``product`` and ``lot`` are the
    technician's labels, ``operator`` the vault user who saved it, ``profile`` the calibration profile's name ("" when
    none; analyses saved before these labels existed read back with "")."""

    analysis_id: str
    image_name: str
    created: str
    source: str
    image_sha256: str
    detector: str
    pixel_size_um: float | None
    n_crystals: int
    n_agglomerates: int
    d50: float | None
    unit: str
    product: str = ""
    lot: str = ""
    operator: str = ""
    profile: str = ""
    span: float | None = None  # number-weighted (D90 - D10) / D50, unit-free; None when unknown
    agglomerate_fraction: float | None = None  # agglomerates / counted, by count; None when unknown
    n_edits: int = 0  # corrections made on the Review screen (ui.corrections); 0 for entries saved before them
    invalid_reason: str = ""  # why a lead marked it invalid ("" = valid; see invalidate_analysis)
    invalid_by: str = ""
    invalid_at: str = ""  # UTC ISO-8601
    checked_by: str = ""  # who marked the result checked (set_checked); "" = not checked
    checked_at: str = ""  # UTC ISO-8601

    @property
    def valid(self) -> bool:
        return not self.invalid_reason

    @property
    def reviewed(self) -> bool:
        """A person corrected the result or checked it as right: it is a label for its image."""
        return self.n_edits > 0 or bool(self.checked_at)


@dataclass(frozen=True, eq=False)
class StoredAnalysis:
    """A saved analysis read back from the vault; ``result.cleaned`` is the stored cleaned image."""

    info: AnalysisInfo
    result: ImageResult


def new_analysis_id(now: datetime | None = None) -> str:
    """A fresh id: UTC time + 8 random hex digits."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def check_analysis_id(analysis_id: str) -> str:
    """Return ``analysis_id`` if it has the form of :func:`new_analysis_id`.

    Raises:
        ArchiveFormatError: anything else (never used to build a vault name).
    """
    if not isinstance(analysis_id, str) or not _ID_RE.match(analysis_id):
        raise ArchiveFormatError("That is not the id of a saved analysis.")
    return analysis_id


def entry_name(analysis_id: str, part: str) -> str:
    """Vault name of one part ("result.json", "cleaned.png", "particles.csv", "summary.csv") of an analysis."""
    return f"{ANALYSES_PREFIX}{check_analysis_id(analysis_id)}/{part}"


def report_csvs(result: ImageResult) -> dict[str, bytes]:
    """The CSV reports of one result: {"particles": bytes, "summary": bytes} (analysis.report encodings)."""
    return {"particles": to_csv_bytes(particles_table([result])), "summary": to_csv_bytes(summary_table([result]))}


MAX_LABEL_CHARS = 80
MAX_REASON_CHARS = 200


def clean_label(text: object, *, what: str = "label", max_chars: int = MAX_LABEL_CHARS) -> str:
    """A product/lot/profile label as stored: stripped, control characters refused, at most ``max_chars``.

    Raises:
        ValueError: not a string, control characters, or too long (the message names ``what``).
    """
    if not isinstance(text, str):
        raise ValueError(f"The {what} must be text.")
    text = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"The {what} cannot contain control characters (tabs, line breaks).")
    if len(text) > max_chars:
        raise ValueError(f"The {what} is too long (at most {max_chars} characters).")
    return text


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _optional_float(value: object) -> float | None:
    """An optional index number (absent in entries saved before it existed): a finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return _finite_or_none(float(value))


def _summary_meta(result: ImageResult) -> dict:
    summary = summarize_result(result)
    dv = summary.dvalues()
    return {"n_crystals": int(summary.n_crystals), "n_agglomerates": int(summary.n_agglomerates),
            "d50": _finite_or_none(dv.d50), "unit": summary.unit,
            "span": _finite_or_none(dv.span), "agglomerate_fraction": _finite_or_none(summary.agglomerate_fraction)}


def save_analysis(vault: Vault, image_bytes: bytes, result: ImageResult, *, source: str, user: str,
                  analysis_id: str | None = None, product: str = "", lot: str = "",
                  profile: str = "") -> AnalysisInfo:
    """Store the original file (once per content), the cleaned image, the CSV reports and the result; record
    ``import`` (when the original was not stored yet) and ``analysis`` in the audit log. Returns the new entry.
    ``product``/``lot``/``profile`` are labels (see :func:`clean_label`); ``user`` is recorded as the operator.

    Raises:
        ValueError: ``source`` not one of SOURCES, or a bad label. ArchiveFormatError. VaultError (locked, disk
        problems) and OSError (disk full) from the vault; a partly saved analysis is not listed.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    labels = {"product": clean_label(product, what="product"), "lot": clean_label(lot, what="lot"),
              "operator": str(user), "profile": clean_label(profile, what="calibration profile")}
    analysis_id = check_analysis_id(analysis_id or new_analysis_id())
    sha = hashlib.sha256(image_bytes).hexdigest()
    image_name = f"{IMAGES_PREFIX}{sha}"
    if not vault.exists(image_name):
        vault.put(image_name, image_bytes, kind="image",
                  meta={"name": result.name, "format": result.meta.format, "source": source})
        vault.audit.append("import", user=user, details={"image": result.name, "sha256": sha,
                                                         "bytes": len(image_bytes), "source": source})
    if result.cleaned is not None:
        vault.put(entry_name(analysis_id, "cleaned.png"), cleaned_to_png(result.cleaned), kind="image")
    for report, data in report_csvs(result).items():
        vault.put(entry_name(analysis_id, f"{report}.csv"), data, kind="report")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    extra = {"analysis_id": analysis_id, "created": created, "source": source, "image_sha256": sha, **labels}
    meta = {"image": result.name, "created": created, "source": source, "image_sha256": sha,
            "detector": result.detector, "pixel_size_um": result.pixel_size_um, **labels, **_summary_meta(result)}
    vault.put(entry_name(analysis_id, "result.json"), result_to_json(result, extra=extra), kind="result", meta=meta)
    info = _info(analysis_id, meta)
    vault.audit.append("analysis", user=user, details={
        "analysis_id": analysis_id, "image": result.name, "sha256": sha, "detector": result.detector,
        "n_crystals": info.n_crystals, "n_agglomerates": info.n_agglomerates, "pixel_size_um": result.pixel_size_um,
        "include_border": result.include_border, "product": labels["product"], "lot": labels["lot"],
        "profile": labels["profile"]})
    return info


def _invalid_fields(meta: dict) -> dict[str, str]:
    mark = meta.get("invalidated")
    if not isinstance(mark, dict):
        return {}
    reason = str(mark.get("reason") or "").strip() or "no reason recorded"
    return {"invalid_reason": reason, "invalid_by": str(mark.get("by") or ""), "invalid_at": str(mark.get("at") or "")}


def _checked_fields(meta: dict) -> dict[str, str]:
    mark = meta.get("checked")
    if not isinstance(mark, dict):
        return {}
    return {"checked_by": str(mark.get("by") or ""), "checked_at": str(mark.get("at") or "")}


def _info(analysis_id: str, meta: dict) -> AnalysisInfo:
    try:
        return AnalysisInfo(analysis_id=analysis_id, image_name=str(meta["image"]), created=str(meta["created"]),
                            source=str(meta["source"]), image_sha256=str(meta["image_sha256"]),
                            detector=str(meta["detector"]), pixel_size_um=meta["pixel_size_um"],
                            n_crystals=int(meta["n_crystals"]), n_agglomerates=int(meta["n_agglomerates"]),
                            d50=meta["d50"], unit=str(meta["unit"]),
                            **{k: str(meta.get(k) or "") for k in ("product", "lot", "operator", "profile")},
                            **{k: _optional_float(meta.get(k)) for k in ("span", "agglomerate_fraction")},
                            n_edits=int(meta.get("n_edits") or 0), **_invalid_fields(meta), **_checked_fields(meta))
    except (KeyError, TypeError, ValueError) as e:
        raise ArchiveFormatError(f"The saved analysis {analysis_id} has incomplete index information.") from e


def list_analyses(vault: Vault) -> list[AnalysisInfo]:
    """Every complete saved analysis, newest first (decrypts only the index). Entries with unreadable index
    information are skipped."""
    out = []
    for entry in vault.list(ANALYSES_PREFIX):
        parts = entry.name[len(ANALYSES_PREFIX):].split("/")
        if len(parts) != 2 or parts[1] != "result.json" or not _ID_RE.match(parts[0]):
            continue
        try:
            out.append(_info(parts[0], entry.meta))
        except ArchiveFormatError:
            continue
    return sorted(out, key=lambda a: a.analysis_id, reverse=True)


def _set_validity(vault: Vault, analysis_id: str, *, invalid: bool, reason: object, user: str) -> AnalysisInfo:
    reason = clean_label(reason, what="reason", max_chars=MAX_REASON_CHARS)
    if not reason:
        raise ValueError("Give a reason (it is kept with the analysis and in the audit log).")
    name = entry_name(analysis_id, "result.json")
    with WRITE_LOCK:
        meta = dict(vault.info(name).meta)
        info = _info(analysis_id, meta)
        if info.valid != invalid:
            state = "valid" if info.valid else f"already invalidated ({info.invalid_reason})"
            raise ValueError(f"The analysis {analysis_id} is {state}; nothing was changed.")
        if invalid:
            meta["invalidated"] = {"reason": reason, "by": str(user),
                                   "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        else:
            meta.pop("invalidated", None)
        vault.put(name, vault.get(name), kind="result", meta=meta)  # same record, new index metadata
    details = {"analysis_id": analysis_id, "image": info.image_name, "reason": reason}
    if not invalid:
        details["was_invalidated_for"] = info.invalid_reason
    vault.audit.append("analysis_invalidated" if invalid else "analysis_restored", user=user, details=details)
    return _info(analysis_id, meta)


def invalidate_analysis(vault: Vault, analysis_id: str, *, reason: str, user: str) -> AnalysisInfo:
    """Mark a saved analysis invalid (kept and listed, left out of comparisons and trends) and record
    ``analysis_invalidated`` with the reason. Returns the updated entry.

    Raises:
        ValueError: empty or unacceptable reason, or the analysis is invalidated already. ArchiveFormatError: bad id.
        EntryNotFoundError: no such analysis. VaultError, OSError from the vault.
    """
    return _set_validity(vault, analysis_id, invalid=True, reason=reason, user=user)


def restore_analysis(vault: Vault, analysis_id: str, *, reason: str, user: str) -> AnalysisInfo:
    """Undo :func:`invalidate_analysis` (the reason for restoring is required too) and record ``analysis_restored``.

    Raises:
        as :func:`invalidate_analysis` (ValueError when the analysis is not invalidated).
    """
    return _set_validity(vault, analysis_id, invalid=False, reason=reason, user=user)


def set_checked(vault: Vault, analysis_id: str, *, checked: bool, user: str) -> AnalysisInfo:
    """Mark a saved analysis checked by ``user`` (its result, with the corrections in force, is right) or remove the
    mark (module docstring); records ``analysis_checked`` / ``analysis_unchecked``. Returns the updated entry.

    Raises:
        ValueError: the analysis is marked invalid, or is already (not) checked. ArchiveFormatError: bad id.
        EntryNotFoundError: no such analysis. VaultError, OSError from the vault.
    """
    name = entry_name(analysis_id, "result.json")
    with WRITE_LOCK:
        meta = dict(vault.info(name).meta)
        info = _info(analysis_id, meta)
        if not info.valid:
            raise ValueError(f"The analysis {analysis_id} is marked invalid ({info.invalid_reason}); restore it "
                             "before checking it.")
        if bool(info.checked_at) == checked:
            state = f"already checked by {info.checked_by or 'a user'}" if checked else "not checked"
            raise ValueError(f"The analysis {analysis_id} is {state}; nothing was changed.")
        if checked:
            meta["checked"] = {"by": str(user), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        else:
            meta.pop("checked", None)
        vault.put(name, vault.get(name), kind="result", meta=meta)  # same record, new index metadata
    vault.audit.append("analysis_checked" if checked else "analysis_unchecked", user=user,
                       details={"analysis_id": analysis_id, "image": info.image_name, "n_edits": info.n_edits})
    return _info(analysis_id, meta)


def load_analysis(vault: Vault, analysis_id: str, *, with_cleaned: bool = True) -> StoredAnalysis:
    """Read a saved analysis back: result JSON + cleaned image (decrypted in memory only). ``with_cleaned=False``
    leaves the cleaned image unread (``result.cleaned`` None) for callers that need only the particles.

    Raises:
        ArchiveFormatError: bad id or unreadable record. EntryNotFoundError: no such analysis.
        VaultCorruptedError: a damaged entry.
    """
    name = entry_name(analysis_id, "result.json")
    info = _info(analysis_id, vault.info(name).meta)
    cleaned_name = entry_name(analysis_id, "cleaned.png")
    cleaned = cleaned_from_png(vault.get(cleaned_name)) if with_cleaned and vault.exists(cleaned_name) else None
    result, _ = result_from_json(vault.get(name), cleaned=cleaned)
    return StoredAnalysis(info=info, result=result)


def read_report(vault: Vault, analysis_id: str, report: str) -> bytes:
    """The stored CSV bytes of ``report`` ("particles" or "summary") of a saved analysis.

    Raises:
        ValueError: unknown report. ArchiveFormatError: bad id. EntryNotFoundError, VaultCorruptedError.
    """
    if report not in REPORTS:
        raise ValueError(f"report must be one of {REPORTS}, got {report!r}")
    return vault.get(entry_name(analysis_id, f"{report}.csv"))


def original_name(info: AnalysisInfo) -> str:
    """The vault name of a saved analysis's original image file.

    Raises:
        EntryNotFoundError: the analysis does not name a well-formed original.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", info.image_sha256):
        raise EntryNotFoundError("The saved analysis does not name its original image.")
    return f"{IMAGES_PREFIX}{info.image_sha256}"


def read_original(vault: Vault, info: AnalysisInfo) -> bytes:
    """The original image file of a saved analysis.

    Raises:
        EntryNotFoundError: the original was deleted. VaultCorruptedError.
    """
    return vault.get(original_name(info))


def export_original(vault: Vault, info: AnalysisInfo, *, user: str) -> bytes:
    """:func:`read_original` for a download: records ``export`` in the audit log, then returns the bytes.

    Raises:
        as :func:`read_original`; VaultError from the audit log.
    """
    data = read_original(vault, info)
    vault.audit.append("export", user=user, details={"analysis_id": info.analysis_id, "image": info.image_name,
                                                     "file": info.image_name})
    return data
