"""Tests of the synthetic micrograph generator (small images, fast)."""
from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest

from detection.synthetic import SyntheticConfigError, render_image, write_dataset
from detection.synthetic.__main__ import main as cli_main
from detection.synthetic.dataset import encode, image_seed, split_of
from detection.synthetic.labels import extract_objects, yolo_lines
from detection.synthetic.looks import LOOK_STYLES, inradius, paint_crystal, sample_look
from detection.synthetic.options import IGNORED_KINDS, parse_size, parse_split
import detection.synthetic.scene as scene_mod
from detection.synthetic.scene import _Canvas, compose, sample_scene
from detection.synthetic.shapes import SHAPE_KINDS, crystal_polygon, edge_equations, polygon_area

SMALL = (256, 224)


def _yaml_simple(text: str) -> dict:
    """Tiny parser for the flat data.yaml we write (key: value, and an indented names map)."""
    out: dict = {}
    current = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("  ") and current is not None:
            k, v = line.strip().split(":", 1)
            out[current][int(k)] = v.strip()
        else:
            k, v = line.split(":", 1)
            v = v.strip()
            if v == "":
                out[k] = {}
                current = k
            else:
                out[k] = v.strip("'")
                current = None
    return out


# ---------------------------------------------------------------- geometry (known answers)

@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_polygon_has_requested_area_and_is_convex(kind):
    rng = np.random.default_rng(3)
    poly = crystal_polygon(kind, ecd_px=40.0, angle_rad=0.7, rng=rng, tilt_rad=0.5, perspective=0.08)
    assert polygon_area(poly) == pytest.approx(math.pi / 4 * 40.0 ** 2, rel=1e-9)
    normals, offsets = edge_equations(poly)
    # every vertex is inside (or on) every edge's half plane -> convex
    assert np.all(offsets[None, :] - poly @ normals.T >= -1e-6)


def test_unknown_shape_and_bad_size_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown crystal shape"):
        crystal_polygon("cube", ecd_px=10, angle_rad=0, rng=rng)
    with pytest.raises(ValueError, match="ecd_px"):
        crystal_polygon("rhomb", ecd_px=0, angle_rad=0, rng=rng)
    with pytest.raises(ValueError, match="unknown crystal look"):
        sample_look("glossy", 4, inradius_px=5, contrast=1, rng=rng)


@pytest.mark.parametrize("style", LOOK_STYLES)
def test_painted_crystal_covers_polygon_area(style):
    rng = np.random.default_rng(11)
    poly = crystal_polygon("prism", ecd_px=50.0, angle_rad=0.3, rng=rng) + 40.0
    look = sample_look(style, len(poly), inradius_px=inradius(poly), contrast=1.0, rng=rng)
    t, alpha, halo = paint_crystal(poly, (80, 80), look, rng)
    assert alpha.sum() == pytest.approx(polygon_area(poly), rel=0.01)
    assert t.dtype == np.float32 and t.shape == (80, 80)
    assert np.all(halo[alpha >= 1.0] == 1.0)
    # the outermost full pixels form the refraction rim: dark, or bright for the 'bright' look
    inner = (alpha >= 0.999).astype(np.uint8)
    border = inner.astype(bool) & ~cv2.erode(inner, np.ones((3, 3), np.uint8)).astype(bool)
    rim = float(np.median(t[border]))
    assert rim > 1.05 if style == "bright" else rim < 0.95


def test_later_crystal_hides_the_earlier_one_in_the_owner_map():
    rng = np.random.default_rng(2)
    canvas = _Canvas(120, 100)
    square = np.array([[-20.0, -20.0], [20.0, -20.0], [20.0, 20.0], [-20.0, 20.0]])
    dark = dataclasses.replace(sample_look("bevel", 4, inradius_px=20, contrast=1.0, rng=rng), inclusions=0)
    faint = dataclasses.replace(sample_look("faint", 4, inradius_px=20, contrast=1.0, rng=rng), inclusions=0)
    canvas.add_counted("crystal", np.array([40.0, 50.0]), [(square, dark)], square, rng)
    assert canvas.overlap(np.array([70.0, 50.0]), square) == {1: 10 * 40}
    canvas.add_counted("crystal", np.array([70.0, 50.0]), [(square, faint)], square, rng)
    objects = extract_objects(canvas.owner, canvas.records)
    assert [o["box"] for o in objects] == [[20, 30, 50, 70], [50, 30, 90, 70]]
    assert [o["area_px"] for o in objects] == [30 * 40, 40 * 40]
    # inside the later crystal the picture shows only the later crystal, exactly as if it were alone
    alone = _Canvas(120, 100)
    alone.add_counted("crystal", np.array([70.0, 50.0]), [(square, faint)], square, rng)
    np.testing.assert_allclose(canvas.t_all[31:69, 51:89], alone.t_all[31:69, 51:89], atol=1e-6)
    assert not np.allclose(canvas.t_all[31:69, 21:49], alone.t_all[31:69, 21:49])


# ---------------------------------------------------------------- determinism

def test_same_seed_same_bytes_different_seed_different():
    a, ta = render_image(42, size=SMALL, difficulty="hard")
    b, tb = render_image(42, size=SMALL, difficulty="hard")
    c, _ = render_image(43, size=SMALL, difficulty="hard")
    assert a.tobytes() == b.tobytes()
    assert json.dumps(ta, sort_keys=True) == json.dumps(tb, sort_keys=True)
    assert encode(a, "png")[0] == encode(b, "png")[0]
    assert a.tobytes() != c.tobytes()


def test_blur_rule_relative_is_recorded_deterministic_and_leaves_the_default_alone():
    a, ta = render_image(42, size=SMALL, difficulty="hard", blur_rule="relative")
    b, tb = render_image(42, size=SMALL, difficulty="hard", blur_rule="relative")
    fixed, tf = render_image(42, size=SMALL, difficulty="hard")
    assert a.tobytes() == b.tobytes() and ta["blur_rule"] == "relative" and "blur_rule" not in tf
    assert json.dumps(ta, sort_keys=True) == json.dumps(tb, sort_keys=True)
    assert fixed.tobytes() == render_image(42, size=SMALL, difficulty="hard", blur_rule="fixed")[0].tobytes()
    assert all(o["blur_sigma_px"] >= scene_mod.OOF_MIN_SIGMA_PX for o in ta["objects"] if o["class"] == "out_of_focus")


def test_blur_rule_limits_grow_with_the_crystal_size():
    fixed = [scene_mod.counted_soft_max_px(e, "fixed") for e in (10, 20, 40, 80)]
    rel = [scene_mod.counted_soft_max_px(e, "relative") for e in (10, 20, 40, 80)]
    assert fixed == [scene_mod.COUNTED_SOFT_MAX_PX] * 4
    assert rel == pytest.approx([1.0, 2.0, 3.5, 3.5])
    oof = [scene_mod.oof_min_sigma_px(e, "relative", scene_min_px=2.0, frame_sigma_px=1.0) for e in (10, 40, 80)]
    assert oof == pytest.approx([3.0, 40 / 7, 80 / 7])
    assert scene_mod.oof_min_sigma_px(80, "fixed", scene_min_px=2.0, frame_sigma_px=2.5) == 3.75
    # whatever the size, an out-of-focus crystal is blurrier than any counted one of the same size
    for ecd in np.linspace(8, 220, 50):
        assert scene_mod.oof_min_sigma_px(ecd, "relative", scene_min_px=0.0, frame_sigma_px=0.0) > \
            scene_mod.counted_soft_max_px(ecd, "relative")


def test_image_seed_depends_on_seed_and_index():
    seeds = {image_seed(s, i) for s in (0, 1) for i in range(50)}
    assert len(seeds) == 100
    assert image_seed(5, 3) == image_seed(5, 3)


def test_dataset_bytes_do_not_depend_on_workers(tmp_path):
    write_dataset(tmp_path / "one", n=4, seed=9, size=(128, 128), fmt="mixed", workers=1)
    write_dataset(tmp_path / "two", n=4, seed=9, size=(128, 128), fmt="mixed", workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()
                   and p.name not in ("data.yaml",))
    assert len(files) >= 13  # 4 images, 4 labels, 4 truths, dataset.json
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


# ---------------------------------------------------------------- truth consistency

@pytest.fixture(scope="module")
def dense_scene():
    rng = np.random.default_rng(123)
    # dense, with touching, overlapping (occluding) crystals and agglomerates
    scene = dataclasses.replace(sample_scene("hard", rng), crystals_per_mp=400.0, agglomerate_frac=0.2,
                                overlap_prob=0.6, touch_frac=0.4, ecd_median_px=20.0, ecd_sigma=0.5)
    trans, owner, records = compose((320, 256), scene, rng, frame_sigma_px=1.0)
    return trans, owner, records, extract_objects(owner, records)


def test_every_box_contains_its_mask_and_ecd_matches_area(dense_scene):
    _, owner, records, objects = dense_scene
    by_record = {r.oid: r for r in records}
    assert sum(o["counted"] for o in objects) >= 15
    assert any(o["class"] == "agglomerate" for o in objects)
    visible = [r for r in records if (owner == r.oid).any()]
    assert len(visible) == len(objects)
    for rec, obj in zip(visible, objects):
        mask = owner == rec.oid
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = obj["box"]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)  # tight, exclusive max
        assert obj["area_px"] == int(mask.sum())
        assert obj["ecd_px"] == pytest.approx(math.sqrt(4 * obj["area_px"] / math.pi), abs=1e-3)
        poly = np.asarray(obj["polygon"])
        assert np.all(poly[:, 0] >= x0) and np.all(poly[:, 0] <= x1)
        assert np.all(poly[:, 1] >= y0) and np.all(poly[:, 1] <= y1)
        assert by_record[rec.oid] is rec


def test_counted_objects_have_minimum_visible_area_and_ignored_kinds_are_known(dense_scene):
    _, _, _, objects = dense_scene
    for obj in objects:
        if obj["counted"]:
            assert obj["class"] in ("crystal", "agglomerate") and obj["area_px"] >= 20
        else:
            assert obj["class"] in IGNORED_KINDS


def test_render_truth_fields_and_counts():
    img, truth = render_image(7, size=SMALL, difficulty="hard", colour="grey")
    assert img.shape == (SMALL[1], SMALL[0]) and img.dtype == np.uint8
    assert truth["size"] == list(SMALL) and truth["seed"] == 7 and truth["difficulty"] == "hard"
    counted = [o for o in truth["objects"] if o["counted"]]
    assert truth["n_counted"] == len(counted) == truth["counts"]["crystal"] + truth["counts"]["agglomerate"]
    assert truth["ecd_px"] == [o["ecd_px"] for o in counted]
    assert sum(truth["counts"].values()) == len(truth["objects"])
    for o in truth["objects"]:
        x0, y0, x1, y1 = o["box"]
        assert 0 <= x0 < x1 <= SMALL[0] and 0 <= y0 < y1 <= SMALL[1]
        assert o["area_px"] <= (x1 - x0) * (y1 - y0)


def test_truncated_counted_objects_touch_the_frame():
    _, truth = render_image(21, size=(200, 200), difficulty="easy")
    found = 0
    for _ in range(8):
        for o in truth["objects"]:
            if o["counted"] and o["truncated"]:
                found += 1
                x0, y0, x1, y1 = o["box"]
                assert x0 == 0 or y0 == 0 or x1 == 200 or y1 == 200
        _, truth = render_image(truth["seed"] + 1, size=(200, 200), difficulty="easy")
    assert found > 0


def test_ignored_objects_never_become_countable_labels():
    _, truth = render_image(5, size=(320, 320), difficulty="hard")
    lines = yolo_lines(truth)
    assert len(lines) == truth["n_counted"]
    assert {line.split()[0] for line in lines} <= {"0", "1"}
    mimic = yolo_lines(truth, mimic_class=True)
    n_mimic = sum(1 for line in mimic if line.split()[0] == "2")
    assert n_mimic == truth["counts"]["out_of_focus"] + truth["counts"]["bubble"] > 0
    assert len(mimic) == truth["n_counted"] + n_mimic


def test_yolo_values_normalised_and_boxes_match_truth():
    _, truth = render_image(8, size=SMALL, difficulty="medium")
    w, h = SMALL
    lines = yolo_lines(truth)
    counted = [o for o in truth["objects"] if o["counted"]]
    assert lines
    for line, obj in zip(lines, counted):
        cls, xc, yc, bw, bh = line.split()
        vals = np.array([xc, yc, bw, bh], float)
        assert np.all((vals >= 0) & (vals <= 1))
        x0, y0, x1, y1 = obj["box"]
        assert float(xc) * w == pytest.approx((x0 + x1) / 2, abs=1e-3)
        assert float(bw) * w == pytest.approx(x1 - x0, abs=1e-3)
        assert int(cls) == (0 if obj["class"] == "crystal" else 1)
    for line in yolo_lines(truth, seg=True):
        vals = np.array(line.split()[1:], float)
        assert len(vals) >= 6 and len(vals) % 2 == 0 and np.all((vals >= 0) & (vals <= 1))


# ---------------------------------------------------------------- dataset on disk

def test_dataset_layout_counts_and_data_yaml(tmp_path):
    summary = write_dataset(tmp_path, n=10, seed=3, size=(192, 160), split=(0.6, 0.2, 0.2), difficulty="hard")
    assert summary["images_per_split"] == {"train": 6, "val": 2, "test": 2}
    total_counted = 0
    for split in ("train", "val", "test"):
        images = sorted((tmp_path / "images" / split).iterdir())
        for img_path in images:
            label = tmp_path / "labels" / split / (img_path.stem + ".txt")
            truth = json.loads((tmp_path / "truth" / split / (img_path.stem + ".json")).read_text())
            lines = [x for x in label.read_text().splitlines() if x.strip()]
            assert len(lines) == truth["n_counted"]
            assert sum(line.split()[0] == "0" for line in lines) == truth["counts"]["crystal"]
            assert sum(line.split()[0] == "1" for line in lines) == truth["counts"]["agglomerate"]
            total_counted += truth["n_counted"]
    assert total_counted == summary["counts"]["crystal"] + summary["counts"]["agglomerate"] > 0
    data = _yaml_simple((tmp_path / "data.yaml").read_text())
    assert data["path"] == str(tmp_path.resolve())
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert data["names"] == {0: "crystal", 1: "agglomerate"} and data["nc"] == "2"


def test_mimic_class_and_seg_dataset(tmp_path):
    write_dataset(tmp_path, n=2, seed=4, size=(160, 160), split="1,0,0", difficulty="hard", mimic_class=True,
                  seg=True, fmt="jpg")
    data = _yaml_simple((tmp_path / "data.yaml").read_text())
    assert data["names"] == {0: "crystal", 1: "agglomerate", 2: "mimic"}
    assert len(list((tmp_path / "images" / "train").glob("*.jpg"))) == 2


def test_bit_depth_colour_and_formats():
    img16, t16 = render_image(1, size=(96, 96), bit_depth=16, colour="grey")
    assert img16.dtype == np.uint16 and img16.ndim == 2 and t16["bit_depth"] == 16
    bgr, tb = render_image(1, size=(96, 96), colour="bgr")
    assert bgr.shape == (96, 96, 3) and tb["channels"] == 3
    data, ext = encode(img16, "png16")
    assert ext == "png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    data, ext = encode(img16, "jpg")
    assert ext == "jpg" and data[:2] == b"\xff\xd8"


def test_split_by_index():
    names = [split_of(i, 10, (0.8, 0.1, 0.1)) for i in range(10)]
    assert names == ["train"] * 8 + ["val", "test"]


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    ({"size": (10, 10)}, "out of range"),
    ({"size": "big"}, "width, height"),
    ({"difficulty": "brutal"}, "difficulty"),
    ({"bit_depth": 12}, "bit_depth"),
    ({"colour": "sepia"}, "colour"),
    ({"blur_rule": "sloppy"}, "blur_rule"),
])
def test_render_image_rejects_bad_options(kwargs, match):
    with pytest.raises(SyntheticConfigError, match=match):
        render_image(1, **kwargs)


def test_render_image_rejects_negative_seed():
    with pytest.raises(SyntheticConfigError, match="seed"):
        render_image(-1)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "positive"),
    ({"workers": 0}, "workers"),
    ({"seed": -3}, "seed"),
    ({"split": (0.5, 0.5, 0.5)}, "sum to 1"),
    ({"split": "a,b,c"}, "three fractions"),
    ({"fmt": "tiff"}, "format"),
    ({"blur_rule": "sloppy"}, "blur_rule"),
])
def test_write_dataset_rejects_bad_options(tmp_path, kwargs, match):
    args = {"n": 1, "seed": 0, "size": (64, 64)} | kwargs
    with pytest.raises(SyntheticConfigError, match=match):
        write_dataset(tmp_path / "ds", **args)


def test_write_dataset_refuses_non_empty_folder(tmp_path):
    write_dataset(tmp_path, n=1, seed=0, size=(64, 64))
    with pytest.raises(SyntheticConfigError, match="already holds a dataset"):
        write_dataset(tmp_path, n=1, seed=0, size=(64, 64))


def test_parse_helpers():
    assert parse_size("640x480") == (640, 480)
    assert parse_split("0.7,0.2,0.1") == (0.7, 0.2, 0.1)
    with pytest.raises(SyntheticConfigError):
        parse_size("640")
    with pytest.raises(SyntheticConfigError):
        encode(np.zeros((4, 4), np.uint8), "bmp")


def test_cli_writes_dataset_and_reports_bad_split(tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path / "a"), "--n", "2", "--seed", "1", "--size", "96x80", "--quiet"]) == 0
    assert "wrote 2 images" in capsys.readouterr().out
    assert (tmp_path / "a" / "data.yaml").exists()
    assert cli_main(["--out", str(tmp_path / "b"), "--n", "2", "--seed", "1", "--split", "0.9,0.9,0"]) == 2
    assert "sum to 1" in capsys.readouterr().err


def test_blur_rule_large_keeps_the_fixed_limit_for_small_crystals_and_grows_above():
    large = [scene_mod.counted_soft_max_px(e, "large") for e in (10, 25, 39, 60, 80, 200)]
    assert large == pytest.approx([scene_mod.COUNTED_SOFT_MAX_PX] * 3 + [60 / 18, 80 / 18, 4.5])
    a, ta = render_image(42, size=SMALL, difficulty="hard", blur_rule="large")
    assert ta["blur_rule"] == "large" and a.tobytes() == render_image(42, size=SMALL, difficulty="hard",
                                                                       blur_rule="large")[0].tobytes()
    for ecd in np.linspace(8, 220, 50):  # out of focus stays blurrier than any counted crystal of the same size
        assert scene_mod.oof_min_sigma_px(ecd, "large", scene_min_px=0.0, frame_sigma_px=0.0) > \
            scene_mod.counted_soft_max_px(ecd, "large")


def _oof_sigmas(near_oof: float, *, blur_rule: str = "fixed", frame_sigma_px: float = 0.0) -> list[float]:
    sigmas = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        scene = sample_scene("hard", rng)
        _, _, records = compose((640, 512), scene, rng, frame_sigma_px=frame_sigma_px, blur_rule=blur_rule,
                                near_oof=near_oof)
        sigmas += [r.extra["blur_sigma_px"] for r in records if r.kind == "out_of_focus"]
    return sigmas


def test_near_oof_draws_out_of_focus_crystals_just_past_the_counted_limit():
    far = _oof_sigmas(0.0)
    near = _oof_sigmas(1.0)
    lo = scene_mod.OOF_MIN_SIGMA_PX  # fixed rule, no frame blur: past 2.2 + 0.8 px and the 3 px floor
    assert len(near) >= 20 and min(near) >= lo - 0.01 and max(near) <= scene_mod.NEAR_OOF_SPAN * lo + 0.01
    assert np.median(far) > scene_mod.NEAR_OOF_SPAN * lo  # the ordinary ones lie mostly far past the limit
    blurred = _oof_sigmas(1.0, frame_sigma_px=2.5)  # and stay 1.5 x blurrier than the frame
    assert min(blurred) >= 3.75 - 0.01
    mixed = _oof_sigmas(0.4)
    assert 0.15 < np.mean(np.array(mixed) <= scene_mod.NEAR_OOF_SPAN * lo + 0.01) < 0.8


@pytest.mark.parametrize("rule", ["fixed", "relative", "large", "large-tight"])
def test_near_oof_blur_never_reaches_the_counted_limit_of_its_size(rule):
    for ecd in np.linspace(8, 220, 50):
        lo = scene_mod.near_oof_min_sigma_px(ecd, rule, frame_sigma_px=0.0)
        assert lo >= scene_mod.counted_soft_max_px(ecd, rule) + scene_mod.NEAR_OOF_MARGIN_PX


def test_near_oof_zero_leaves_earlier_recipes_byte_for_byte_and_a_share_is_recorded():
    a, ta = render_image(42, size=SMALL, difficulty="hard")
    b, tb = render_image(42, size=SMALL, difficulty="hard", near_oof=0.0)
    assert a.tobytes() == b.tobytes() and ta == tb and "near_oof" not in ta
    c, tc = render_image(42, size=SMALL, difficulty="hard", near_oof=0.5)
    assert tc["near_oof"] == 0.5 and c.tobytes() == render_image(42, size=SMALL, difficulty="hard",
                                                                 near_oof=0.5)[0].tobytes()


@pytest.mark.parametrize("bad", [-0.1, 1.5, "many", None])
def test_near_oof_out_of_range_is_refused(bad):
    with pytest.raises(SyntheticConfigError, match="near_oof must be a number from 0 to 1"):
        render_image(1, size=SMALL, near_oof=bad)


def test_the_command_line_records_near_oof_in_the_dataset(tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path / "d"), "--n", "2", "--seed", "3", "--size", "128x96", "--near-oof",
                     "0.3", "--quiet"]) == 0
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["near_oof"] == 0.3
    truth = json.loads(next((tmp_path / "d" / "truth").rglob("*.json")).read_text())
    assert truth["near_oof"] == 0.3
    assert cli_main(["--out", str(tmp_path / "e"), "--n", "1", "--seed", "3", "--near-oof", "2"]) == 2
    assert "near_oof" in capsys.readouterr().err


def test_blur_rule_large_tight_counts_as_large_and_leaves_no_blur_band_unrendered():
    """Counted limits as 'large'; out of focus starts just past them (the fixed rule's 3 px up to ~40 px ECD), where
    'large' starts at ECD / 7 and leaves the band between unrendered."""
    for ecd in np.linspace(8, 220, 50):
        limit = scene_mod.counted_soft_max_px(ecd, "large-tight")
        assert limit == scene_mod.counted_soft_max_px(ecd, "large")
        tight = scene_mod.oof_min_sigma_px(ecd, "large-tight", scene_min_px=0.0, frame_sigma_px=0.0)
        assert tight == pytest.approx(max(scene_mod.OOF_MIN_SIGMA_PX, limit + scene_mod.NEAR_OOF_MARGIN_PX))
        assert tight <= scene_mod.oof_min_sigma_px(ecd, "large", scene_min_px=0.0, frame_sigma_px=0.0)
    assert scene_mod.oof_min_sigma_px(30, "large-tight", scene_min_px=0.0, frame_sigma_px=0.0) == \
        scene_mod.oof_min_sigma_px(30, "fixed", scene_min_px=0.0, frame_sigma_px=0.0)
    assert scene_mod.oof_min_sigma_px(30, "large-tight", scene_min_px=2.2, frame_sigma_px=3.0) == pytest.approx(4.5)
    a, ta = render_image(42, size=SMALL, difficulty="hard", blur_rule="large-tight")
    assert ta["blur_rule"] == "large-tight" and a.tobytes() == render_image(
        42, size=SMALL, difficulty="hard", blur_rule="large-tight")[0].tobytes()


def test_translucent_bevel_looks_keep_a_light_inner_facet_with_the_same_draws():
    from detection.synthetic import looks as looks_mod
    for seed in range(20):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        plain = sample_look("bevel", 6, inradius_px=30.0, contrast=1.0, rng=a)
        clear = sample_look("bevel", 6, inradius_px=30.0, contrast=1.0, rng=b, translucent=True)
        assert a.random() == b.random()  # the same number of draws: the rest of the image stays as it was
        lo, hi = looks_mod.TRANSLUCENT_BAND_FRAC
        assert np.all((clear.band_frac == 0) | ((clear.band_frac >= lo) & (clear.band_frac <= hi)))
        assert looks_mod.TRANSLUCENT_INNER_T[0] <= clear.inner_t <= looks_mod.TRANSLUCENT_INNER_T[1]
        assert clear.rim_t == plain.rim_t  # only the bands and the inner facet change
    for style in ("thin", "faint", "bright"):  # other styles are untouched
        a, b = np.random.default_rng(1), np.random.default_rng(1)
        one = sample_look(style, 5, inradius_px=20.0, contrast=1.0, rng=a)
        two = sample_look(style, 5, inradius_px=20.0, contrast=1.0, rng=b, translucent=True)
        assert (one.rim_t, one.inner_t) == (two.rim_t, two.inner_t)
        assert np.array_equal(one.band_frac, two.band_frac) and np.array_equal(one.band_t, two.band_t)


def test_looks_default_leaves_earlier_recipes_and_translucent_is_recorded():
    a, ta = render_image(42, size=SMALL, difficulty="medium")
    b, tb = render_image(42, size=SMALL, difficulty="medium", looks="default")
    assert a.tobytes() == b.tobytes() and ta == tb and "looks" not in ta
    c, tc = render_image(42, size=SMALL, difficulty="medium", looks="translucent")
    assert tc["looks"] == "translucent" and tc["render"] == ta["render"]  # the scene as sampled is recorded
    assert c.tobytes() == render_image(42, size=SMALL, difficulty="medium", looks="translucent")[0].tobytes()
    with pytest.raises(SyntheticConfigError, match="looks"):
        render_image(42, size=SMALL, looks="glassy")
