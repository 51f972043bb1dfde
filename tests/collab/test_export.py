"""Dataset export (collab.dataset) and the researcher's decrypt (collab.researcher): right key, wrong key, expired,
tampered, metadata really gone, manifest without operator/lot unless chosen, crop, audit."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import tarfile
from datetime import date, datetime, timedelta, timezone

import cv2
import numpy as np
import pytest

from analysis.io import load_image, to_uint8
from analysis.records import ImageMeta, ImageResult, Particle
from collab import dataset
from collab import researcher as rtool
from collab.crypto_age import generate_identity, identity_file_text
from collab.dataset import Crop, build_training_set, crop_result, seal_export
from collab.errors import DecryptionFailedError, ExpiredExportError, ExportBuildError
from tests.collab.conftest import LOT, MARKERS, OPERATOR, PRODUCT, options, planted_files
from ui.analyses import load_analysis, read_original


def _sealed(vault, analyses, researcher_, *, user="lead", **opts):
    ts = build_training_set(vault, analyses, options(**opts), recipient=researcher_)
    return ts, seal_export(vault, ts, user=user, qc_lead_confirmed=True)


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        names.append(kind.decode("ascii"))
        pos += 12 + length
    return names


# ------------------------------------------------------------------------------------------------ right key
def test_export_opens_with_the_right_key_and_matches_what_was_previewed(vault, analyses, researcher, identity):
    ts, sealed = _sealed(vault, analyses, researcher)
    opened = researcher_open(sealed, identity)
    assert {f"{dataset.ROOT}/{k}": v for k, v in opened.files.items()} == {f.path: f.data for f in ts.files}
    m = opened.manifest
    assert m["plant"] == "plant-A" and m["purpose"].startswith("fine-tune") and m["classes"] == ["crystal",
                                                                                              "agglomerate"]
    assert m["expires"] == (date.today() + timedelta(days=90)).isoformat()
    assert m["recipient"] == {"name": "Dr. Ada Researcher", "fingerprint": researcher.fingerprint}
    assert m["pixel_size_um"] == 0.5 and m["pixel_sizes_um"] == [0.5]
    assert m["totals"]["images"] == 3 and (m["totals"]["train"], m["totals"]["val"]) == (2, 1)
    for row in m["images"]:
        lines = opened.files[row["label"]].decode().splitlines()
        assert sum(row["counts"].values()) == len(lines) > 0
        assert row["image"].split("/")[1] == row["split"] == row["label"].split("/")[1]
    # the labels are the saved analyses' counted objects, in the saved result's order
    saved = sorted(sum(1 for p in load_analysis(vault, a).result.particles if p.excluded_reason is None)
                   for a in analyses)
    assert sorted(sum(r["counts"].values()) for r in m["images"]) == saved
    assert m["totals"]["crystal"] + m["totals"]["agglomerate"] == sum(saved)


def researcher_open(sealed: bytes, identity, **kw):
    return rtool.open_export(sealed, identity_file_text(identity[0]), **kw)


def test_file_names_are_random_and_unlinked_to_the_analyses(vault, analyses, researcher):
    ts = build_training_set(vault, analyses, options(), recipient=researcher)
    again = build_training_set(vault, analyses, options(), recipient=researcher)
    names = [f.path.rsplit("/", 1)[1].split(".")[0] for f in ts.files if f.kind == "image"]
    assert len(set(names)) == 3 and all(len(n) == 16 and int(n, 16) >= 0 for n in names)
    assert not set(names) & {f.path.rsplit("/", 1)[1].split(".")[0] for f in again.files if f.kind == "image"}
    blob = ts.archive.decode("latin-1")
    assert not any(a in blob or a.split("-")[0] in blob for a in analyses)  # neither id nor analysis time


# ------------------------------------------------------------------------------------------------ de-identification
def test_planted_metadata_and_names_are_absent_from_every_byte(vault, analyses, researcher, identity):
    originals = b"".join(read_original(vault, load_analysis(vault, a).info) for a in analyses)
    assert all(MARKERS[k].encode() in originals for k in ("jpeg_artist", "jpeg_comment", "png_text",
                                                          "tiff_description"))  # planted: the test can fail
    ts, sealed = _sealed(vault, analyses, researcher, user="Quentin QC-Lead")
    opened = researcher_open(sealed, identity)
    tar_plain = dataset.tar_bytes(ts.files, mtime=0)
    secrets_ = [*MARKERS.values(), "MARKER-CAMERA-MAKE", OPERATOR, PRODUCT, LOT, "Quentin QC-Lead"]
    blobs = [ts.archive, tar_plain, *opened.files.values()]
    for s in secrets_:
        for variant in (s.encode("utf-8"), s.encode("utf-16-le"), s.lower().encode(), s.upper().encode()):
            assert not any(variant in b for b in blobs), s
    for path, data in opened.files.items():
        if path.endswith(".png"):
            chunks = png_chunks(data)  # nothing but the image header, pixel data and end: no tEXt/eXIf/iTXt/tIME
            assert chunks[0] == "IHDR" and chunks[-1] == "IEND" and set(chunks) == {"IHDR", "IDAT", "IEND"}, path


def test_pixels_survive_re_encoding_unchanged(vault, analyses, researcher, identity):
    ts, sealed = _sealed(vault, analyses, researcher)
    opened = researcher_open(sealed, identity)
    exported = sorted((opened.files[r["image"]] for r in opened.manifest["images"]), key=len)
    decoded = [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED) for d in exported]
    originals = [to_uint8(load_image(read_original(vault, load_analysis(vault, a).info))[0]) for a in analyses]
    for orig in originals:  # each original's decoded pixels are one exported image, bit for bit
        assert any(d.shape == orig.shape and np.array_equal(d, orig) for d in decoded)


def test_manifest_has_no_operator_product_or_lot_unless_chosen(vault, analyses, researcher, identity):
    _, sealed = _sealed(vault, analyses, researcher)
    m = researcher_open(sealed, identity).manifest
    text = json.dumps(m)
    assert OPERATOR not in text and PRODUCT not in text and LOT not in text
    assert all("product" not in r and "lot" not in r and "operator" not in r for r in m["images"])
    assert m["fields"] == {"product": False, "lot": False}

    _, sealed = _sealed(vault, analyses, researcher, include_lot=True)
    m = researcher_open(sealed, identity).manifest
    assert {r["lot"] for r in m["images"]} == {LOT} and PRODUCT not in json.dumps(m) and OPERATOR not in json.dumps(m)
    _, sealed = _sealed(vault, analyses, researcher, include_product=True, include_lot=True)
    m = researcher_open(sealed, identity).manifest
    assert {(r["product"], r["lot"]) for r in m["images"]} == {(PRODUCT, LOT)} and OPERATOR not in json.dumps(m)


def test_archive_is_plain_ustar_without_owner_names_and_stock_tar_lists_it(vault, analyses, researcher, tmp_path):
    ts = build_training_set(vault, analyses, options(), recipient=researcher)
    with tarfile.open(fileobj=io.BytesIO(ts.archive)) as tar:
        members = tar.getmembers()
    assert all(m.isreg() and m.uname == "" and m.gname == "" and m.uid == m.gid == 0 and m.mode == 0o644
               for m in members)
    assert [m.name for m in members][:2] == ["crystal-qc-export/manifest.json", "crystal-qc-export/data.yaml"]
    tar_bin = shutil.which("tar")
    if tar_bin:  # the system's tar (not Python) reads it
        (tmp_path / "x.tar").write_bytes(ts.archive)
        listed = subprocess.run([tar_bin, "-tf", str(tmp_path / "x.tar")], capture_output=True, text=True, check=True)
        assert listed.stdout.split() == [m.name for m in members]


# ------------------------------------------------------------------------------------------------ refusals
def test_wrong_recipient_key_fails_with_a_clear_error(vault, analyses, researcher):
    _, sealed = _sealed(vault, analyses, researcher)
    with pytest.raises(DecryptionFailedError, match="encrypted to another researcher's public key"):
        researcher_open(sealed, generate_identity())


def test_expired_export_is_refused(vault, analyses, researcher, identity):
    past = datetime.now(timezone.utc) - timedelta(days=100)
    ts = build_training_set(vault, analyses, options(expires=past.date() + timedelta(days=30)), recipient=researcher,
                            now=past)
    sealed = seal_export(vault, ts, user="lead", qc_lead_confirmed=True)
    with pytest.raises(ExpiredExportError, match=f"expired on {(past.date() + timedelta(days=30)).isoformat()}"):
        researcher_open(sealed, identity)
    # the last valid day still opens
    assert researcher_open(sealed, identity, today=past.date() + timedelta(days=30)).manifest["plant"] == "plant-A"


def test_tampered_ciphertext_is_refused(vault, analyses, researcher, identity):
    _, sealed = _sealed(vault, analyses, researcher)
    for pos in (len(sealed) // 2, len(sealed) - 2):
        bad = bytearray(sealed)
        bad[pos] ^= 0x40
        with pytest.raises(DecryptionFailedError, match="altered"):
            researcher_open(bytes(bad), identity)
    with pytest.raises(DecryptionFailedError):
        researcher_open(sealed[:-100], identity)  # truncated


@pytest.mark.parametrize("change, message", [
    ({"purpose": "  "}, "purpose"),
    ({"plant": ""}, "pseudonym"),
    ({"expires": date.today() - timedelta(days=1)}, "after today"),
    ({"crop": Crop(bottom=500)}, "at least 32 x 32"),
])
def test_bad_options_are_refused_before_anything_is_built(vault, analyses, researcher, change, message):
    with pytest.raises(ExportBuildError, match=message):
        build_training_set(vault, analyses, options(**change), recipient=researcher)


def test_no_analyses_and_negative_crop_are_refused(vault, researcher):
    with pytest.raises(ExportBuildError, match="at least one"):
        build_training_set(vault, [], options(), recipient=researcher)
    with pytest.raises(ExportBuildError, match="whole numbers"):
        Crop(top=-1)


def test_export_needs_the_qc_lead_confirmation_and_is_audited_without_raw_data(vault, analyses, researcher):
    ts = build_training_set(vault, analyses, options(), recipient=researcher)
    with pytest.raises(ExportBuildError, match="QC lead"):
        seal_export(vault, ts, user="lead", qc_lead_confirmed=False)
    assert not [e for e in vault.audit.entries() if e.event == "export"]
    sealed = seal_export(vault, ts, user="lead", qc_lead_confirmed=True)
    (event,) = [e for e in vault.audit.entries() if e.event == "export"]
    d = event.details
    assert event.user == "lead" and d["what"] == "training_set" and d["qc_lead_confirmed"] is True
    assert d["files"] == 2 + 2 * 3 and d["images"] == 3 and d["recipient_fingerprint"] == researcher.fingerprint
    assert d["purpose"] == ts.manifest["purpose"] and d["expires"] == ts.manifest["expires"]
    assert d["sha256"] == hashlib.sha256(sealed).hexdigest() and sorted(d["analyses"]) == sorted(analyses)
    text = json.dumps(d)
    assert not any(s in text for s in [*MARKERS.values(), OPERATOR, PRODUCT, LOT])


# ------------------------------------------------------------------------------------------------ crop
def _particle(i, box, cls="crystal", excluded=None):
    x0, y0, x1, y1 = box
    return Particle(particle_id=i, class_name=cls, confidence=1.0, x_min=x0, y_min=y0, x_max=x1, y_max=y1,
                    area_px=1.0, perimeter_px=1.0, ecd_px=1.0, feret_max_px=1.0, feret_min_px=1.0, aspect_ratio=1.0,
                    circularity=1.0, solidity=1.0, focus_score=1.0, on_border=False, excluded_reason=excluded)


def test_crop_shifts_clips_and_drops_boxes_known_answer():
    meta = ImageMeta(format="png", width=200, height=100, bit_depth=8, channels=1)
    result = ImageResult(name="x", meta=meta, pixel_size_um=None, include_border=False, detector="t", seconds=0.0,
                         particles=(_particle(1, (20, 10, 40, 30)),                   # inside: shifted
                                    _particle(2, (0, 50, 20, 70), "agglomerate"),     # half cut on the left: kept
                                    _particle(3, (0, 10, 11, 20)),                    # 1 px left inside: dropped
                                    _particle(4, (100, 76, 120, 96)),                 # 20 % inside: dropped
                                    _particle(5, (150, 20, 160, 30), excluded="dust")))  # kept, still excluded
    cropped = crop_result(result, Crop(left=10, bottom=20).window(200, 100))
    assert (cropped.meta.width, cropped.meta.height) == (190, 80)
    assert [(p.particle_id, p.x_min, p.y_min, p.x_max, p.y_max) for p in cropped.particles] == [
        (1, 10, 10, 30, 30), (2, 0, 50, 10, 70), (5, 140, 20, 150, 30)]
    assert dataset.label_text(cropped) == ("0 0.105263 0.250000 0.105263 0.250000\n"
                                           "1 0.026316 0.750000 0.052632 0.250000\n")


def test_crop_same_for_all_and_per_image_override(vault, analyses, researcher, identity):
    per_image = {analyses[0]: Crop(top=12, bottom=100)}
    ts = build_training_set(vault, analyses, options(crop=Crop(bottom=40), crops=per_image), recipient=researcher)
    rows = ts.manifest["images"]
    assert sorted((r["width"], r["height"]) for r in rows) == [(640, 400), (640, 472), (640, 472)]
    assert sorted(json.dumps(r["crop"], sort_keys=True) for r in rows) == sorted(
        [json.dumps({"top": 12, "bottom": 100, "left": 0, "right": 0}, sort_keys=True)]
        + [json.dumps({"top": 0, "bottom": 40, "left": 0, "right": 0}, sort_keys=True)] * 2)
    files = {f.path: f.data for f in ts.files}
    for r in rows:
        img = cv2.imdecode(np.frombuffer(files[f"{dataset.ROOT}/{r['image']}"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (r["height"], r["width"])
        for line in files[f"{dataset.ROOT}/{r['label']}"].decode().splitlines():
            _, cx, cy, w, h = map(float, line.split())
            assert 0 <= cx - w / 2 and cx + w / 2 <= 1.000001 and 0 <= cy - h / 2 and cy + h / 2 <= 1.000001


def test_thumbnail_shows_the_exported_image_with_boxes(vault, analyses, researcher):
    ts = build_training_set(vault, analyses, options(), recipient=researcher)
    thumb = ts.thumbnail(0, max_side=160)
    assert thumb.dtype == np.uint8 and thumb.ndim == 3 and max(thumb.shape[:2]) == 160
    coloured = (thumb[..., 0] != thumb[..., 1]) | (thumb[..., 1] != thumb[..., 2])
    assert coloured.any()  # label boxes drawn in colour on a grey image
    assert [r["kind"] for r in ts.file_table()][:2] == ["manifest", "data.yaml"]
    assert sum(r["bytes"] for r in ts.file_table()) == sum(len(f.data) for f in ts.files)


def test_technician_corrections_are_the_exported_labels(vault, analyses, researcher, identity):
    from ui import corrections

    target = analyses[0]
    counted = [p for p in load_analysis(vault, target).result.particles if p.excluded_reason is None]
    assert len(counted) >= 3
    corrections.delete_particles(vault, target, [counted[0].particle_id], user="tech")
    corrections.set_class(vault, target, [counted[1].particle_id], "agglomerate", user="tech")
    _, sealed = _sealed(vault, [target], researcher)
    opened = researcher_open(sealed, identity)
    (row,) = opened.manifest["images"]
    lines = opened.files[row["label"]].decode().splitlines()
    assert len(lines) == len(counted) - 1  # the deleted object is not labelled
    w, h = row["width"], row["height"]
    moved = counted[1]
    expect = f"1 {(moved.x_min + moved.x_max) / 2 / w:.6f} {(moved.y_min + moved.y_max) / 2 / h:.6f}"
    assert any(line.startswith(expect) for line in lines)  # reclassified as agglomerate (class 1)
    deleted = counted[0]
    gone = f"{(deleted.x_min + deleted.x_max) / 2 / w:.6f} {(deleted.y_min + deleted.y_max) / 2 / h:.6f}"
    assert not any(gone in line for line in lines)
    assert row["counts"]["agglomerate"] == sum(p.class_name == "agglomerate" for p in counted[2:]) + 1
