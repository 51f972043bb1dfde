"""Models screen and ui.models: trusted keys, import with checks + acceptance test, activation, rollback, and the
Analyze screen using the active model. Packages are built with detection.package and a test key; the golden set is
replaced by one small rendered image (ui.models.golden_set) so the acceptance test stays fast."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

import detection.package as pkg
import ui.models as models
import ui.resources
from analysis.errors import ModelPackageError
from vault import VaultLockedError
from analysis.pipeline import make_detector
from detection.evaluate import synthetic_set
from tests.app.conftest import events, open_vault, pick_sample
from tests.detection.onnx_fixtures import band_model
from tests.detection.test_package import FIELDS, STRANGER, TRUSTED

# 256 px: the 64 px default is smaller than the tiler's overlap. Two counted classes only: a third class ('mimic')
# loses its exclusion in analysis.exclude.apply_exclusions and then breaks the summary (reported, not ours).
NAMES = ("crystal", "agglomerate")
MODEL = band_model(imgsz=(256, 256), names=NAMES)
LABEL = "onnx:crystal-test 1.2.0"
#: What the app runs when no researcher model is active: the shipped model, or classical without one.
SHIPPED_LABEL = make_detector("auto").label


def package(version: str = "1.2.0", *, key=TRUSTED) -> bytes:
    return pkg.build_package({**FIELDS, "version": version}, MODEL, key=key)


@pytest.fixture(autouse=True)
def _trusted_and_golden(tmp_path, monkeypatch):
    """The test key is the shipped trusted key; the golden set is one small rendered image."""
    folder = tmp_path / "trusted_keys"
    folder.mkdir()
    (folder / "test.pub").write_bytes(pkg.public_key_pem(pkg.public_key_of(TRUSTED)))
    monkeypatch.setattr(models, "TRUSTED_KEYS_DIR", folder)
    golden = list(synthetic_set(1, seed=900_001, difficulty="medium", size=(320, 256)))
    monkeypatch.setattr(models, "golden_set", lambda: golden)


def models_page(at):
    at.switch_page("screens/models.py")
    at = at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Models"]
    return at


def upload_package(at, data: bytes, name: str = "crystal-test-1.2.0.cqcpkg"):
    at.file_uploader(key="package_upload").set_value((name, data, "application/octet-stream"))
    at = at.run()
    at.button(key="import_package").click()
    at = at.run()
    assert not at.exception
    return at


def stored(vault_path) -> list[str]:
    with open_vault(vault_path) as v:
        return [i.name for i in v.list("models/")]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


# ------------------------------------------------------------------------------------------------ import + activate
def test_good_package_imports_activates_and_labels_analyses(samples, app, vault_path):
    at = upload_package(models_page(app), package())
    assert not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["candidate", "current"]
    assert list(table["detector"]) == [LABEL, SHIPPED_LABEL]
    assert {"count accuracy", "F1", "D50 error", models.SIZE_KEY, "s / image"} <= set(table.columns)
    assert stored(vault_path) == ["models/packages/crystal-test-1.2.0.cqcpkg"]
    imports = [e for e in events(vault_path) if e.event == "model_import"]
    assert len(imports) == 1 and imports[0].details["version"] == "1.2.0" and imports[0].user == "alice"

    at.button(key="activate_imported").click()
    at = at.run()
    assert not at.exception and not at.error
    assert "crystal-test 1.2.0 is now the active model" in texts(at.success)
    card = texts(at.markdown)
    assert "crystal-test 1.2.0" in card and "Dr. Ada Researcher" in card and "crystal, agglomerate" in card
    assert pkg.format_fingerprint(pkg.private_key_id(TRUSTED)) in card
    with open_vault(vault_path) as v:
        assert json.loads(v.get(models.ACTIVE_ENTRY))["active"] == "models/packages/crystal-test-1.2.0.cqcpkg"
    acts = [e for e in events(vault_path) if e.event == "model_activation"]
    assert [a.details["action"] for a in acts] == ["activate"]

    at.switch_page("screens/analyze.py")
    at = pick_sample(at.run(), "good.png")
    assert not at.exception and not at.error
    assert any(f"detector: {LABEL}" in c.value for c in at.caption)


def test_rollback_restores_the_previous_model_then_the_default(samples, app, vault_path):
    with open_vault(vault_path) as v:
        for version in ("1.2.0", "1.3.0"):
            data = package(version)
            vp = models.check_package(v, data)
            entry = models.store_package(v, data, vp, {"rows": [], "worse": []}, user="test")
            models.activate(v, entry.entry, user="test")
    at = models_page(app)
    assert "crystal-test 1.3.0" in texts(at.markdown)
    at.button(key="rollback").click()
    at = at.run()
    assert "Rolled back to crystal-test 1.2.0" in texts(at.success)
    assert "**crystal-test 1.2.0**" in texts(at.markdown)
    at.button(key="rollback").click()
    at = at.run()
    assert "Rolled back to the shipped default" in texts(at.success)
    assert "No researcher model is active" in texts(at.info)
    assert "rollback" not in [b.key for b in at.button]
    assert len(stored(vault_path)) == 3  # both versions stay, plus active.json
    details = [e.details for e in events(vault_path) if e.event == "model_activation"]
    assert [(d["action"], d["entry"]) for d in details][-2:] == [
        ("rollback", "models/packages/crystal-test-1.2.0.cqcpkg"), ("rollback", None)]

    at.switch_page("screens/analyze.py")
    at = pick_sample(at.run(), "good.png")
    assert any(f"detector: {SHIPPED_LABEL}" in c.value for c in at.caption)


def test_switching_to_an_older_accepted_version_is_allowed(app, vault_path):
    with open_vault(vault_path) as v:
        for version in ("1.2.0", "1.3.0"):
            data = package(version)
            models.store_package(v, data, models.check_package(v, data), {}, user="test")
    at = models_page(app)
    at.selectbox(key="switch_choice").select("models/packages/crystal-test-1.2.0.cqcpkg")
    at.button(key="activate_selected").click()
    at = at.run()
    assert "crystal-test 1.2.0 is now the active model" in texts(at.success)


# ------------------------------------------------------------------------------------------------ refusals
def _nothing_stored(at, vault_path, match: str) -> None:
    assert match in texts(at.error)
    assert stored(vault_path) == []
    assert not [e for e in events(vault_path) if e.event in ("model_import", "model_activation")]
    assert "activate_imported" not in [b.key for b in at.button]


def test_untrusted_key_is_refused_and_nothing_is_stored(app, vault_path):
    at = upload_package(models_page(app), package(key=STRANGER))
    _nothing_stored(at, vault_path, pkg.format_fingerprint(pkg.private_key_id(STRANGER)))


def test_tampered_package_is_refused_and_nothing_is_stored(app, vault_path):
    data = bytearray(package())
    data[len(data) // 2] ^= 0x01  # inside the model: hash check
    at = upload_package(models_page(app), bytes(data))
    _nothing_stored(at, vault_path, "does not match the sha256")


def test_same_version_again_is_refused(app, vault_path):
    with open_vault(vault_path) as v:
        data = package()
        models.store_package(v, data, models.check_package(v, data), {}, user="test")
    at = upload_package(models_page(app), package())
    assert "the same version as the accepted version 1.2.0" in texts(at.error)
    assert stored(vault_path) == ["models/packages/crystal-test-1.2.0.cqcpkg"]


def test_a_model_the_pipeline_cannot_run_fails_the_acceptance_test(app, vault_path):
    small = pkg.build_package({**FIELDS}, band_model(names=NAMES), key=TRUSTED)  # 64 px input: below the tile overlap
    at = upload_package(models_page(app), small)
    _nothing_stored(at, vault_path, "cannot analyse the acceptance images")


# ------------------------------------------------------------------------------------------------ trusted keys
def test_adding_a_trusted_key_shows_its_fingerprint_and_needs_confirmation(app, vault_path):
    pem = pkg.public_key_pem(pkg.public_key_of(STRANGER))
    shown = pkg.format_fingerprint(pkg.private_key_id(STRANGER))
    at = models_page(app)
    at.file_uploader(key="key_upload").set_value(("ada.pub", pem, "application/octet-stream"))
    at = at.run()
    assert shown in [c.value for c in at.code]
    assert at.button(key="add_key").disabled
    at.text_input(key="key_label").input("Dr. Ada Researcher")
    at.checkbox(key="key_confirm").check()
    at = at.run()
    assert not at.button(key="add_key").disabled
    at.button(key="add_key").click()
    at = at.run()
    assert f"Key {shown} is now trusted." in texts(at.success)
    assert "This key is already trusted." in texts(at.info)
    assert shown in list(at.dataframe[-1].value["fingerprint"])
    added = [e for e in events(vault_path) if e.event == "trusted_key_added"]
    assert len(added) == 1 and added[0].details["fingerprint"] == pkg.private_key_id(STRANGER)
    with open_vault(vault_path) as v:
        assert pkg.private_key_id(STRANGER) in models.trusted_keys(v)
        assert models.check_package(v, package(key=STRANGER)).key_id == pkg.private_key_id(STRANGER)
        assert [k.source for k in models.list_trusted_keys(v)] == ["shipped", "vault"]
        with pytest.raises(ModelPackageError, match="already trusted"):
            models.add_trusted_key(v, pem, label="again", user="test")


def test_a_file_that_is_not_a_public_key_is_refused(app, vault_path):
    at = models_page(app)
    at.file_uploader(key="key_upload").set_value(("x.pub", b"not a key", "application/octet-stream"))
    at = at.run()
    assert at.error and not at.code
    assert stored(vault_path) == []


def test_an_altered_trusted_key_list_is_refused(vault_path, recovery_key):
    with open_vault(vault_path) as v:
        pem = pkg.public_key_pem(pkg.public_key_of(STRANGER))
        models.add_trusted_key(v, pem, label="Ada", user="test")
        data = json.loads(v.get(models.TRUSTED_KEYS_ENTRY))
        data["keys"][0]["fingerprint"] = pkg.private_key_id(TRUSTED)
        v.put(models.TRUSTED_KEYS_ENTRY, json.dumps(data).encode(), kind="settings")
        with pytest.raises(ModelPackageError, match="does not match its fingerprint"):
            models.trusted_keys(v)


# ------------------------------------------------------------------------------------------------ stored model checks
def test_a_stored_package_that_no_longer_matches_is_refused_on_load(vault_path, recovery_key):
    with open_vault(vault_path) as v:
        data = package()
        entry = models.store_package(v, data, models.check_package(v, data), {}, user="test")
        assert models.load_model_bytes(v, entry) == MODEL
        other = pkg.build_package({**FIELDS}, band_model(imgsz=(320, 320), names=NAMES), key=TRUSTED)
        v.put(entry.entry, other, kind="model", meta=dict(v.info(entry.entry).meta))
        with pytest.raises(ModelPackageError, match="does not match its manifest"):
            models.load_model_bytes(v, entry)


def test_activation_errors(vault_path, recovery_key):
    with open_vault(vault_path) as v:
        with pytest.raises(ModelPackageError, match="nothing to roll back"):
            models.roll_back(v, user="test")
        v.put("models/packages/x.cqcpkg", b"x", kind="settings")
        with pytest.raises(ModelPackageError, match="not an accepted model package"):
            models.activate(v, "models/packages/x.cqcpkg", user="test")
        v.put(models.ACTIVE_ENTRY, b"[1, 2]", kind="settings")
        with pytest.raises(ModelPackageError, match="unreadable"):
            models.active_model(v)


class _Blind:
    """A detector that finds nothing."""

    label = "blind"

    def detect(self, image):
        return []


def test_acceptance_flags_a_worse_candidate():

    golden = models.golden_set()
    classical = make_detector("classical")
    report = models.acceptance_test(_Blind(), classical, items=golden)
    assert [r["detector"] for r in report["rows"]] == ["blind", "classical"]
    assert report["rows"][0]["count accuracy"] == 0.0 and report["rows"][0]["F1"] == 0.0
    assert report["rows"][0]["D50 error"] is None  # nothing found: no D50 (NaN stored as None)
    assert report["rows"][1]["F1"] > 0.2
    assert report["worse"] == ["count accuracy", "F1"]
    same = models.acceptance_test(classical, classical, items=golden)
    assert same["worse"] == [] and same["rows"][0]["F1"] == same["rows"][1]["F1"]


class _Bloated:
    """The classical detector with every outline grown by ``grow`` px: same objects, measured too large."""

    label = "bloated"

    def __init__(self, grow: int):
        self._inner, self._grow = make_detector("classical"), grow

    def detect(self, image):
        h, w = image.shape
        out = []
        for d in self._inner.detect(image):
            x0, y0 = max(0, d.x_min - self._grow), max(0, d.y_min - self._grow)
            x1, y1 = min(w, d.x_max + self._grow), min(h, d.y_max + self._grow)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            mask[d.y_min - y0:d.y_max - y0, d.x_min - x0:d.x_max - x0] = d.mask
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self._grow + 1,) * 2)
            out.append(dataclasses.replace(d, x_min=x0, y_min=y0, x_max=x1, y_max=y1,
                                           mask=cv2.dilate(mask, k).astype(bool)))
        return out


def test_acceptance_shows_sizing_and_flags_a_candidate_that_measures_crystals_too_large():
    golden = models.golden_set()
    classical = make_detector("classical")
    report = models.acceptance_test(_Bloated(4), classical, items=golden)
    cand, cur = (r[models.SIZE_KEY] for r in report["rows"])
    assert 0.95 < cur < 1.1  # the classical outlines measure the rendered crystals about right
    assert abs(cand - 1) > abs(cur - 1) + models.SIZE_WORSE_BY
    assert "sizing" in report["worse"]
    assert "sizing" not in models.acceptance_test(classical, classical, items=golden)["worse"]
    blind = models.acceptance_test(_Blind(), classical, items=golden)
    assert blind["rows"][0][models.SIZE_KEY] is None and "sizing" not in blind["worse"]


def test_analyze_refuses_an_active_model_whose_stored_package_was_swapped(samples, app, vault_path):
    with open_vault(vault_path) as v:
        data = package()
        entry = models.store_package(v, data, models.check_package(v, data), {}, user="test")
        models.activate(v, entry.entry, user="test")
        other = pkg.build_package({**FIELDS}, band_model(imgsz=(320, 320), names=NAMES), key=TRUSTED)
        v.put(entry.entry, other, kind="model", meta=dict(v.info(entry.entry).meta))
    at = pick_sample(app, "good.png")
    assert not at.exception
    assert "does not match its manifest" in texts(at.error)
    with open_vault(vault_path) as v:
        assert v.list("analyses/") == [] and v.list("images/") == []


def test_ui_models_does_not_import_streamlit():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(models.__file__).read_text(encoding="utf-8"))
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "streamlit" not in roots and "vault" in roots


def test_command_line_intake_checks_stores_activates_and_rolls_back(recovery_key, vault_path, tmp_path, monkeypatch,
                                                                    capsys):
    from tests.app.conftest import PASSPHRASE
    from ui.models_cli import main as models_cli

    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", PASSPHRASE)
    good = tmp_path / "good.cqcpkg"
    good.write_bytes(package("1.2.0"))
    untrusted = tmp_path / "untrusted.cqcpkg"
    untrusted.write_bytes(package("1.4.0", key=STRANGER))
    base = ["--path", str(vault_path), "--user", "lead"]

    assert models_cli(base + ["import", str(untrusted)]) == 1
    assert "refused" in capsys.readouterr().err
    assert stored(vault_path) == []

    assert models_cli(base + ["import", str(good), "--activate"]) == 0
    out = capsys.readouterr().out
    assert "model=candidate" in out and "activated crystal-test 1.2.0" in out
    assert "this plant's reviewed analyses: 0 images" in out and "(no comparison: at least 5" in out
    with open_vault(vault_path) as vault:
        assert models.active_model(vault).version == "1.2.0"
    assert models_cli(base + ["import", str(good)]) == 1  # same version again: no rollback attack
    assert models_cli(base + ["rollback"]) == 0
    with open_vault(vault_path) as vault:
        assert models.active_model(vault) is None
    assert [e.event for e in events(vault_path)].count("model_activation") == 2
    with open_vault(vault_path) as vault:
        _corrected_analyses(vault, models.PLANT_MIN_IMAGES)
    newer = tmp_path / "newer.cqcpkg"
    newer.write_bytes(package("1.3.0"))
    assert models_cli(base + ["import", str(newer)]) == 0
    out = capsys.readouterr().out
    assert "this plant's reviewed analyses: 5 images; labels from classical (5)" in out
    assert out.count("model=candidate") == 2 and "Candidate minus current model: F1" in out
    assert models_cli(base + ["compare", "models/packages/crystal-test-1.2.0.cqcpkg"]) == 0
    out = capsys.readouterr().out
    assert "this plant's reviewed analyses: 5 images" in out and "Candidate minus current model: F1" in out
    assert [e.event for e in events(vault_path)].count("model_compared") == 1
    assert models_cli(base + ["compare", "models/packages/nothing.cqcpkg"]) == 1
    assert "not an accepted model package" in capsys.readouterr().err


def test_command_line_wrong_passphrase_is_a_usage_error(recovery_key, vault_path, monkeypatch, capsys):
    from ui.models_cli import main as models_cli

    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", "not the passphrase at all")
    assert models_cli(["--path", str(vault_path), "list"]) == 2
    assert "error" in capsys.readouterr().err


def test_removing_a_trusted_key_stops_imports_and_is_audited(app, vault_path):
    stranger = pkg.private_key_id(STRANGER)
    with open_vault(vault_path) as v:
        models.add_trusted_key(v, pkg.public_key_pem(pkg.public_key_of(STRANGER)), label="Ada", user="test")
    at = models_page(app)
    at.selectbox(key="key_remove_choice").select(stranger)
    at.button(key="remove_key").click()
    at = at.run()
    assert not at.exception and not at.error
    assert f"Key {pkg.format_fingerprint(stranger)} is no longer trusted." in texts(at.success)
    removed = [e for e in events(vault_path) if e.event == "trusted_key_removed"]
    assert len(removed) == 1 and removed[0].details["fingerprint"] == stranger and removed[0].user == "alice"
    with open_vault(vault_path) as v:
        assert stranger not in models.trusted_keys(v)
        with pytest.raises(ModelPackageError):
            models.check_package(v, package(key=STRANGER))
        with pytest.raises(ModelPackageError, match="not in this vault"):
            models.remove_trusted_key(v, stranger, user="test")
        with pytest.raises(ModelPackageError, match="shipped"):
            models.remove_trusted_key(v, pkg.private_key_id(TRUSTED), user="test")


def test_the_active_models_key_cannot_be_removed(vault_path, recovery_key):
    with open_vault(vault_path) as v:
        models.add_trusted_key(v, pkg.public_key_pem(pkg.public_key_of(STRANGER)), label="Ada", user="test")
        data = package(key=STRANGER)
        vp = models.check_package(v, data)
        entry = models.store_package(v, data, vp, {"rows": [], "worse": []}, user="test")
        models.activate(v, entry.entry, user="test")
        with pytest.raises(ModelPackageError, match="active model"):
            models.remove_trusted_key(v, pkg.private_key_id(STRANGER), user="test")
        assert pkg.private_key_id(STRANGER) in models.trusted_keys(v)


def test_models_screen_reports_a_shipped_package_that_fails_its_check(app, monkeypatch):
    def refused(kind="auto", **_):
        raise ModelPackageError("weights/crystal-yolo11n.cqcpkg cannot be used: its sha256 does not match.")

    monkeypatch.setattr(ui.resources, "make_detector", refused)
    ui.resources.get_detector.clear()
    try:
        at = models_page(app)
        assert "shipped model cannot be used" in texts(at.error) and "sha256" in texts(at.error)
    finally:
        ui.resources.get_detector.clear()


# ------------------------------------------------------------------------------------------------ plant images
_made = iter(range(1, 10_000))


def _corrected_analyses(v, n: int, *, profile: str = "") -> list[str]:
    """``n`` classical analyses of rectangle images (3-6 crystals, each image its own file), each corrected once on
    the Review screen (its first particle deleted). Returns their ids."""
    from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
    from tests.app.conftest import crystal_image, png_bytes
    from ui.analyses import save_analysis
    from ui.corrections import delete_particles

    ids = []
    for _ in range(n):
        k = next(_made)
        image = crystal_image(3 + k % 4)
        image[0, 0] = k % 256  # one corner pixel: another file, another stored original
        data = png_bytes(image)
        result = analyze_bytes(data, name=f"lot{k}.png", detector=ClassicalDetector(), options=AnalysisOptions())
        info = save_analysis(v, data, result, source="upload", user="tech", profile=profile)
        delete_particles(v, info.analysis_id, [result.particles[0].particle_id], user="tech")
        ids.append(info.analysis_id)
    return ids


def test_plant_set_takes_valid_corrected_analyses_with_the_corrected_truth(vault_path, recovery_key):
    from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
    from tests.app.conftest import crystal_image, png_bytes
    from ui.analyses import invalidate_analysis, load_analysis, save_analysis, set_checked
    from ui.settings import DEFAULTS, CalibrationProfile, add_profile, save_settings

    with open_vault(vault_path) as v:
        assert models.plant_set(v).items == ()  # an empty vault has none
        save_settings(v, add_profile(DEFAULTS, CalibrationProfile("BX53 40x", 0.1625, analysis_scale=0.5)),
                      user="lead")
        corrected = _corrected_analyses(v, 2)
        scaled = _corrected_analyses(v, 1, profile="BX53 40x")
        data = png_bytes(crystal_image(5))
        save_analysis(v, data, analyze_bytes(data, name="plain.png", detector=ClassicalDetector(),
                                             options=AnalysisOptions()), source="upload", user="tech")
        data = png_bytes(crystal_image(6))
        right = save_analysis(v, data, analyze_bytes(data, name="right.png", detector=ClassicalDetector(),
                                                     options=AnalysisOptions()), source="upload", user="tech")
        set_checked(v, right.analysis_id, checked=True, user="tech")  # reviewed, found right: a label as it is
        invalid = _corrected_analyses(v, 1)[0]
        invalidate_analysis(v, invalid, reason="wrong slide", user="lead")
        gone = _corrected_analyses(v, 1)[0]
        v.delete(f"images/{load_analysis(v, gone).info.image_sha256}")
        plant = models.plant_set(v)
        # the unreviewed and the invalid analyses are not labels; the one without its original is left out
        labels = corrected + scaled + [right.analysis_id]
        stored = {load_analysis(v, i).info.image_name: load_analysis(v, i).result for i in labels}
        assert sorted(i.name for i in plant.items) == sorted(stored)
        assert plant.left_out == {"original deleted": 1} and plant.analysed_by == {"classical": 4}
        for item in plant.items:
            counted = [p for p in stored[item.name].particles if p.excluded_reason is None]
            # the corrected results (one particle deleted) or the checked one as it is
            assert len(counted) == (6 if item.name == "right.png" else 2 + int(item.name[3:-4]) % 4)
            assert [tuple(b) for b in item.boxes] == [(p.x_min, p.y_min, p.x_max, p.y_max) for p in counted]
        assert {i.name: i.options.scale for i in plant.items}[load_analysis(v, scaled[0]).info.image_name] == 0.5
        assert sorted(i.options.scale for i in plant.items) == [0.5, 1.0, 1.0, 1.0]
        assert [i.name for i in models.plant_set(v, limit=2).items] == [i.name for i in plant.items[:2]]
        # a removed profile: its analysis scale is unknown, so its analysis is left out
        save_settings(v, DEFAULTS, user="lead")
        assert models.plant_set(v).left_out == {"original deleted": 1, "profile removed": 1}
        # an image over a lowered size limit is left out before anything is decoded
        data = png_bytes(np.tile(crystal_image(6), (2, 2)))  # 1280 x 1024 = 1.3 MP
        big = save_analysis(v, data, analyze_bytes(data, name="big.png", detector=ClassicalDetector(),
                                                   options=AnalysisOptions()), source="upload", user="tech")
        set_checked(v, big.analysis_id, checked=True, user="tech")
        assert "big.png" in [i.name for i in models.plant_set(v).items]
        save_settings(v, dataclasses.replace(DEFAULTS, max_megapixels=1.0), user="lead")
        smaller = models.plant_set(v)
        assert "big.png" not in [i.name for i in smaller.items] and len(smaller.items) == 3
        assert smaller.left_out == {"original deleted": 1, "profile removed": 1, "over the size limits": 1}


def test_acceptance_compares_the_models_on_plant_images_with_a_paired_interval(vault_path, recovery_key):
    golden = models.golden_set()
    classical = make_detector("classical")
    with open_vault(vault_path) as v:
        _corrected_analyses(v, models.PLANT_MIN_IMAGES - 1)
        few = models.plant_set(v)
        report = models.acceptance_test(classical, classical, items=golden, plant=few)
        assert report["plant"] == {"images": models.PLANT_MIN_IMAGES - 1, "analysed_by": {"classical": 4},
                                   "left_out": {}}  # too few to compare: no rows, nothing flagged
        assert report["worse"] == [] and models.plant_difference_text(report["plant"]) == ""
        _corrected_analyses(v, 2)
        plant = models.plant_set(v)
        assert len(plant.items) == models.PLANT_MIN_IMAGES + 1
        same = models.acceptance_test(classical, classical, items=golden, plant=plant)
        blind = models.acceptance_test(_Blind(), classical, items=golden, plant=plant)
    # the originals are read from the vault when analysed, not held: locked, the set can no longer be analysed
    with pytest.raises(VaultLockedError):
        plant.items[0].read()
    rows = same["plant"]["rows"]
    assert [r["model"] for r in rows] == ["candidate", "current"] and rows[0]["images"] == len(plant.items)
    # the truth is classical's own result with one object deleted per image: recall 1, precision below 1
    assert 0.7 < rows[0]["F1"] == rows[1]["F1"] < 1.0
    assert same["plant"]["difference"]["F1"] == 0.0 and same["plant"]["difference"]["F1 interval"] == [0.0, 0.0]
    assert models.PLANT_WORSE not in same["worse"]
    d = blind["plant"]["difference"]
    assert blind["plant"]["rows"][0]["F1"] == 0.0 and d["F1"] < -0.7 and d["F1 interval"][1] < 0
    assert d["count accuracy interval"][1] < 0 and d["draws"] == models.PLANT_BOOTSTRAP_DRAWS
    assert models.PLANT_WORSE in blind["worse"]
    text = models.plant_difference_text(blind["plant"])
    assert f"F1 {d['F1']:+.3f} [{d['F1 interval'][0]:+.3f}, {d['F1 interval'][1]:+.3f}]" in text
    assert models.plant_summary(blind["plant"]) == f"{len(plant.items)} images; labels from classical (6)"
    json.dumps(blind)  # stored in the vault with the package: JSON-safe


def test_models_screen_shows_the_plant_comparison(app, vault_path):
    with open_vault(vault_path) as v:
        _corrected_analyses(v, models.PLANT_MIN_IMAGES)
    before = models_page(app)
    assert f"once there are {models.PLANT_MIN_IMAGES}: there are {models.PLANT_MIN_IMAGES} now" in texts(before.caption)
    at = upload_package(before, package())
    shown = texts(at.markdown) + texts(at.caption)
    assert f"This plant's reviewed analyses ({models.PLANT_MIN_IMAGES} images; labels from classical" in shown
    assert "Candidate minus current model: F1" in shown and "paired bootstrap" in shown
    assert len(at.dataframe) >= 2  # golden rows and plant rows
    with open_vault(vault_path) as v:
        entry = models.installed_models(v)[0]
        assert entry.acceptance["plant"]["images"] == models.PLANT_MIN_IMAGES
        assert [r["model"] for r in entry.acceptance["plant"]["rows"]] == ["candidate", "current"]


@pytest.mark.parametrize("f1, f1_high, count, count_high, flagged", [
    (-0.20, -0.10, 0.0, 0.02, True),     # F1 clearly lower
    (0.0, 0.01, -0.05, -0.01, True),     # count accuracy clearly lower
    (-0.004, -0.001, 0.0, 0.0, False),   # consistently lower, but by less than PLANT_MIN_DROP
    (-0.05, 0.01, -0.05, 0.02, False),   # lower, but within the luck of the images
    (0.03, 0.05, 0.02, 0.04, False),     # better
])
def test_the_plant_check_flags_a_drop_beyond_the_noise_and_large_enough(f1, f1_high, count, count_high, flagged):
    from detection.metrics import PairedDifference

    d = PairedDifference(n_images=20, draws=2000, confidence=0.95, f1=f1, f1_low=f1 - 0.05, f1_high=f1_high,
                         count_accuracy=count, count_accuracy_low=count - 0.05, count_accuracy_high=count_high)
    assert models.plant_worse(d) is flagged


def test_an_accepted_version_is_compared_again_with_the_model_in_use_on_todays_reviewed_images(app, vault_path):
    with open_vault(vault_path) as v:
        data = package("1.2.0")
        # accepted when the plant had no reviewed analyses yet: no plant comparison in its import report
        report = models.acceptance_test(models.detector_from_bytes(MODEL, name="crystal-test", version="1.2.0"),
                                        make_detector("classical"), plant=models.plant_set(v))
        assert "rows" not in report["plant"]
        models.store_package(v, data, models.check_package(v, data), report, user="test")
        _corrected_analyses(v, models.PLANT_MIN_IMAGES)
    at = models_page(app)
    at.selectbox(key="switch_choice").select("models/packages/crystal-test-1.2.0.cqcpkg")
    at.button(key="compare_selected").click()
    at = at.run()
    assert not at.exception and not at.error
    shown = texts(at.markdown) + texts(at.caption)
    assert f"**crystal-test-1.2.0.cqcpkg** (candidate) against **{SHIPPED_LABEL}** (current)" in shown
    assert f"This plant's reviewed analyses ({models.PLANT_MIN_IMAGES} images" in shown
    assert "Candidate minus current model: F1" in shown
    [record] = [r for r in events(vault_path) if r.event == "model_compared"]
    assert record.user == "alice" and record.details["entry"] == "models/packages/crystal-test-1.2.0.cqcpkg"
    assert record.details["against"] == SHIPPED_LABEL and record.details["plant_images"] == models.PLANT_MIN_IMAGES
    # the stored package is checked against its record before it is compared, as before activation
    with open_vault(vault_path) as v:
        entry = models.installed_models(v)[0]
        other = pkg.build_package({**FIELDS}, band_model(imgsz=(320, 320), names=NAMES), key=TRUSTED)
        v.put(entry.entry, other, kind="model", meta=dict(v.info(entry.entry).meta))
        with pytest.raises(ModelPackageError, match="does not match its manifest"):
            models.compare_installed(v, entry, make_detector("classical"), user="lead")
    assert [r.event for r in events(vault_path)].count("model_compared") == 1  # a refused comparison is not one
