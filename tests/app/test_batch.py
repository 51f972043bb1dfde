"""ui.batch (no Streamlit): a batch goes on past bad images, every analysed image is saved with its labels, reruns
are recognised by run_key, the batch summary pools the images, and the PDF/overlay/CSV reports carry the facts."""
from __future__ import annotations

import io
from datetime import datetime, timezone

import cv2
import numpy as np
import pandas as pd
import pypdf
import pytest

import ui.batch as batch
from analysis.pipeline import AnalysisOptions, ClassicalDetector
from analysis.report import BATCH_ROW
from tests.app.conftest import FAST_KDF, PASSPHRASE, crystal_image, png_bytes
from ui.analyses import list_analyses, load_analysis
from ui.settings import AppSettings, CalibrationProfile
from vault import Vault, VaultError

DETECTOR = ClassicalDetector()
BROKEN = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
BLANK = png_bytes(np.full((300, 400), 170, np.uint8))


@pytest.fixture
def vault(tmp_path):
    v, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    yield v
    v.lock()


def item(name: str, data: bytes, source: str = "upload") -> batch.Item:
    return batch.Item(name, source, f"id:{name}", lambda: data)


def pdf_text(pdf: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return len(reader.pages), " ".join(p.extract_text() for p in reader.pages)


# ------------------------------------------------------------------------------------------------ labels, profiles
def test_labels_are_cleaned_and_bad_ones_refused():
    assert batch.check_labels("  Paracetamol ", "L-7", profile="Axio") == batch.Labels("Paracetamol", "L-7", "Axio")
    with pytest.raises(ValueError, match="lot"):
        batch.check_labels("p", "x" * 81)
    with pytest.raises(ValueError, match="product"):
        batch.check_labels("bad\tname", "")


def test_profile_choices_put_uncalibrated_last_and_preselect_the_default():
    prefs = AppSettings(profiles=(CalibrationProfile("A 10x", 0.5), CalibrationProfile("B 20x", 0.25)),
                        default_profile="B 20x")
    assert batch.profile_options(prefs) == ["A 10x", "B 20x", ""]
    assert [batch.profile_label(n) for n in batch.profile_options(prefs)] == ["A 10x", "B 20x", "Uncalibrated (px)"]
    assert batch.default_profile_index(prefs) == 1
    assert batch.default_profile_index(prefs, remembered="A 10x") == 0       # this session's earlier pick wins
    assert batch.default_profile_index(prefs, remembered="") == 2            # ... also "uncalibrated"
    assert batch.default_profile_index(prefs, remembered="deleted one") == 1  # a removed profile: the default
    assert batch.default_profile_index(AppSettings()) == 0                   # no profiles: only uncalibrated


# ------------------------------------------------------------------------------------------------ running a batch
def test_a_batch_goes_on_past_a_broken_image_and_saves_the_others(vault):
    calls = []
    items = [item("a.png", png_bytes(crystal_image(3))), item("broken.png", BROKEN),
             item("c.png", png_bytes(crystal_image(6)))]
    outcomes = batch.run_items(items, detector=DETECTOR, options=AnalysisOptions(), vault=vault, user="alice",
                               labels=batch.Labels("Paracetamol", "L-7", ""),
                               progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls == [(0, 3, "a.png"), (1, 3, "broken.png"), (2, 3, "c.png"), (3, 3, "")]
    a, broken, c = outcomes
    assert broken.result is None and broken.info is None and "broken.png" in broken.message()[1]
    assert broken.message()[0] == "error" and broken.error
    assert [a.n_counted, c.n_counted] == [3, 6]
    assert a.message() is None and c.message() is None
    # Saved with the labels and the operator; the outcomes keep no image (it is in the vault).
    saved = {i.image_name: i for i in list_analyses(vault)}
    assert set(saved) == {"a.png", "c.png"}
    assert {(i.product, i.lot, i.operator, i.profile) for i in saved.values()} == {("Paracetamol", "L-7", "alice", "")}
    assert a.info == saved["a.png"] and a.result.cleaned is None
    cleaned = batch.cleaned_image(a, vault)
    assert cleaned.shape == (512, 640)
    assert np.max(np.abs(cleaned - load_analysis(vault, a.info.analysis_id).result.cleaned)) == 0


def test_an_image_without_crystals_is_saved_with_a_clear_message(vault):
    [blank] = batch.run_items([item("blank.png", BLANK)], detector=DETECTOR, options=AnalysisOptions(), vault=vault,
                              user="a", labels=batch.Labels())
    kind, text = blank.message()
    assert kind == "warning" and "No crystals or agglomerates were found in blank.png" in text
    assert "saved" in text
    [info] = list_analyses(vault)
    assert (info.image_name, info.n_crystals, info.n_agglomerates) == ("blank.png", 0, 0)


def test_unreadable_file_and_library_failures_do_not_stop_the_batch(vault):
    def unreadable():
        raise PermissionError(13, "Permission denied")

    class Exploding:
        label = "exploding"

        def detect(self, image):
            raise ValueError("internal detail")

    outcomes = batch.run_items([batch.Item("gone.png", "upload", "x", unreadable)], detector=DETECTOR,
                               options=AnalysisOptions(), vault=vault, user="a", labels=batch.Labels())
    assert "cannot be read (Permission denied)" in outcomes[0].error
    outcomes = batch.run_items([item("a.png", png_bytes(crystal_image(2)))], detector=Exploding(),
                               options=AnalysisOptions(), vault=vault, user="a", labels=batch.Labels())
    assert outcomes[0].result is None and "could not be processed" in outcomes[0].error
    assert "internal detail" not in outcomes[0].error
    assert list_analyses(vault) == []


def test_a_failed_save_keeps_the_result_and_its_image(vault, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "save_analysis", full_disk)
    [out] = batch.run_items([item("a.png", png_bytes(crystal_image(3)))], detector=DETECTOR,
                            options=AnalysisOptions(), vault=vault, user="a", labels=batch.Labels())
    assert out.info is None and out.result is not None and out.result.cleaned is not None
    kind, text = out.message()
    assert kind == "error" and "could not be saved in the vault" in text and "No space left" in text
    assert batch.cleaned_image(out, vault) is out.result.cleaned
    assert batch.cleaned_image(batch.Outcome("x", "upload"), vault) is None


def test_cleaned_image_of_a_locked_vault_raises_a_vault_error(vault):
    [out] = batch.run_items([item("a.png", png_bytes(crystal_image(2)))], detector=DETECTOR,
                            options=AnalysisOptions(), vault=vault, user="a", labels=batch.Labels())
    vault.lock()
    with pytest.raises(VaultError):
        batch.cleaned_image(out, vault)


def test_run_key_changes_with_file_detector_and_options_not_otherwise():
    base = batch.run_key("upload:1", detector_id="auto:", options=AnalysisOptions())
    assert base == batch.run_key("upload:1", detector_id="auto:", options=AnalysisOptions())
    others = {batch.run_key("upload:2", detector_id="auto:", options=AnalysisOptions()),
              batch.run_key("upload:1", detector_id="classical:", options=AnalysisOptions()),
              batch.run_key("upload:1", detector_id="auto:", options=AnalysisOptions(pixel_size_um=0.5)),
              batch.run_key("upload:1", detector_id="auto:", options=AnalysisOptions(include_border=True))}
    assert len(others) == 4 and base not in others


def test_remember_forgets_the_oldest_beyond_the_limit(monkeypatch):
    monkeypatch.setattr(batch, "MAX_REMEMBERED", 3)
    cache: dict = {}
    for k in "abcd":
        batch.remember(cache, k, batch.Outcome(k, "upload"))
    assert list(cache) == ["b", "c", "d"]
    batch.remember(cache, "b", batch.Outcome("b2", "upload"))  # re-added: newest again
    batch.remember(cache, "e", batch.Outcome("e", "upload"))
    assert list(cache) == ["d", "b", "e"]


# ------------------------------------------------------------------------------------------------ batch summary
@pytest.fixture
def three(vault):
    items = [item("a.png", png_bytes(crystal_image(3))), item("broken.png", BROKEN),
             item("c.png", png_bytes(crystal_image(6)))]
    return batch.run_items(items, detector=DETECTOR, options=AnalysisOptions(pixel_size_um=0.5), vault=vault,
                           user="alice", labels=batch.Labels("P", "L1", "Axio"))


def test_overview_has_one_row_per_image_including_failures(three):
    table = batch.overview_table(three)
    assert list(table["image"]) == ["a.png", "broken.png", "c.png"]
    assert list(table["status"]) == ["saved", "not analysed", "saved"]
    assert list(table["crystals"].fillna(-1)) == [3, -1, 6]
    assert list(table["unit"]) == ["µm", "", "µm"]
    assert table.loc[1, "message"].startswith("broken.png could not be analysed")
    assert table.loc[0, "analysis id"] == three[0].info.analysis_id


def test_batch_csvs_pool_the_analysed_images(three):
    csvs = batch.batch_csvs(three)
    summary = pd.read_csv(io.BytesIO(csvs["summary"]))
    assert list(summary["image"]) == ["a.png", "c.png", BATCH_ROW]
    assert summary.set_index("image").loc[BATCH_ROW, "n_total"] == 9
    particles = pd.read_csv(io.BytesIO(csvs["particles"]))
    assert sorted(set(particles["image"])) == ["a.png", "c.png"] and len(particles) == 9
    sizes = batch.pooled_sizes(batch.analysed(three))
    assert sizes.shape == (9,)
    assert np.allclose(np.sort(sizes), np.sort(particles["ecd_um"]), rtol=1e-5)  # µm: all images calibrated


def test_pooled_sizes_fall_back_to_pixels_when_any_image_is_uncalibrated(vault):
    outs = batch.run_items([item("a.png", png_bytes(crystal_image(2)))], detector=DETECTOR,
                           options=AnalysisOptions(pixel_size_um=2.0), vault=vault, user="a", labels=batch.Labels())
    outs += batch.run_items([item("b.png", png_bytes(crystal_image(2)))], detector=DETECTOR,
                            options=AnalysisOptions(), vault=vault, user="a", labels=batch.Labels())
    px = [p.ecd_px for o in outs for p in o.result.particles if p.excluded_reason is None and not p.on_border]
    assert np.allclose(np.sort(batch.pooled_sizes(batch.analysed(outs))), np.sort(px))


def test_batch_pdf_is_one_page_with_the_pooled_counts_and_labels(three):
    pages, text = pdf_text(batch.report_pdf(three, operator="bob"))
    assert pages == 1
    for expected in ("2 images: a.png, c.png", "Images pooled 2", "Crystals 9", "Product P", "Lot L1",
                     "profile Axio", "Operator bob", "0.5 µm/px", three[0].info.analysis_id):
        assert expected in text, expected
    created = datetime.fromisoformat(three[0].info.created)
    assert f"{created:%Y-%m-%d %H:%M:%S} UTC" in text


def test_single_pdf_has_the_overlay_and_differing_labels_are_flagged(vault, three):
    [other] = batch.run_items([item("d.png", png_bytes(crystal_image(2)))], detector=DETECTOR,
                              options=AnalysisOptions(pixel_size_um=0.5), vault=vault, user="a",
                              labels=batch.Labels("P", "L2", "Axio"))
    one = three[0]
    pdf = batch.report_pdf([one], operator="bob", cleaned=batch.cleaned_image(one, vault))
    [page] = pypdf.PdfReader(io.BytesIO(pdf)).pages
    assert len(page.images) == 1
    _, text = pdf_text(batch.report_pdf([three[0], other], operator="bob"))
    assert "Lot 2 different values (see History)" in text and "Product P" in text
    with pytest.raises(ValueError, match="nothing was analysed"):
        batch.report_pdf([three[1]], operator="bob")


def test_overlay_png_is_full_size_and_shows_only_the_chosen_classes(vault, three):
    one = three[2]
    cleaned = batch.cleaned_image(one, vault)

    def green_pixels(show):
        bgr = cv2.imdecode(np.frombuffer(batch.overlay_png(one.result, cleaned, show=show), np.uint8),
                           cv2.IMREAD_COLOR)
        assert bgr.shape == (512, 640, 3)
        return int(np.sum((bgr[..., 1] > 140) & (bgr[..., 2] < 30) & (bgr[..., 0] > 90)))

    assert green_pixels(("crystal", "agglomerate")) > 100
    assert green_pixels(("agglomerate",)) == 0

