"""Researcher model packages in the vault: trusted keys, import with acceptance test, activation and rollback.

Pure logic (no Streamlit) over an unlocked :class:`vault.Vault`; the Models screen (screens/models.py) and the
Analyze screen call it. Vault entries:

* ``models/trusted_keys.json`` (kind ``settings``): keys the QC lead added, ``{"keys": [{"fingerprint", "pem",
  "label", "added_by", "added"}]}``; the keys in ``weights/trusted_keys/*.pub`` (the project key) are trusted too.
* ``models/packages/<name>-<version>.cqcpkg`` (kind ``model``): every accepted package, byte for byte as signed;
  meta = manifest summary + the acceptance report. Versions are never deleted, so rollback can always go back.
* ``models/active.json`` (kind ``settings``): ``{"active": entry name or null, "history": [previous, ...]}``.

The acceptance test (:func:`acceptance_test`) compares the candidate with the current model on rendered golden
images and, when technicians have reviewed enough analyses, on the plant's own images (:func:`plant_set`).

Audit events: ``trusted_key_added``, ``trusted_key_removed``, ``model_import``, ``model_compared``,
``model_activation``. Raises ModelPackageError (bad package,
key or stored model) and the vault's errors; every message is safe to show.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import partial
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis.errors import ModelPackageError
from analysis.pipeline import AUTO_WITH_MODEL, Detector
from detection.evaluate import (
    HELD_OUT_SEED_BASE, EvalReport, LabelledImage, compare, evaluate, labelled_from_result, synthetic_set,
)
from detection.metrics import PairedDifference
from detection.package import (
    ValidatedPackage, first_inference, fingerprint, format_fingerprint, load_trusted_keys, public_key_pem,
    public_key_raw, unpack, validate_package,
)
from vault import EntryNotFoundError, Vault

logger = logging.getLogger(__name__)

TRUSTED_KEYS_DIR = Path(__file__).resolve().parent.parent / "weights" / "trusted_keys"
TRUSTED_KEYS_ENTRY = "models/trusted_keys.json"
ACTIVE_ENTRY = "models/active.json"
PACKAGE_PREFIX = "models/packages/"
MAX_PUBLIC_KEY_BYTES = 4096
#: Golden set of the acceptance test: held-out rendered images (seeds never used for training).
GOLDEN_SEED = HELD_OUT_SEED_BASE + 50_000
GOLDEN_IMAGES = 3
GOLDEN_SIZE = (1280, 1024)
GOLDEN_DIFFICULTY = "medium"
#: The candidate is flagged (not refused) when its count accuracy or F1 is this much below the current model's.
WORSE_BY = 0.05
#: Key of the acceptance rows' sizing column: median found / labelled ECD of the matched crystals (1 = unbiased).
SIZE_KEY = "size found / labelled"
#: A candidate whose sizing is this much further from 1 than the current model's is flagged: 3 % more bias moves
#: every D-value by about as much, more than a lot-to-lot difference a QC lead would act on.
SIZE_WORSE_BY = 0.03
SANDBOX_TIMEOUT_S = 60
#: The plant's own reviewed analyses in the acceptance test (:func:`plant_set`): at most this many, newest first
#: (each is analysed by both models; with 30 reviewed 2592 x 1944 images the whole acceptance test, golden set
#: included, took 61, 62 and 64 s in three runs on a 2-core Intel Xeon: bench/bench_acceptance.py).
PLANT_MAX_IMAGES = 30
#: With fewer reviewed analyses than this there is no comparison on plant images: an interval over 3 or 4 images
#: says little, and a QC lead would read a difference there as a finding.
PLANT_MIN_IMAGES = 5
#: Bootstrap draws of the paired interval on the plant images (detection.metrics.paired_bootstrap).
PLANT_BOOTSTRAP_DRAWS = 2000
#: Name of the plant-image check in an acceptance report's ``worse`` list.
PLANT_WORSE = "plant images"
#: The plant-image check flags a candidate whose F1 or count accuracy is lower beyond the luck of the images (the
#: interval's upper end below 0) and by at least this much: with hundreds of crystals a consistent loss of a few
#: thousandths is "significant" but nothing a QC lead would act on (the golden set's margin is WORSE_BY).
PLANT_MIN_DROP = 0.01
#: Box matching on the plant images: IoU 0.3, as on the real development tiles (detection.evaluate's --real-iou).
#: Their labels are a model's outlines checked and corrected by hand, so the model that made them matches its own
#: boxes exactly; a looser match keeps a candidate's slightly different outline of the same crystal from counting as
#: a miss.
PLANT_IOU = 0.3


@dataclass(frozen=True)
class TrustedKey:
    fingerprint: str  # 64 hex
    label: str
    source: str  # "shipped" or "vault"
    added_by: str = ""
    added: str = ""

    @property
    def display(self) -> str:
        return format_fingerprint(self.fingerprint)


@dataclass(frozen=True)
class ModelEntry:
    """One accepted package in the vault (from its index meta; nothing decrypted)."""

    entry: str
    name: str
    version: str
    author: str
    created: str
    classes: tuple[str, ...]
    sha256: str
    key_id: str
    metrics: Mapping[str, Any]
    imported: str
    imported_by: str
    acceptance: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


# ------------------------------------------------------------------------------------------------ trusted keys
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stored_keys(vault: Vault) -> list[dict]:
    if not vault.exists(TRUSTED_KEYS_ENTRY):
        return []
    try:
        data = json.loads(vault.get(TRUSTED_KEYS_ENTRY))
        keys = data["keys"]
        if not isinstance(keys, list):
            raise TypeError
        return [k for k in keys if isinstance(k, dict)]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelPackageError("The list of trusted keys in the vault is unreadable; restore the vault from a"
                                " backup or re-add the keys.") from e


def key_fingerprint(pem: bytes) -> str:
    """Fingerprint (64 hex) of an Ed25519 public key file. Raises ModelPackageError when it is not one."""
    if len(pem) > MAX_PUBLIC_KEY_BYTES:
        raise ModelPackageError("This file is too large to be a public key (a .pub file is a few hundred bytes).")
    return fingerprint(public_key_raw(pem))


def list_trusted_keys(vault: Vault) -> list[TrustedKey]:
    """Shipped keys (weights/trusted_keys) first, then the ones added in this vault."""
    keys = [TrustedKey(fp, "project key (shipped)", "shipped") for fp in load_trusted_keys(TRUSTED_KEYS_DIR)]
    seen = {k.fingerprint for k in keys}
    for k in _stored_keys(vault):
        fp = str(k.get("fingerprint", ""))
        if fp not in seen:
            keys.append(TrustedKey(fp, str(k.get("label", "")), "vault", str(k.get("added_by", "")),
                                   str(k.get("added", ""))))
            seen.add(fp)
    return keys


def trusted_keys(vault: Vault) -> dict[str, bytes]:
    """Fingerprint -> raw public key: the shipped keys plus the vault's (each checked against its fingerprint)."""
    keys = dict(load_trusted_keys(TRUSTED_KEYS_DIR))
    for k in _stored_keys(vault):
        raw = public_key_raw(str(k.get("pem", "")).encode("ascii", "replace"))
        if fingerprint(raw) != k.get("fingerprint"):
            raise ModelPackageError("A trusted key in the vault does not match its fingerprint; the list was altered.")
        keys[fingerprint(raw)] = raw
    return keys


def add_trusted_key(vault: Vault, pem: bytes, *, label: str, user: str) -> str:
    """Trust a researcher's public key (after the QC lead compared its fingerprint); returns the fingerprint.

    Audited as ``trusted_key_added``. Raises ModelPackageError for a file that is not an Ed25519 public key or a
    key that is already trusted.
    """
    fp = key_fingerprint(pem)
    if fp in trusted_keys(vault):
        raise ModelPackageError(f"The key {format_fingerprint(fp)} is already trusted.")
    raw = public_key_raw(pem)  # stored as the canonical PEM, not the uploaded text
    keys = _stored_keys(vault) + [{"fingerprint": fp, "pem": public_key_pem(raw).decode("ascii"),
                                   "label": label.strip()[:200], "added_by": user, "added": _now()}]
    vault.put(TRUSTED_KEYS_ENTRY, json.dumps({"keys": keys}, sort_keys=True).encode("utf-8"), kind="settings")
    vault.audit.append("trusted_key_added", user=user, details={"fingerprint": fp, "label": label.strip()[:200]})
    return fp


def remove_trusted_key(vault: Vault, fp: str, *, user: str) -> None:
    """Stop trusting a key added in this vault: packages signed by it can no longer be imported. Models already
    accepted stay installed (their bytes are checked against the accepted sha256), but the key of the ACTIVE model
    cannot be removed - activate another model or roll back first. Audited as ``trusted_key_removed``.

    Raises ModelPackageError: a shipped key (it lives in weights/trusted_keys, not in the vault), an unknown key, or
    the active model's key.
    """
    if fp in dict(load_trusted_keys(TRUSTED_KEYS_DIR)):
        raise ModelPackageError("The shipped project key cannot be removed here; it comes with the installation.")
    keys = _stored_keys(vault)
    kept = [k for k in keys if k.get("fingerprint") != fp]
    if len(kept) == len(keys):
        raise ModelPackageError(f"The key {format_fingerprint(fp)} is not in this vault's trusted keys.")
    active = active_model(vault)
    if active is not None and active.key_id == fp:
        raise ModelPackageError(f"The active model {active.label} is signed by this key: activate another model or"
                                " roll back before removing the key.")
    vault.put(TRUSTED_KEYS_ENTRY, json.dumps({"keys": kept}, sort_keys=True).encode("utf-8"), kind="settings")
    vault.audit.append("trusted_key_removed", user=user, details={"fingerprint": fp})


# ------------------------------------------------------------------------------------------------ installed models
def _entry_from_info(info) -> ModelEntry:
    m = info.meta or {}
    return ModelEntry(
        entry=info.name, name=str(m.get("name", "")), version=str(m.get("version", "")),
        author=str(m.get("author", "")), created=str(m.get("created", "")),
        classes=tuple(m.get("classes", ())), sha256=str(m.get("sha256", "")), key_id=str(m.get("key_id", "")),
        metrics=m.get("metrics") or {}, imported=str(m.get("imported", info.created)),
        imported_by=str(m.get("imported_by", "")), acceptance=m.get("acceptance") or {})


def installed_models(vault: Vault) -> list[ModelEntry]:
    """Every accepted package in the vault, sorted by entry name."""
    return [_entry_from_info(i) for i in vault.list(PACKAGE_PREFIX) if i.kind == "model"]


def accepted_versions(vault: Vault) -> dict[str, list[str]]:
    """name -> versions already accepted (the no-rollback rule of validate_package)."""
    out: dict[str, list[str]] = {}
    for m in installed_models(vault):
        out.setdefault(m.name, []).append(m.version)
    return out


def package_entry_name(name: str, version: str) -> str:
    return f"{PACKAGE_PREFIX}{name}-{version}.cqcpkg"


# ------------------------------------------------------------------------------------------------ import
def check_package(vault: Vault, data: bytes, *, timeout_s: float = SANDBOX_TIMEOUT_S) -> ValidatedPackage:
    """Every check of an uploaded package: signature by a trusted key, hash, no rollback, ONNX checks, then the
    first inference in the sandbox. Raises ModelPackageError naming the failed check."""
    vp = validate_package(bytes(data), trusted_keys=trusted_keys(vault), accepted_versions=accepted_versions(vault))
    first_inference(vp, timeout_s=timeout_s)
    return vp


def detector_from_bytes(model_bytes: bytes, *, name: str, version: str) -> Detector:
    """The detector the app runs for a model (as ``make_detector("auto")`` would for a shipped one)."""
    from analysis.onnx_adapter import HybridDetector, load_onnx_detector_from_bytes

    model = load_onnx_detector_from_bytes(model_bytes, name=name, version=version)
    return HybridDetector(model) if AUTO_WITH_MODEL == "hybrid" else model


def golden_set() -> list[LabelledImage]:
    """The acceptance test's labelled images (held-out rendered micrographs). Tests replace this function."""
    return list(synthetic_set(GOLDEN_IMAGES, seed=GOLDEN_SEED, difficulty=GOLDEN_DIFFICULTY, size=GOLDEN_SIZE))


@dataclass(frozen=True, eq=False)
class PlantSet:
    """The plant's reviewed analyses as labelled images (:func:`plant_set`). ``analysed_by``: how many of them
    each detector first analysed (their labels are its result, corrected or checked by hand); ``left_out``: reviewed
    analyses not used, with the reason ("original deleted", "profile removed", "unreadable", "over the size
    limits")."""

    items: tuple[LabelledImage, ...]
    analysed_by: Mapping[str, int]
    left_out: Mapping[str, int]


def plant_set(vault: Vault, *, limit: int = PLANT_MAX_IMAGES) -> PlantSet:
    """The plant's own labelled images: the newest ``limit`` valid analyses that a technician reviewed on the Review
    screen (corrected, or marked checked as right: ``AnalysisInfo.reviewed``), each with the original image
    (decrypted in memory only) and its corrected result as the truth (:func:`detection.evaluate.labelled_from_result`),
    analysed with the current settings and the calibration profile it was analysed with (its analysis scale changes
    what a model sees). An analysis whose original was deleted, whose profile no longer exists, whose record cannot
    be read or whose image is now over the settings' size limits (from the index and the stored result: no original
    is decrypted here) is left out and counted. The items read their originals from ``vault`` each time they are
    analysed (one in memory at a time): use them while it is unlocked."""
    # imported here: ui.analyses / ui.settings are only needed when a vault holds analyses to read
    from analysis.errors import CrystalQCError
    from ui.analyses import list_analyses, load_analysis, original_name, read_original
    from ui.settings import analysis_options, load_settings

    settings = load_settings(vault)
    items: list[LabelledImage] = []
    analysed_by: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    for info in list_analyses(vault):
        if len(items) >= limit:
            break
        if not (info.reviewed and info.valid):
            continue
        try:
            options = analysis_options(settings, profile=info.profile)
        except CrystalQCError:  # SettingsError: the profile was removed, so its analysis scale is unknown
            left_out["profile removed"] += 1
            continue
        try:
            stored = load_analysis(vault, info.analysis_id, with_cleaned=False)
            original_bytes = vault.info(original_name(info)).size_bytes  # the index: nothing decrypted yet
        except EntryNotFoundError:
            left_out["original deleted"] += 1
            continue
        except CrystalQCError:  # ArchiveFormatError, VaultCorruptedError: a damaged record
            left_out["unreadable"] += 1
            continue
        # the size limits may have been lowered since it was analysed (the result records the image's size)
        if stored.result.meta.width * stored.result.meta.height > options.max_pixels \
                or original_bytes > options.max_bytes:
            left_out["over the size limits"] += 1
            continue
        # read (decrypted in memory) when each model analyses it: one original in memory at a time, not 30
        items.append(labelled_from_result(info.image_name, partial(read_original, vault, info), stored.result,
                                          options=options))
        analysed_by[info.detector] += 1
    return PlantSet(items=tuple(items), analysed_by=dict(analysed_by), left_out=dict(left_out))


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def report_row(role: str, r: EvalReport) -> dict:
    """One table row (JSON-safe: NaN becomes None)."""
    return {"model": role, "detector": r.detector, "images": r.n_images, "count accuracy": _finite(r.count_accuracy),
            "F1": _finite(r.f1), "D50 error": _finite(r.d50_error), SIZE_KEY: _finite(r.size_ratio),
            "s / image": _finite(r.median_seconds)}


def acceptance_test(candidate: Detector, current: Detector, *,
                    items: Sequence[LabelledImage] | None = None, plant: PlantSet | None = None) -> dict:
    """Candidate vs the current model on the golden set, and on the plant's own reviewed analyses when ``plant``
    holds at least :data:`PLANT_MIN_IMAGES` of them.

    Returns ``{"rows": [candidate, current], "worse": [...], "golden": {...}, "plant": {...}}`` where ``worse`` names
    the metrics on which the candidate is more than :data:`WORSE_BY` below the current one on the golden set,
    ``sizing`` when the crystals it finds measure further from their labels than the current model's by more than
    :data:`SIZE_WORSE_BY` (median found / labelled ECD of matched crystals, ``detection.evaluate``), and
    :data:`PLANT_WORSE` when on the plant images its F1 or count accuracy is lower beyond the luck of those images
    (the 95 % paired bootstrap interval of the difference lies below 0) by at least :data:`PLANT_MIN_DROP`
    (:func:`plant_worse`). ``plant``: ``{"images", "rows",
    "difference", "analysed_by", "left_out"}`` (``rows`` and ``difference`` only with enough images); JSON-safe.
    """
    items = golden_set() if items is None else list(items)
    try:
        cand = evaluate(candidate, items, set_name="golden", iou_threshold=0.5)
    except (ValueError, RuntimeError) as e:  # e.g. an input size the tiling cannot use
        raise ModelPackageError(f"The model cannot analyse the acceptance images: {e}") from e
    rows = [report_row("candidate", cand),
            report_row("current", evaluate(current, items, set_name="golden", iou_threshold=0.5))]
    worse = [k for k in ("count accuracy", "F1")
             if rows[0][k] is not None and rows[1][k] is not None and rows[0][k] < rows[1][k] - WORSE_BY]
    cand_size, cur_size = rows[0][SIZE_KEY], rows[1][SIZE_KEY]
    if cand_size is not None and cur_size is not None and abs(cand_size - 1) > abs(cur_size - 1) + SIZE_WORSE_BY:
        worse.append("sizing")
    report = {"rows": rows, "worse": worse, "golden": {"images": len(items), "seed": GOLDEN_SEED}}
    if plant is not None:
        report["plant"] = _plant_comparison(candidate, current, plant, worse)
    return report


def plant_summary(plant: Mapping[str, Any]) -> str:
    """One line on a report's plant images: how many, which detector made their labels, what was left out."""
    n = int(plant.get("images", 0))
    text = f"{n} image{'s' if n != 1 else ''}"
    made = plant.get("analysed_by") or {}
    if made:
        text += "; labels from " + ", ".join(f"{k} ({v})" for k, v in sorted(made.items()))
    left = plant.get("left_out") or {}
    if left:
        text += f"; {sum(left.values())} left out: " + ", ".join(f"{k} {v}" for k, v in sorted(left.items()))
    return text


def plant_difference_text(plant: Mapping[str, Any]) -> str:
    """The paired difference of a report's plant rows in words ('' when the report has none)."""
    d = plant.get("difference")
    if not d:
        return ""
    (f_lo, f_hi), (c_lo, c_hi) = d["F1 interval"], d["count accuracy interval"]
    return (f"Candidate minus current model: F1 {d['F1']:+.3f} [{f_lo:+.3f}, {f_hi:+.3f}], count accuracy "
            f"{d['count accuracy']:+.3f} [{c_lo:+.3f}, {c_hi:+.3f}] ({100 * d['confidence']:g} % paired bootstrap "
            f"interval over the {plant['images']} images). An interval that holds 0 is within the luck of these "
            "images. The labels are a model's results checked and corrected by hand: errors nobody corrected favour "
            "the model that made them.")


def _plant_comparison(candidate: Detector, current: Detector, plant: PlantSet, worse: list[str]) -> dict:
    """The ``plant`` part of an acceptance report (:func:`acceptance_test`); appends to ``worse``."""
    out: dict[str, Any] = {"images": len(plant.items), "analysed_by": dict(plant.analysed_by),
                           "left_out": dict(plant.left_out)}
    if len(plant.items) < PLANT_MIN_IMAGES:
        return out
    try:
        cand = evaluate(candidate, plant.items, set_name="plant", iou_threshold=PLANT_IOU)
    except (ValueError, RuntimeError) as e:
        raise ModelPackageError(f"The model cannot analyse the plant's reviewed images: {e}") from e
    cur = evaluate(current, plant.items, set_name="plant", iou_threshold=PLANT_IOU)
    d = compare(cur, cand, draws=PLANT_BOOTSTRAP_DRAWS)
    out["rows"] = [report_row("candidate", cand), report_row("current", cur)]
    out["difference"] = {"F1": round(d.f1, 4), "F1 interval": [round(d.f1_low, 4), round(d.f1_high, 4)],
                         "count accuracy": round(d.count_accuracy, 4),
                         "count accuracy interval": [round(d.count_accuracy_low, 4), round(d.count_accuracy_high, 4)],
                         "confidence": d.confidence, "draws": d.draws}
    if plant_worse(d):
        worse.append(PLANT_WORSE)
    return out


def plant_worse(d: PairedDifference) -> bool:
    """Whether a candidate-minus-current difference on the plant images flags the candidate: F1 or count accuracy
    lower beyond the noise (upper end of the interval below 0) and by at least :data:`PLANT_MIN_DROP`."""
    return ((d.f1_high < 0 and d.f1 <= -PLANT_MIN_DROP)
            or (d.count_accuracy_high < 0 and d.count_accuracy <= -PLANT_MIN_DROP))


def store_package(vault: Vault, data: bytes, vp: ValidatedPackage, acceptance: Mapping[str, Any], *,
                  user: str) -> ModelEntry:
    """Keep an accepted package (bytes as signed) with its acceptance report; audited as ``model_import``."""
    m = vp.manifest
    name = package_entry_name(m.name, m.version)
    meta = {"name": m.name, "version": m.version, "author": m.author, "created": m.created,
            "classes": list(vp.meta.names), "sha256": m.sha256, "key_id": vp.key_id,
            "metrics": json.loads(json.dumps(m.data.get("metrics", {}))), "imported": _now(), "imported_by": user,
            "acceptance": dict(acceptance)}
    info = vault.put(name, bytes(data), kind="model", meta=meta)
    vault.audit.append("model_import", user=user, details={"entry": name, "name": m.name, "version": m.version,
                                                           "sha256": m.sha256, "key_id": vp.key_id,
                                                           "worse": list(acceptance.get("worse", []))})
    return _entry_from_info(info)


def compare_installed(vault: Vault, entry: ModelEntry, current: Detector, *, user: str) -> dict:
    """An accepted version against ``current`` (the detector the app runs now), as at import: the golden set and the
    plant's reviewed analyses as they are today (:func:`acceptance_test`; more may have been reviewed since the
    import). Audited as ``model_compared`` (entry, the current detector, what the version is worse on, how many plant
    images). Raises ModelPackageError when the stored package no longer matches its record (as activation does)."""
    candidate = detector_from_bytes(load_model_bytes(vault, entry), name=entry.name, version=entry.version)
    report = acceptance_test(candidate, current, plant=plant_set(vault))
    vault.audit.append("model_compared", user=user, details={
        "entry": entry.entry, "against": current.label, "worse": list(report["worse"]),
        "plant_images": int(report["plant"]["images"])})
    return report


# ------------------------------------------------------------------------------------------------ activation
def _active_state(vault: Vault) -> dict:
    if not vault.exists(ACTIVE_ENTRY):
        return {"active": None, "history": []}
    try:
        state = json.loads(vault.get(ACTIVE_ENTRY))
        active, history = state.get("active"), state.get("history", [])
        if (active is not None and not isinstance(active, str)) or not isinstance(history, list):
            raise TypeError
        return {"active": active, "history": [h for h in history if h is None or isinstance(h, str)]}
    except (ValueError, TypeError, AttributeError) as e:
        raise ModelPackageError("The active-model setting in the vault is unreadable; activate a model again.") from e


def _save_state(vault: Vault, state: dict) -> None:
    vault.put(ACTIVE_ENTRY, json.dumps(state, sort_keys=True).encode("utf-8"), kind="settings")


def active_model(vault: Vault) -> ModelEntry | None:
    """The activated package, or None (the app then uses the shipped default / classical detector)."""
    active = _active_state(vault)["active"]
    if active is None:
        return None
    try:
        return _entry_from_info(vault.info(active))
    except EntryNotFoundError as e:
        raise ModelPackageError(f"The active model {active} is missing from the vault; activate another one.") from e


def can_roll_back(vault: Vault) -> bool:
    return _active_state(vault)["active"] is not None


def activate(vault: Vault, entry: str, *, user: str) -> ModelEntry:
    """Make ``entry`` (an accepted package) the active model; the previous one is remembered for rollback."""
    info = vault.info(entry)  # raises EntryNotFoundError
    if info.kind != "model" or not entry.startswith(PACKAGE_PREFIX):
        raise ModelPackageError(f"{entry} is not an accepted model package.")
    state = _active_state(vault)
    if state["active"] == entry:
        return _entry_from_info(info)
    new = {"active": entry, "history": (state["history"] + [state["active"]])[-50:]}
    _save_state(vault, new)
    vault.audit.append("model_activation", user=user, details={"action": "activate", "entry": entry,
                                                               "previous": state["active"]})
    logger.info("model %s activated", entry)
    return _entry_from_info(info)


def roll_back(vault: Vault, *, user: str) -> ModelEntry | None:
    """Go back to the previously active model (or the shipped default when there was none); returns it."""
    state = _active_state(vault)
    if state["active"] is None:
        raise ModelPackageError("The shipped default model is already active; there is nothing to roll back.")
    history = list(state["history"])
    previous = history.pop() if history else None
    _save_state(vault, {"active": previous, "history": history})
    vault.audit.append("model_activation", user=user, details={"action": "rollback", "entry": previous,
                                                               "previous": state["active"]})
    logger.info("model rolled back to %s", previous or "the shipped default")
    return None if previous is None else _entry_from_info(vault.info(previous))


def load_model_bytes(vault: Vault, entry: ModelEntry) -> bytes:
    """The ONNX bytes of an accepted package, checked again: layout, sha256 against the stored manifest and the
    index. Raises ModelPackageError when the stored package does not match what was accepted."""
    contents = unpack(vault.get(entry.entry))
    try:
        manifest = json.loads(contents.manifest_bytes)
        declared = manifest["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelPackageError(f"The stored package {entry.label} has an unreadable manifest.") from e
    actual = hashlib.sha256(contents.model_bytes).hexdigest()
    if actual != declared or actual != entry.sha256:
        raise ModelPackageError(f"The stored model {entry.label} does not match its manifest (sha256); roll back or"
                                " import the package again.")
    return contents.model_bytes
