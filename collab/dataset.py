"""A de-identified YOLO training set built from saved analyses, as one tar archive in memory (no Streamlit).

What goes in, per chosen analysis: the original image's *decoded pixels* (grey, re-encoded as PNG by OpenCV: only
the IHDR, IDAT and IEND chunks are written, so no EXIF/TIFF tag, comment, ICC profile, time or file name survives),
under a random file name; its YOLO label file (the saved analysis' counted crystals and agglomerates, i.e. the
detector's objects with the technician's corrections); optionally with margins cut off (burnt-in scale bars, text
bands). Plus ``manifest.json`` and ``data.yaml`` (ready for ``python -m detection.train``).

Archive layout (plain POSIX ustar; uid/gid 0, no user or group names, one fixed time)::

    crystal-qc-export/manifest.json
    crystal-qc-export/data.yaml
    crystal-qc-export/images/{train,val}/<16 hex>.png
    crystal-qc-export/labels/{train,val}/<16 hex>.txt      class cx cy w h (normalised), one object per line

The manifest never holds operator names, analysis ids, image names or times of analysis; product and lot only
when the QC lead ticks them. Nothing here is written to disk: :func:`build_training_set` returns bytes in memory,
:func:`seal_export` encrypts them (collab.crypto_age) and records the export in the audit log.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import cv2
import numpy as np

from analysis.io import load_image
from analysis.labels import yolo_labels
from analysis.records import COUNTED_CLASSES, ImageResult
from collab.crypto_age import encrypt, recipient_fingerprint
from collab.errors import ExportBuildError
from collab.export_format import DATA_YAML, FORMAT, FORMAT_VERSION, MANIFEST, MAX_EXPORT_BYTES, ROOT
from collab.recipients import Researcher
from ui.analyses import AnalysisInfo, clean_label, load_analysis, read_original
from vault import EntryNotFoundError, Vault, VaultError

MAX_PURPOSE_CHARS = 500
#: A box cut by a crop is kept when at least this fraction of it stays inside (else it is dropped).
MIN_VISIBLE_FRACTION = 0.25
MIN_BOX_PX = 2
CLASS_IDS = {name: i for i, name in enumerate(COUNTED_CLASSES)}


@dataclass(frozen=True)
class Crop:
    """Margins cut off an image, in pixels (e.g. ``bottom=80`` removes an 80 px scale-bar band)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def __post_init__(self) -> None:
        for k in ("top", "bottom", "left", "right"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ExportBuildError(f"Crop margins are whole numbers of pixels >= 0 (got {k}={v!r}).")

    @property
    def empty(self) -> bool:
        return not (self.top or self.bottom or self.left or self.right)

    def window(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The kept rectangle (x0, y0, x1, y1) of a width x height image. Raises ExportBuildError if nothing is
        left (at least 32 x 32 px must remain)."""
        x0, y0, x1, y1 = self.left, self.top, width - self.right, height - self.bottom
        if x1 - x0 < 32 or y1 - y0 < 32:
            raise ExportBuildError(f"The crop leaves {max(0, x1 - x0)} x {max(0, y1 - y0)} px of a {width} x"
                                   f" {height} px image; at least 32 x 32 px must remain.")
        return x0, y0, x1, y1

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExportOptions:
    """What the QC lead chose. ``crop`` applies to every image, ``crops`` (analysis id -> Crop) overrides it per
    image. ``val_fraction`` of the images (at least one, when there are two or more) form the validation split."""

    purpose: str
    expires: date
    plant: str
    include_product: bool = False
    include_lot: bool = False
    crop: Crop | None = None
    crops: Mapping[str, Crop] = field(default_factory=dict)
    val_fraction: float = 0.2


@dataclass(frozen=True)
class ExportFile:
    path: str  # inside the archive, under ROOT/
    data: bytes = field(repr=False)
    kind: str  # "manifest", "data.yaml", "image", "label"


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """A built (not yet encrypted) training set: exactly the files that would leave the plant."""

    files: tuple[ExportFile, ...]
    manifest: Mapping
    archive: bytes = field(repr=False)
    analysis_ids: tuple[str, ...]
    recipient: Researcher

    @property
    def n_images(self) -> int:
        return sum(f.kind == "image" for f in self.files)

    def file_table(self) -> list[dict]:
        """One row per file: path, kind, bytes (what the preview shows)."""
        return [{"file": f.path, "kind": f.kind, "bytes": len(f.data)} for f in self.files]

    def thumbnail(self, index: int = 0, *, max_side: int = 320) -> np.ndarray:
        """RGB uint8 preview of the ``index``-th image as exported, its label boxes drawn (crystal green,
        agglomerate orange)."""
        images = [f for f in self.files if f.kind == "image"]
        image_file = images[index]
        label = next(f for f in self.files if f.path == _label_path(image_file.path))
        grey = cv2.imdecode(np.frombuffer(image_file.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if grey.dtype == np.uint16:
            grey = (grey // 257).astype(np.uint8)
        h, w = grey.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        small = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
        colours = {0: (40, 200, 60), 1: (255, 140, 0)}
        for line in label.data.decode("ascii").splitlines():
            c, cx, cy, bw, bh = line.split()
            sw, sh = rgb.shape[1], rgb.shape[0]
            x0, y0 = (float(cx) - float(bw) / 2) * sw, (float(cy) - float(bh) / 2) * sh
            x1, y1 = (float(cx) + float(bw) / 2) * sw, (float(cy) + float(bh) / 2) * sh
            cv2.rectangle(rgb, (round(x0), round(y0)), (round(x1), round(y1)), colours.get(int(c), (255, 0, 0)), 1)
        return rgb


# ------------------------------------------------------------------------------------------------ pieces
def _label_path(image_path: str) -> str:
    return image_path.replace("/images/", "/labels/", 1).rsplit(".", 1)[0] + ".txt"


def crop_result(result: ImageResult, window: tuple[int, int, int, int]) -> ImageResult:
    """``result`` as seen through the kept rectangle: boxes shifted and clipped; objects with less than
    MIN_VISIBLE_FRACTION of their box (or under MIN_BOX_PX a side) inside are dropped; meta size updated."""
    x0, y0, x1, y1 = window
    kept = []
    for p in result.particles:
        cx0, cy0, cx1, cy1 = max(p.x_min, x0), max(p.y_min, y0), min(p.x_max, x1), min(p.y_max, y1)
        if cx1 - cx0 < MIN_BOX_PX or cy1 - cy0 < MIN_BOX_PX:
            continue
        full = max(1, (p.x_max - p.x_min) * (p.y_max - p.y_min))
        if (cx1 - cx0) * (cy1 - cy0) / full < MIN_VISIBLE_FRACTION:
            continue
        kept.append(dataclasses.replace(p, x_min=cx0 - x0, y_min=cy0 - y0, x_max=cx1 - x0, y_max=cy1 - y0))
    meta = dataclasses.replace(result.meta, width=x1 - x0, height=y1 - y0)
    return dataclasses.replace(result, meta=meta, particles=tuple(kept), cleaned=None)


def label_text(result: ImageResult) -> str:
    """The YOLO label file of a result (analysis.labels.yolo_labels: counted crystals and agglomerates, border
    objects included, excluded mimics left as background)."""
    return yolo_labels(result, classes=COUNTED_CLASSES)


def _counts(text: str) -> dict[str, int]:
    counts = {name: 0 for name in COUNTED_CLASSES}
    for line in text.splitlines():
        if line.strip():
            counts[COUNTED_CLASSES[int(line.split()[0])]] += 1
    return counts


def encode_pixels(image: np.ndarray, bit_depth: int) -> tuple[bytes, int]:
    """Decoded float pixels in [0, 1] -> PNG bytes (8 bit, or 16 bit when the source had more than 8 bits) written
    by OpenCV from the array alone; returns (png, bits)."""
    if bit_depth > 8:
        pixels = np.rint(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    else:
        pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise ExportBuildError("An image could not be re-encoded as PNG.")
    return buf.tobytes(), 16 if bit_depth > 8 else 8


def data_yaml(*, single: bool) -> bytes:
    """The YOLO data config, written as JSON (JSON is valid YAML, so ultralytics and detection.train read it, and so
    can ``json.loads`` without a YAML library); paths relative to the file's folder, names as a list."""
    config = {"path": ".", "train": "images/train", "val": "images/train" if single else "images/val",
              "nc": len(COUNTED_CLASSES), "names": list(COUNTED_CLASSES)}
    return (json.dumps(config, indent=2) + "\n").encode("ascii")


def tar_bytes(files: Sequence[ExportFile], *, mtime: int) -> bytes:
    """A ustar archive of ``files`` (regular files only, mode 0644, owner 0/0 without names, time ``mtime``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(f.path)
            info.size, info.mtime, info.mode = len(f.data), mtime, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(f.data))
    return buf.getvalue()


def check_options(options: ExportOptions, *, today: date) -> ExportOptions:
    """Validated copy of the options. Raises ExportBuildError (or ValueError from clean_label) with the reason."""
    purpose = options.purpose.strip() if isinstance(options.purpose, str) else ""
    if not purpose:
        raise ExportBuildError("State the purpose of the export (what the researcher may use the data for).")
    if len(purpose) > MAX_PURPOSE_CHARS or any(ord(c) < 32 and c not in "\n" for c in purpose):
        raise ExportBuildError(f"The purpose must be plain text of at most {MAX_PURPOSE_CHARS} characters.")
    plant = clean_label(options.plant, what="plant pseudonym")
    if not plant:
        raise ExportBuildError("Give the plant a pseudonym (e.g. 'plant-A'); the real site name is not needed.")
    if not isinstance(options.expires, date) or options.expires <= today:
        raise ExportBuildError("The expiry date must be after today.")
    if not 0.0 <= options.val_fraction < 1.0:
        raise ExportBuildError("The validation fraction must be at least 0 and below 1.")
    return dataclasses.replace(options, purpose=purpose, plant=plant)


# ------------------------------------------------------------------------------------------------ build
def _load(vault: Vault, analysis_id: str):
    try:
        stored = load_analysis(vault, analysis_id)
        original = read_original(vault, stored.info)
    except EntryNotFoundError as e:
        raise ExportBuildError(f"The analysis {analysis_id} or its original image is no longer in the vault.") from e
    except VaultError as e:
        raise ExportBuildError(f"The analysis {analysis_id} cannot be read from the vault: {e}") from e
    return stored, original


def _image_entry(info: AnalysisInfo, result: ImageResult, original: bytes, crop: Crop | None
                 ) -> tuple[bytes, str, dict]:
    image, meta = load_image(original, name=info.image_name)
    if image.shape != (result.meta.height, result.meta.width):
        raise ExportBuildError(f"The stored original of {info.image_name} does not match its analysis"
                               f" ({image.shape[1]} x {image.shape[0]} px vs {result.meta.width} x"
                               f" {result.meta.height} px).")
    window = (crop or Crop()).window(image.shape[1], image.shape[0])
    x0, y0, x1, y1 = window
    png, bits = encode_pixels(image[y0:y1, x0:x1], meta.bit_depth)
    labels = label_text(crop_result(result, window))
    row = {"width": x1 - x0, "height": y1 - y0, "bit_depth": bits, "pixel_size_um": result.pixel_size_um,
           "counts": _counts(labels), "crop": None if crop is None or crop.empty else crop.as_dict()}
    return png, labels, row


def build_training_set(vault: Vault, analysis_ids: Sequence[str], options: ExportOptions, *,
                       recipient: Researcher, now: datetime | None = None) -> TrainingSet:
    """Build the export of ``analysis_ids`` for ``recipient`` (in memory; nothing is written or audited).

    Raises:
        ExportBuildError: no analyses, bad options, a missing or unreadable analysis/original, too large.
        InvalidImageError: a stored original cannot be decoded.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    options = check_options(options, today=now.date())
    ids = list(dict.fromkeys(analysis_ids))
    if not ids:
        raise ExportBuildError("Choose at least one saved analysis to export.")
    n_val = 0 if len(ids) < 2 else min(len(ids) - 1, max(1 if options.val_fraction > 0 else 0,
                                                         round(len(ids) * options.val_fraction)))
    names: set[str] = set()
    entries, rows, total = [], [], 0
    for analysis_id in ids:
        stored, original = _load(vault, analysis_id)
        crop = options.crops.get(analysis_id, options.crop)
        png, labels, row = _image_entry(stored.info, stored.result, original, crop)
        total += len(png) + len(labels)
        if total > MAX_EXPORT_BYTES:
            raise ExportBuildError(f"The export would exceed {MAX_EXPORT_BYTES // 1024 ** 2} MiB; choose fewer"
                                   " analyses.")
        name = secrets.token_hex(8)
        while name in names:  # pragma: no cover - 64 random bits
            name = secrets.token_hex(8)
        names.add(name)
        if options.include_product:
            row["product"] = stored.info.product
        if options.include_lot:
            row["lot"] = stored.info.lot
        entries.append((name, png, labels, row))
    entries.sort(key=lambda e: e[0])  # random names: the split is random and independent of analysis order
    files: list[ExportFile] = []
    images: list[dict] = []
    for i, (name, png, labels, row) in enumerate(entries):
        split = "val" if i >= len(entries) - n_val else "train"
        image_path, label_path = f"images/{split}/{name}.png", f"labels/{split}/{name}.txt"
        files += [ExportFile(f"{ROOT}/{image_path}", png, "image"),
                  ExportFile(f"{ROOT}/{label_path}", labels.encode("ascii"), "label")]
        images.append({"image": image_path, "label": label_path, "split": split,
                       "sha256": hashlib.sha256(png).hexdigest(),
                       "label_sha256": hashlib.sha256(labels.encode("ascii")).hexdigest(), **row})
    sizes = sorted({r["pixel_size_um"] for r in images if r["pixel_size_um"] is not None})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "expires": options.expires.isoformat(),
        "purpose": options.purpose, "plant": options.plant,
        "recipient": {"name": recipient.name, "fingerprint": recipient_fingerprint(recipient.recipient)},
        "classes": list(COUNTED_CLASSES),
        "labels": "YOLO: class cx cy w h, normalised to the image; counted crystals and agglomerates of the saved"
                  " analyses (detector objects with the technician's corrections)",
        "pixels": "grey, decoded and re-encoded as PNG (no metadata); pixel_size_um per image (null: uncalibrated)",
        "pixel_size_um": sizes[0] if len(sizes) == 1 else None,
        "pixel_sizes_um": sizes,
        "fields": {"product": options.include_product, "lot": options.include_lot},
        "totals": {"images": len(images), "train": len(images) - n_val, "val": n_val,
                   **{c: sum(r["counts"][c] for r in images) for c in COUNTED_CLASSES}},
        "images": images,
    }
    manifest_bytes = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
    files = [ExportFile(f"{ROOT}/{MANIFEST}", manifest_bytes, "manifest"),
             ExportFile(f"{ROOT}/{DATA_YAML}", data_yaml(single=n_val == 0), "data.yaml")] + files
    archive = tar_bytes(files, mtime=int(now.timestamp()))
    return TrainingSet(files=tuple(files), manifest=manifest, archive=archive, analysis_ids=tuple(ids),
                       recipient=recipient)


def seal_export(vault: Vault, training_set: TrainingSet, *, user: str, qc_lead_confirmed: bool) -> bytes:
    """Encrypt the built set to its researcher and record ``export`` in the audit log; returns the age file.

    Raises ExportBuildError when the QC lead has not confirmed; VaultError from the audit log (nothing is returned
    then, so an unaudited export cannot be downloaded).
    """
    if not qc_lead_confirmed:
        raise ExportBuildError("Only a QC lead may export data: tick the confirmation first.")
    sealed = encrypt(training_set.archive, training_set.recipient.recipient)
    m = training_set.manifest
    vault.audit.append("export", user=user, details={
        "what": "training_set", "qc_lead_confirmed": True, "recipient": training_set.recipient.name,
        "recipient_fingerprint": m["recipient"]["fingerprint"], "purpose": m["purpose"], "expires": m["expires"],
        "plant": m["plant"], "files": len(training_set.files), "images": training_set.n_images,
        "analyses": list(training_set.analysis_ids), "product_included": m["fields"]["product"],
        "lot_included": m["fields"]["lot"], "cropped": sum(r["crop"] is not None for r in m["images"]),
        "bytes": len(sealed), "sha256": hashlib.sha256(sealed).hexdigest()})
    return sealed
