"""detection.evaluate: rendered sets under another blur rule, --conf, the sizing-bias column, recall by labelled
size, real_frames (labelled tiles put back together into their frames), several models in one run and the paired
bootstrap between rows."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from analysis.onnx_adapter import HybridDetector, load_onnx_detector_from_bytes
from analysis.pipeline import make_detector
from detection.evaluate import (
    LabelledImage, compare, evaluate, format_size_row, labelled_from_result, main, real_frames, real_set,
    recall_by_size, synthetic_set, with_conf,
)
from detection.synthetic import render_image
from tests.detection.onnx_fixtures import conv_head_model

TILE_H, TILE_W = 40, 60


def _frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey 80 x 120 frame and its label mask (palette indices 0 / 1 / 2): a bar across the vertical seam,
    a blob across the horizontal seam, a crystal inside one tile and a 10 px speck below the size floor."""
    rng = np.random.default_rng(seed)
    image = rng.integers(150, 200, (2 * TILE_H, 2 * TILE_W)).astype(np.uint8)
    mask = np.zeros(image.shape, np.uint8)
    mask[10:16, 50:70] = 1   # 6 x 20 bar cut by the column seam at x = 60
    mask[35:47, 90:100] = 2  # 12 x 10 blob cut by the row seam at y = 40 (other habit)
    mask[55:65, 10:16] = 1   # 10 x 6 crystal inside the lower-left tile
    mask[70:72, 100:105] = 1  # 10 px: below the 20 px floor of truth.json
    image[mask > 0] = 60
    return image, mask


def _palette_png(indices: np.ndarray) -> Image.Image:
    """A palette ("P") image whose pixel values are ``indices``, like the real tiles' label masks."""
    return Image.frombytes("P", (indices.shape[1], indices.shape[0]), np.ascontiguousarray(indices).tobytes())


def _write_tiles(folder, frame: str, image: np.ndarray, mask: np.ndarray, *, skip: tuple[int, int] | None = None
                 ) -> dict:
    truth = {}
    for r in (0, 1):
        for c in (0, 1):
            if (r, c) == skip:
                continue
            name = f"{frame}_{r}_{c}.png"
            tile = image[r * TILE_H:(r + 1) * TILE_H, c * TILE_W:(c + 1) * TILE_W]
            labels = mask[r * TILE_H:(r + 1) * TILE_H, c * TILE_W:(c + 1) * TILE_W]
            cv2.imwrite(str(folder / name), tile)
            palette = _palette_png(labels)
            palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
            palette.save(folder / f"{frame}_{r}_{c}_mask.png")
            n, _, stats, _ = cv2.connectedComponentsWithStats((labels > 0).astype(np.uint8), connectivity=8)
            truth[name] = [{"cls": "crystal", "bbox": [int(s[0]), int(s[1]), int(s[0] + s[2]), int(s[1] + s[3])],
                            "area_px": int(s[4]), "ecd_px": float(np.sqrt(4 * s[4] / np.pi))}
                           for s in stats[1:] if s[4] >= 20]
    return truth


def test_tiles_are_stitched_and_objects_cut_by_a_seam_become_one(tmp_path):
    image, mask = _frame(1)
    truth = _write_tiles(tmp_path, "F7", image, mask)
    (tmp_path / "truth.json").write_text(json.dumps(truth))

    frames = real_frames(tmp_path)

    assert [f.name for f in frames] == ["F7.png"]
    frame = frames[0]
    decoded = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(decoded, image)  # lossless, tiles in their places
    order = np.lexsort((frame.boxes[:, 0], frame.boxes[:, 1]))
    np.testing.assert_array_equal(frame.boxes[order], [[50, 10, 70, 16], [90, 35, 100, 47], [10, 55, 16, 65]])
    np.testing.assert_allclose(frame.ecd_px[order], np.sqrt(4 * np.array([120, 120, 60]) / np.pi))
    assert frame.classes == ("crystal",) * 3
    # the tiles themselves hold the two seam objects in pieces: 5 labelled pieces for 3 objects
    assert sum(len(t.boxes) for t in real_set(tmp_path)) == 5


def test_an_incomplete_grid_is_left_out_and_other_names_are_ignored(tmp_path):
    image, mask = _frame(2)
    truth = _write_tiles(tmp_path, "A", image, mask)
    truth.update(_write_tiles(tmp_path, "B", image, mask, skip=(1, 1)))
    cv2.imwrite(str(tmp_path / "loose.png"), image)
    truth["loose.png"] = []
    (tmp_path / "truth.json").write_text(json.dumps(truth))

    assert [f.name for f in real_frames(tmp_path)] == ["A.png"]


def test_tiles_that_do_not_line_up_leave_their_frame_out(tmp_path):
    image, mask = _frame(4)
    truth = _write_tiles(tmp_path, "D", image, mask)
    # the lower row cut at another column: same total width, but the tiles' columns no longer line up
    for c, (x0, x1) in enumerate(((0, 50), (50, 120))):
        cv2.imwrite(str(tmp_path / f"D_1_{c}.png"), image[TILE_H:, x0:x1])
        _palette_png(mask[TILE_H:, x0:x1]).save(tmp_path / f"D_1_{c}_mask.png")
    (tmp_path / "truth.json").write_text(json.dumps(truth))

    assert real_frames(tmp_path) == []


@pytest.mark.parametrize("broken", ["mask missing", "mask size"])
def test_a_tile_without_a_matching_mask_leaves_its_frame_out(tmp_path, broken):
    image, mask = _frame(3)
    truth = _write_tiles(tmp_path, "C", image, mask)
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    target = tmp_path / "C_0_1_mask.png"
    if broken == "mask missing":
        target.unlink()
    else:
        _palette_png(np.zeros((TILE_H, TILE_W + 1), np.uint8)).save(target)

    assert real_frames(tmp_path) == []


def _disks(diameter: int, centres: list[tuple[int, int]]) -> bytes:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(185, 2, (300, 400)), 0, 255).astype(np.uint8)
    for cx, cy in centres:
        cv2.circle(image, (cx, cy), diameter // 2, 70, -1, lineType=cv2.LINE_AA)
    ok, png = cv2.imencode(".png", image)
    assert ok
    return png.tobytes()


@pytest.mark.parametrize("label_scale", [0.8, 1.0])
def test_size_ratio_is_the_median_found_over_labelled_ecd_of_matched_objects(label_scale):
    centres = [(60, 60), (200, 60), (330, 70), (80, 200), (220, 210), (340, 230)]
    d = 30
    item = LabelledImage(
        name="disks.png", data=_disks(d, centres),
        boxes=np.array([[x - d / 2, y - d / 2, x + d / 2, y + d / 2] for x, y in centres], float),
        classes=("crystal",) * len(centres), ecd_px=np.full(len(centres), d * label_scale))

    report = evaluate(make_detector("classical"), [item], set_name="disks", iou_threshold=0.5, score_classes=False)

    assert report.recall == 1.0
    assert report.size_ratio == pytest.approx(1.0 / label_scale, rel=0.06)


def test_recall_by_size_bins_the_labels_and_leaves_empty_bins_out():
    ecd = np.array([10, 12, 30, 35, 38, 200.0])
    found = np.array([True, False, True, True, False, True])
    rows = recall_by_size(ecd, found)
    assert [(lo, hi, n) for lo, hi, n, _ in rows] == [(0, 15, 2), (25, 40, 3), (120, float("inf"), 1)]
    assert [rec for *_, rec in rows] == pytest.approx([0.5, 2 / 3, 1.0])
    assert recall_by_size(np.zeros(0), np.zeros(0, bool)) == ()


def test_a_label_with_nothing_in_the_image_lowers_the_recall_of_its_size_bin_only():
    """Six 30 px disks are all found; a 90 px label over empty background is a miss in the 80-120 px bin."""
    centres = [(60, 60), (200, 60), (330, 70), (80, 200), (220, 210), (340, 230)]
    d = 30
    boxes = [[x - d / 2, y - d / 2, x + d / 2, y + d / 2] for x, y in centres] + [[150, 120, 240, 200]]
    item = LabelledImage(name="disks.png", data=_disks(d, centres), boxes=np.array(boxes, float),
                         classes=("crystal",) * 7, ecd_px=np.array([d] * 6 + [90.0]))

    report = evaluate(make_detector("classical"), [item], set_name="disks", iou_threshold=0.5, score_classes=False)

    assert report.recall == pytest.approx(6 / 7)
    assert report.recall_by_size == ((25.0, 40.0, 6, 1.0), (80.0, 120.0, 1, 0.0))
    assert format_size_row(report) == "  recall by labelled ECD: 25-40 px 1.00 (6) | 80-120 px 0.00 (1)"


def test_the_rendered_sets_carry_the_labels_of_the_blur_rule_asked_for():
    """The rule decides how blurred a counted crystal may be rendered and which blurred ones are labelled counted;
    the set must carry exactly the rule's counted objects, not the fixed rule's."""
    seeds = range(700_000, 700_006)
    fixed = list(synthetic_set(len(seeds), seed=seeds[0], difficulty="hard", size=(320, 256)))
    large = list(synthetic_set(len(seeds), seed=seeds[0], difficulty="hard", size=(320, 256), blur_rule="large"))
    for seed, f, g in zip(seeds, fixed, large):
        _, truth = render_image(seed, size=(320, 256), difficulty="hard", blur_rule="large")
        counted = [o for o in truth["objects"] if o["counted"]]
        assert g.boxes.tolist() == [list(map(float, o["box"])) for o in counted]
        assert g.classes == tuple(o["class"] for o in counted)
    assert sum(len(f.boxes) for f in fixed) != sum(len(g.boxes) for g in large)


def test_the_rendered_sets_are_drawn_with_the_looks_asked_for():
    """--looks translucent renders other pixels for the same seeds (the same scenes drawn another way), labelled
    with exactly the renderer's counted objects; the set name says which looks were used."""
    seeds = range(700_010, 700_013)
    default = list(synthetic_set(len(seeds), seed=seeds[0], difficulty="medium", size=(320, 256)))
    transl = list(synthetic_set(len(seeds), seed=seeds[0], difficulty="medium", size=(320, 256), looks="translucent"))
    for seed, d, t in zip(seeds, default, transl):
        _, truth = render_image(seed, size=(320, 256), difficulty="medium", looks="translucent")
        assert t.boxes.tolist() == [list(map(float, o["box"])) for o in truth["objects"] if o["counted"]]
        assert t.data != d.data
    with pytest.raises(ValueError, match="looks"):
        next(synthetic_set(1, seed=1, difficulty="easy", size=(64, 64), looks="glossy"))


def test_the_command_line_names_the_looks_in_the_set(capsys):
    assert main(["--detector", "classical", "--synthetic", "1", "--difficulty", "easy", "--size", "160x128",
                 "--looks", "translucent", "--real", "/nonexistent"]) == 0
    assert "synthetic-easy-translucent " in capsys.readouterr().out


def _model_detector():
    return load_onnx_detector_from_bytes(conv_head_model(), name="tiny", version="0")


def test_with_conf_changes_only_the_score_thresholds_of_the_model():
    det = _model_detector()
    assert with_conf(det, None) is det
    raised = with_conf(det, 0.4)
    assert (raised.options.conf_threshold, raised.options.candidate_threshold) == (0.4, det.options.candidate_threshold)
    lowered = with_conf(det, 0.02)
    assert (lowered.options.conf_threshold, lowered.options.candidate_threshold) == (0.02, 0.02)
    assert raised.model is det.model and det.options.conf_threshold == 0.25

    hybrid = with_conf(HybridDetector(det), 0.4)
    assert isinstance(hybrid, HybridDetector) and hybrid.model.options.conf_threshold == 0.4


@pytest.mark.parametrize("detector, conf, message", [
    (make_detector("classical"), 0.3, "a model's detector"),
    (None, 1.0, "conf_threshold must be in"),
])
def test_with_conf_refuses_a_detector_without_a_model_and_a_threshold_out_of_range(detector, conf, message):
    with pytest.raises(ValueError, match=message):
        with_conf(detector or _model_detector(), conf)


def test_the_command_line_refuses_conf_for_the_classical_detector(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--detector", "classical", "--conf", "0.3", "--synthetic", "0"])
    assert e.value.code == 2
    assert "--conf applies to a model's detector" in capsys.readouterr().err


def test_the_per_image_tallies_add_up_to_the_pooled_scores():
    items = list(synthetic_set(3, seed=700_020, difficulty="easy", size=(320, 256)))
    report = evaluate(make_detector("classical"), items, set_name="s", iou_threshold=0.5)
    tallies = np.array(report.per_image)
    assert tallies.shape == (3, 5)
    tp, fp, fn, n_pred, n_true = tallies.sum(axis=0)
    assert tp + fn == n_true == sum(len(i.boxes) for i in items) and tp + fp == n_pred
    assert report.precision == pytest.approx(tp / (tp + fp)) and report.recall == pytest.approx(tp / (tp + fn))
    assert list(tallies[:, 4]) == [len(i.boxes) for i in items]


def test_compare_refuses_reports_of_other_images():
    items = list(synthetic_set(2, seed=700_030, difficulty="easy", size=(160, 128)))
    det = make_detector("classical")
    one = evaluate(det, items, set_name="a", iou_threshold=0.5)
    with pytest.raises(ValueError, match="not the same images"):
        compare(one, evaluate(det, items[:1], set_name="a", iou_threshold=0.5), draws=10)
    with pytest.raises(ValueError, match="not the same images"):
        compare(one, evaluate(det, items, set_name="b", iou_threshold=0.5), draws=10)


def test_the_command_line_compares_each_row_with_the_first(capsys):
    """The same detector twice: one comparison line, a difference of exactly zero."""
    assert main(["--detector", "classical", "--detector", "classical", "--synthetic", "2", "--difficulty", "easy",
                 "--size", "160x128", "--real", "/nonexistent", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "paired bootstrap" in line]
    assert len(lines) == 1
    assert "F1 +0.000 [+0.000, +0.000], count acc +0.000 [+0.000, +0.000]" in lines[0]
    assert "over 2 images, 50 draws" in lines[0]
    assert lines[0].startswith("  synthetic-easy: classical - classical: ")
    with pytest.raises(SystemExit):
        main(["--detector", "classical", "--synthetic", "0", "--bootstrap", "-1"])
    assert "--bootstrap needs" in capsys.readouterr().err


def test_each_model_detector_runs_once_per_model_and_classical_once(tmp_path, capsys):
    paths = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "model.onnx")
        paths[-1].write_bytes(conv_head_model(imgsz=256, seed=len(paths)))
    assert main(["--detector", "classical", "--detector", "onnx", "--model", str(paths[0]), "--model", str(paths[1]),
                 "--synthetic", "1", "--difficulty", "easy", "--size", "160x128", "--real", "/nonexistent"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("synthetic-easy")]
    assert len(rows) == 3
    assert "classical" in rows[0] and "onnx:first" in rows[1] and "onnx:second" in rows[2]


def test_a_result_as_truth_keeps_its_counted_objects_border_ones_included():
    from analysis.pipeline import AnalysisOptions, analyze_bytes

    centres = [(60, 60), (200, 60), (330, 70), (80, 200), (14, 150)]  # the last touches the left border
    data = _disks(30, centres)
    result = analyze_bytes(data, name="disks.png", detector=make_detector("classical"), options=AnalysisOptions())
    assert len(result.particles) == 5 and sum(p.on_border for p in result.particles) == 1
    excluded = dataclasses.replace(result.particles[0], excluded_reason="dust")
    renamed = dataclasses.replace(result.particles[1], class_name="mimic")
    edited = dataclasses.replace(result, particles=(excluded, renamed) + result.particles[2:])
    options = AnalysisOptions(scale=0.5)
    item = labelled_from_result("disks.png", data, edited, options=options)
    kept = result.particles[2:]
    assert [tuple(b) for b in item.boxes] == [(p.x_min, p.y_min, p.x_max, p.y_max) for p in kept]
    assert item.classes == tuple(p.class_name for p in kept) and list(item.ecd_px) == [p.ecd_px for p in kept]
    assert item.data is data and item.read() is data and item.options is options and item.load is None
    reads = []
    lazy = labelled_from_result("disks.png", lambda: reads.append(1) or data, edited)
    assert lazy.data == b"" and reads == []  # nothing read until the image is analysed
    report = evaluate(make_detector("classical"), [lazy], set_name="lazy", iou_threshold=0.5, score_classes=False)
    assert reads == [1] and report.recall == 1.0 and report.n_images == 1


class _Sizes:
    """A detector that finds nothing and notes the size of every image it is given."""

    label = "sizes"

    def __init__(self):
        self.seen = []

    def detect(self, image):
        self.seen.append(image.shape)
        return []


def test_an_image_with_its_own_options_is_analysed_with_them():
    from analysis.pipeline import AnalysisOptions

    data = _disks(30, [(60, 60), (200, 60)])
    plain = LabelledImage(name="a.png", data=data, boxes=np.zeros((0, 4)), classes=(), ecd_px=np.zeros(0))
    halved = dataclasses.replace(plain, name="b.png", options=AnalysisOptions(scale=0.5, upscale_small=False))
    detector = _Sizes()
    evaluate(detector, [plain, halved], set_name="sizes", iou_threshold=0.5,
             options=AnalysisOptions(upscale_small=False))
    (h, w), (h2, w2) = detector.seen
    assert (h2, w2) == (round(h * 0.5), round(w * 0.5))
