"""The researcher's side of an export: key pair, decrypt + check + extract, inspect, evaluate (no Streamlit).

Command line (the app's venv; see docs/privacy.md for the whole round trip)::

    python -m collab.researcher keygen --out key.txt            # prints the public key (age1...) for the plant
    python -m collab.researcher decrypt export.age --identity key.txt --out DIR
    python -m collab.researcher inspect export.age --identity key.txt   # manifest only, nothing written
    python -m collab.researcher evaluate --data DIR --model new.onnx [--model current.onnx] [--split val]

``decrypt`` checks, in memory and before anything is written: the age authentication (wrong key, any altered byte
-> refused), the archive layout (regular files with the expected names only: no links, no paths outside the folder,
no duplicates, size caps), the manifest (format, every listed file present with its sha256, nothing unlisted) and
the expiry date (an export whose ``expires`` day has passed on this computer's UTC clock is refused: the plant agreed
to the use of its data until then). Exit codes: 0 done, 1 refused (key, damage, expiry), 2 usage or file errors.

The same export opens without this tool: ``age -d -i key.txt export.age > export.tar && tar -xf export.tar``
(then nothing checks the expiry date or the hashes - the tool is the convenient and careful way).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from analysis.errors import CrystalQCError
from collab.crypto_age import (MAX_CIPHERTEXT_BYTES, decrypt, generate_identity, identity_file_text,
                               recipient_fingerprint, short_fingerprint)
from collab.export_format import DATA_YAML, FORMAT, FORMAT_VERSION, MANIFEST, MAX_EXPORT_BYTES, ROOT
from collab.errors import (CollabError, DecryptionFailedError, ExpiredExportError, ExportFormatError,
                           RecipientKeyError)

MAX_MEMBERS = 100_000
_MEMBER_RE = re.compile(rf"{ROOT}/(?:{re.escape(MANIFEST)}|{re.escape(DATA_YAML)}"
                        r"|images/(?:train|val)/[0-9a-f]{16}\.png|labels/(?:train|val)/[0-9a-f]{16}\.txt)")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, eq=False)
class OpenedExport:
    """A decrypted and checked export: the manifest and every file (path relative to the export root -> bytes)."""

    manifest: Mapping
    files: Mapping[str, bytes] = field(repr=False)

    @property
    def expires(self) -> date:
        return date.fromisoformat(self.manifest["expires"])


# ------------------------------------------------------------------------------------------------ checks
def read_archive(data: bytes) -> dict[str, bytes]:
    """Members of the export's tar archive (path under ROOT/ -> bytes), read in memory.

    Raises ExportFormatError for anything but regular files with the expected names, duplicates, or size caps.
    """
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for n, member in enumerate(tar):
                if n >= MAX_MEMBERS:
                    raise ExportFormatError("The export holds too many files.")
                if not member.isreg():
                    raise ExportFormatError(f"The export holds a link or special file ({member.name!r}); refused.")
                if not _MEMBER_RE.fullmatch(member.name):
                    raise ExportFormatError(f"The export holds an unexpected file {member.name!r}; refused.")
                if member.name in files:
                    raise ExportFormatError(f"The export holds {member.name!r} twice; refused.")
                total += member.size
                if total > MAX_EXPORT_BYTES:
                    raise ExportFormatError("The export is larger than the app ever writes; refused.")
                f = tar.extractfile(member)
                files[member.name] = f.read() if f is not None else b""
    except tarfile.TarError as e:
        raise ExportFormatError("The decrypted export is not a readable tar archive.") from e
    return {name[len(ROOT) + 1:]: data for name, data in files.items()}


def check_manifest(files: Mapping[str, bytes]) -> dict:
    """The manifest, checked against the files. Raises ExportFormatError naming the problem."""
    try:
        manifest = json.loads(files[MANIFEST])
    except KeyError as e:
        raise ExportFormatError("The export has no manifest.json.") from e
    except ValueError as e:
        raise ExportFormatError("The export's manifest.json is not valid JSON.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportFormatError("This is not a crystal QC training export (manifest format).")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportFormatError(f"Export format version {manifest.get('format_version')!r} is not supported by this"
                                f" tool (it reads version {FORMAT_VERSION}); update the project.")
    if not isinstance(manifest.get("expires"), str) or not _DATE_RE.fullmatch(manifest["expires"]):
        raise ExportFormatError("The manifest has no valid expiry date.")
    images = manifest.get("images")
    if not isinstance(images, list):
        raise ExportFormatError("The manifest does not list the images.")
    listed = {MANIFEST, DATA_YAML}
    for row in images:
        try:
            pairs = ((row["image"], row["sha256"]), (row["label"], row["label_sha256"]))
        except (KeyError, TypeError) as e:
            raise ExportFormatError("An image entry of the manifest is incomplete.") from e
        for path, digest in pairs:
            if path not in files:
                raise ExportFormatError(f"{path} is listed in the manifest but missing from the export.")
            if hashlib.sha256(files[path]).hexdigest() != digest:
                raise ExportFormatError(f"{path} does not match its sha256 in the manifest.")
            listed.add(path)
    extra = sorted(set(files) - listed)
    if extra:
        raise ExportFormatError(f"The export holds files the manifest does not list: {', '.join(extra[:3])}.")
    if DATA_YAML not in files:
        raise ExportFormatError("The export has no data.yaml.")
    return manifest


def check_not_expired(manifest: Mapping, *, today: date) -> None:
    """Raise ExpiredExportError when the export's expiry day is before ``today`` (UTC)."""
    expires = date.fromisoformat(manifest["expires"])
    if today > expires:
        raise ExpiredExportError(
            f"This export expired on {expires.isoformat()}: the plant agreed to the use of its data until then, so"
            " it is not extracted. Delete it, and ask the plant for a new export if the work continues.")


def open_export(data: bytes, identity_text: str, *, today: date | None = None,
                check_expiry: bool = True) -> OpenedExport:
    """Decrypt and check an export in memory (see the module docstring for the order of checks).

    Raises DecryptionFailedError, RecipientKeyError, ExportFormatError, ExpiredExportError.
    """
    files = read_archive(decrypt(data, identity_text))
    manifest = check_manifest(files)
    if check_expiry:
        check_not_expired(manifest, today=today or datetime.now(timezone.utc).date())
    return OpenedExport(manifest=manifest, files=files)


def write_export(opened: OpenedExport, out_dir: Path) -> Path:
    """Write the checked files under ``out_dir`` (created, mode 0700; must not exist or be empty). Returns the
    path of data.yaml."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CollabError(f"{out_dir} exists and is not an empty folder; choose a new --out.")
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for rel, data in sorted(opened.files.items()):
        target = out_dir / rel  # rel matched _MEMBER_RE: no '..', no absolute paths
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return out_dir / DATA_YAML


def summary(manifest: Mapping, *, today: date | None = None) -> str:
    """A few lines describing an export (for inspect/decrypt)."""
    today = today or datetime.now(timezone.utc).date()
    t = manifest.get("totals", {})
    expired = today > date.fromisoformat(manifest["expires"])
    rec = manifest.get("recipient", {})
    lines = [f"plant:      {manifest.get('plant')}",
             f"purpose:    {manifest.get('purpose')}",
             f"created:    {manifest.get('created')}",
             f"expires:    {manifest['expires']}{'  (EXPIRED)' if expired else ''}",
             f"recipient:  {rec.get('name')} ({short_fingerprint(str(rec.get('fingerprint', '')))})",
             f"images:     {t.get('images')} (train {t.get('train')}, val {t.get('val')}); objects: "
             + ", ".join(f"{c} {t.get(c)}" for c in manifest.get("classes", [])),
             f"pixel size: {manifest.get('pixel_sizes_um') or 'uncalibrated'} µm/px",
             f"fields:     product {'yes' if manifest.get('fields', {}).get('product') else 'no'},"
             f" lot {'yes' if manifest.get('fields', {}).get('lot') else 'no'}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ evaluate
def labelled_images(folder: Path, *, split: str = "val") -> list:
    """The extracted export's ``split`` as detection.evaluate.LabelledImage items (truth = the plant's labels;
    ECD of a truth object approximated by sqrt(w * h), the ECD of the ellipse inscribed in its box)."""
    import numpy as np

    from analysis.records import COUNTED_CLASSES
    from detection.evaluate import LabelledImage

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    items = []
    for row in manifest["images"]:
        if row["split"] != split:
            continue
        w, h = row["width"], row["height"]
        boxes, classes = [], []
        for line in (folder / row["label"]).read_text(encoding="ascii").splitlines():
            c, cx, cy, bw, bh = (float(v) for v in line.split())
            boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            classes.append(COUNTED_CLASSES[int(c)])
        b = np.array(boxes, float).reshape(-1, 4)
        items.append(LabelledImage(name=Path(row["image"]).name, data=(folder / row["image"]).read_bytes(), boxes=b,
                                   classes=tuple(classes),
                                   ecd_px=np.sqrt(np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0))))
    return items


# ------------------------------------------------------------------------------------------------ command line
def _keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    identity, public = generate_identity()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"error: {out} exists; keep your key (exports made for it need it) or choose another --out",
              file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(identity_file_text(identity))
    print(f"private key written to {out} (mode 0600; back it up, never send it)")
    print("public key - send this line to the plant's QC lead:")
    print(public)
    print(f"fingerprint (read it to them to compare): {short_fingerprint(recipient_fingerprint(public))}")
    return 0


def _read(path: str, cap: int, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise CollabError(f"No {what} at {p}.")
    if p.stat().st_size > cap:
        raise CollabError(f"{p} is too large to be {what}.")
    return p.read_bytes()


def _open(args: argparse.Namespace, *, check_expiry: bool) -> OpenedExport:
    identity = _read(args.identity, 256 * 1024, "an identity file").decode("ascii", "replace")
    data = _read(args.export, MAX_CIPHERTEXT_BYTES, "an export")
    return open_export(data, identity, check_expiry=check_expiry)


def _decrypt(args: argparse.Namespace) -> int:
    opened = _open(args, check_expiry=True)
    yaml_path = write_export(opened, Path(args.out))
    print(summary(opened.manifest))
    print(f"extracted {len(opened.files)} files to {args.out}; train with:")
    print(f"  python -m detection.train --data {yaml_path} --init-weights crystal-yolo11n.pt --imgsz 640 ...")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    opened = _open(args, check_expiry=False)
    print(summary(opened.manifest))
    if args.json:
        print(json.dumps(opened.manifest, indent=2, ensure_ascii=False))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from analysis.pipeline import make_detector
    from detection.evaluate import HEADER, evaluate, format_row

    items = labelled_images(Path(args.data), split=args.split)
    if not items:
        raise CollabError(f"The export in {args.data} has no '{args.split}' images.")
    print(HEADER)
    for model in args.model:
        report = evaluate(make_detector("onnx", model_path=Path(model)), items, set_name=f"export-{args.split}",
                          iou_threshold=args.iou)
        print(format_row(report), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m collab.researcher", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="create your age key pair (identity file) and print the public key")
    k.add_argument("--out", required=True, help="identity file to create, e.g. key.txt (never overwritten)")
    for name, helptext in (("decrypt", "decrypt, check and extract an export"),
                           ("inspect", "decrypt in memory and show the manifest (nothing written)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("export", help="the .age file from the plant")
        s.add_argument("--identity", "-i", required=True, help="your identity file (key.txt)")
        if name == "decrypt":
            s.add_argument("--out", required=True, help="new folder for the training set")
        else:
            s.add_argument("--json", action="store_true", help="also print the whole manifest")
    e = sub.add_parser("evaluate", help="evaluate ONNX models on an extracted export's labels")
    e.add_argument("--data", required=True, help="the folder written by decrypt")
    e.add_argument("--model", action="append", required=True, help="model.onnx or a signed .cqcpkg (repeat to compare)")
    e.add_argument("--split", default="val", choices=("train", "val"))
    e.add_argument("--iou", type=float, default=0.5)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"keygen": _keygen, "decrypt": _decrypt, "inspect": _inspect, "evaluate": _evaluate}
    try:
        return commands[args.command](args)
    except (DecryptionFailedError, ExportFormatError, ExpiredExportError, RecipientKeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except CrystalQCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '')}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    raise SystemExit(main())
