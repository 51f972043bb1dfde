"""The app in a real browser: headless Chromium (Debian's) driven by Playwright against ``streamlit run app.py`` on a
free 127.0.0.1 port, with a fresh vault in the test's tmp folder (fixtures in conftest.py).

1. The main flow a technician follows: create the vault, confirm the recovery key, upload a sample through the file
   chooser, read the counts, download the particles and summary CSVs and check them against the counts shown, lock,
   see the lock screen, unlock again and find the analysis in History.
2. Upload-to-result time of one 2592x1944 micrograph, measured in the browser from handing the file to the uploader
   until the counts are shown (upload, analysis, saving in the vault and rendering); several uploads of the same
   pixels, the median is written to ``upload_to_result.json`` in the test's tmp folder and printed in the test
   summary. A figure, never an assert on time.

With CRYSTALQC_SCREENSHOTS=<folder> (``make screenshots``), test 1 also saves PNGs of the main screens there.

Selectors are what a user sees (labels, roles, texts); Streamlit's ``data-testid`` only to find a widget's box (the
metric or uploader carrying a given label) and to know when a script run has finished, before a screenshot.
"""
from __future__ import annotations

import io
import json
import os
import re
import statistics
import struct
import time
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.e2e import conftest
from tests.e2e.conftest import PASSPHRASE, ROOT

USER = "alice"
SAMPLE = ROOT / "samples" / "synthetic_easy_01.jpg"
BIG_SIZE = (2592, 1944)  # W x H of a 5 MP microscope camera
REPEATS = int(os.environ.get("CRYSTALQC_E2E_REPEATS", "2"))  # more for a steadier median
VIEWPORT = {"width": 1280, "height": 900}
MAX_SHOT_HEIGHT = 3000  # px; keeps a full-page PNG to a few hundred KB


# ------------------------------------------------------------------------------------------------ helpers
def password_field(page, label: str):
    """The password input labelled ``label`` (password inputs have no ARIA role; the lock screen's radio has the
    same "Passphrase" label)."""
    return page.locator(f'input[type="password"][aria-label="{label}"]')


def create_vault(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=re.compile("create your vault")).wait_for()
    page.get_by_label("Your name (recorded in the audit log)").fill(USER)
    password_field(page, "Passphrase").fill(PASSPHRASE)
    password_field(page, "Repeat the passphrase").fill(PASSPHRASE)
    page.get_by_role("button", name="Create the vault").click()
    page.get_by_role("heading", name="Your recovery key").wait_for()
    continue_button = page.get_by_role("button", name="Continue")
    assert continue_button.is_disabled()  # not before the user confirms the key was written down
    page.get_by_text("I have written it down").click()
    continue_button.click()
    uploader(page).wait_for()


def unlock(page) -> None:
    page.get_by_label("Your name (recorded in the audit log)").fill(USER)
    password_field(page, "Passphrase").fill(PASSPHRASE)
    page.get_by_role("button", name="Unlock", exact=True).click()
    page.get_by_text(f"Vault unlocked by {USER}").wait_for()  # unlocking returns to the screen that was locked


def uploader(page):
    """The Analyze screen's file uploader (its label starts with "Micrograph")."""
    return page.get_by_test_id("stFileUploader").filter(has_text=re.compile(r"^\s*Micrograph"))


def metric(page, label: str):
    return page.get_by_test_id("stMetric").filter(has=page.get_by_text(label, exact=True))


def metric_value(page, label: str) -> int:
    box = metric(page, label)
    box.wait_for()
    text = box.get_by_test_id("stMetricValue").inner_text().strip()
    assert re.fullmatch(r"\d+", text), f"{label} shows {text!r}, not a count"
    return int(text)


def sidebar_link(page, title: str):
    return page.get_by_test_id("stSidebarNav").get_by_role("link", name=title)


BUSY = "[data-testid=\"stStatusWidget\"], [data-stale=\"true\"], [data-testid^=\"stSkeleton\"]"


def settle(page, *, quiet_ms: int = 600) -> None:
    """Wait until the current script run has finished, nothing on the page is stale and every element has loaded
    (Streamlit shows its status widget while a run is in progress - only after a short delay, hence the page must
    stay quiet for ``quiet_ms`` -, marks elements of the previous run with data-stale and shows a skeleton while an
    element's code - charts, tables - is still loading). Used before screenshots only."""
    for _ in range(20):  # the idle-lock fragment reruns now and then: a quiet moment comes soon
        page.wait_for_function(f"() => !document.querySelector('{BUSY}')")
        page.wait_for_timeout(quiet_ms)
        if page.locator(BUSY).count() == 0:
            return
    raise AssertionError("the page never became quiet")


def content_height(page) -> int:
    return int(page.evaluate("() => Math.max(...['stMain', 'stSidebarContent'].map(id => {"
                             " const e = document.querySelector(`[data-testid=\"${id}\"]`);"
                             " return e ? e.scrollHeight : 0; }))"))


def download(page, button: str) -> tuple[str, bytes]:
    with page.expect_download() as info:
        page.get_by_role("button", name=button).click()
    dl = info.value
    return dl.suggested_filename, Path(dl.path()).read_bytes()


def screenshot(page, name: str) -> None:
    """Full-page PNG of the current screen into $CRYSTALQC_SCREENSHOTS (no-op when unset). Streamlit scrolls inside
    its main container, so the viewport is made as tall as the content (capped) for the shot."""
    folder = os.environ.get("CRYSTALQC_SCREENSHOTS")
    if not folder:
        return
    settle(page)
    try:
        for _ in range(3):  # a taller viewport can re-lay out charts and images: measure again until it fits
            height = max(VIEWPORT["height"], min(content_height(page), MAX_SHOT_HEIGHT))
            if height == page.viewport_size["height"]:
                break
            page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
            settle(page)
        png = page.screenshot(animations="disabled")
    finally:
        page.set_viewport_size(VIEWPORT)
    # 256-colour palette PNG: a screen of flat UI colours and grey micrographs stays sharp at a third of the size.
    from PIL import Image

    Path(folder).mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256).save(Path(folder) / f"{name}.png", optimize=True)


def visit(page, title: str, shot: str, *, then: str | None = None) -> None:
    """Open the screen ``title`` from the sidebar (when it exists), click the button ``then`` when there is one,
    and screenshot it."""
    link = sidebar_link(page, title)
    if link.count() == 0:
        return
    path = link.get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
    link.click()
    page.wait_for_url(re.compile(rf"/{re.escape(path)}$"))
    page.get_by_test_id("stMain").get_by_role("heading", level=1).first.wait_for()
    settle(page)
    button = page.get_by_test_id("stButton").get_by_role("button", name=then or "", exact=True)
    if then is not None and button.count() == 1:  # st.button (a select's "Open" arrow is a button too)
        button.click()
        page.get_by_role("button", name="Download particles CSV").wait_for()
    screenshot(page, shot)


def pipeline_seconds(page) -> float | None:
    """The app's own analysis time (load, clean, detect, measure) from the result line ("2592 × 1944 px, … ·
    detector: … · 9.12 s · …"), or None when the screen does not show it (the figure is informative only)."""
    line = page.get_by_text(re.compile(rf"^{BIG_SIZE[0]} × {BIG_SIZE[1]} px")).filter(visible=True).first
    try:
        line.wait_for(timeout=5_000)
    except PlaywrightTimeout:
        return None
    found = re.search(r"detector: .*? · ([0-9]+\.[0-9]+) s(?: ·|$)", line.inner_text())
    return float(found.group(1)) if found else None


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: identical pixels, different bytes (so the app does not reuse the
    previous result of identical bytes)."""
    assert jpeg[:2] == b"\xff\xd8"
    body = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


# ------------------------------------------------------------------------------------------------ 1: main flow
def test_create_upload_download_lock_unlock_in_a_real_browser(app_server, page):
    create_vault(page, app_server.url)
    assert page.get_by_text(f"Vault unlocked by {USER}").is_visible()

    with page.expect_file_chooser() as chooser:
        uploader(page).get_by_role("button", name="Upload", exact=True).click()
    chooser.value.set_files(str(SAMPLE))
    crystals = metric_value(page, "Crystals")
    agglomerates = metric_value(page, "Agglomerates")
    excluded = metric_value(page, "Excluded")
    assert crystals > 0
    screenshot(page, "02-analyze")

    # The particles CSV has one row per COUNTED particle (crystals + agglomerates; excluded objects and border
    # particles are not rows - analysis/report.py), all of this image.
    name, data = download(page, "Download particles CSV")
    assert name == f"{SAMPLE.stem}_particles.csv"
    particles = pd.read_csv(io.BytesIO(data))
    assert len(particles) == crystals + agglomerates
    assert (particles["class"] == "agglomerate").sum() == agglomerates
    assert (particles["class"] != "agglomerate").sum() == crystals
    assert set(particles["image"]) == {SAMPLE.name}
    assert particles["particle_id"].is_unique
    assert not particles["on_border"].any()  # border particles are left out by default
    assert (particles["ecd_px"] > 0).all()

    # The summary CSV: this image's row and the batch row carry the same counts as the screen.
    name, data = download(page, "Download summary CSV")
    assert name == f"{SAMPLE.stem}_summary.csv"
    summary = pd.read_csv(io.BytesIO(data)).set_index("image")
    assert list(summary.index) == [SAMPLE.name, "__batch__"]
    row = summary.loc[SAMPLE.name]
    assert (row["n_crystals"], row["n_agglomerates"], row["n_total"], row["n_excluded"]) == (
        crystals, agglomerates, crystals + agglomerates, excluded)

    if os.environ.get("CRYSTALQC_SCREENSHOTS"):
        visit(page, "Review", "03-review")
        visit(page, "History", "04-history", then="Open")  # the saved analysis opened again
        for title, shot in (("Settings", "05-settings"), ("Models", "06-models"), ("Audit log", "07-audit-log"),
                            ("Share with a researcher", "08-share"), ("Industry comparison", "09-industry")):
            visit(page, title, shot)

    page.get_by_role("button", name=re.compile(r"Lock$")).click()
    page.get_by_role("heading", name="crystal QC is locked").wait_for()
    uploader(page).wait_for(state="detached")  # the Analyze screen and the navigation are gone
    page.get_by_test_id("stSidebarNav").wait_for(state="detached")
    screenshot(page, "01-lock")

    unlock(page)
    sidebar_link(page, "History").click()
    page.get_by_role("heading", name="History").wait_for()
    # The analysis saved before locking is still there: the analysis chooser names its image and count.
    expect(page.get_by_role("combobox", name="Analysis")).to_have_value(
        re.compile(rf"{re.escape(SAMPLE.name)}.*\b{crystals} crystals"), timeout=60_000)


# ------------------------------------------------------------------------------------------------ 2: timing
def test_upload_to_result_time_of_a_5_mp_image(app_server, page, tmp_path, record_property):
    from detection.synthetic import render_image
    from detection.synthetic.dataset import encode

    image, truth = render_image(20260, size=BIG_SIZE, difficulty="medium", colour="grey")
    jpeg, _ = encode(image, "jpg")
    assert image.shape == (BIG_SIZE[1], BIG_SIZE[0]) and truth["n_counted"] > 0

    create_vault(page, app_server.url)
    file_input = uploader(page).locator('input[type="file"]')
    seconds, pipeline, counts = [], [], []
    for i in range(REPEATS):
        name = f"camera_{BIG_SIZE[0]}x{BIG_SIZE[1]}_{i}.jpg"
        payload = {"name": name, "mimeType": "image/jpeg", "buffer": with_comment(jpeg, f"repeat {i}")}
        start = time.perf_counter()
        file_input.set_input_files(payload)
        counts.append(metric_value(page, "Crystals"))
        seconds.append(time.perf_counter() - start)
        pipeline.append(pipeline_seconds(page))
        # Remove the file: the result disappears, so the next upload's result cannot be mistaken for this one.
        page.get_by_role("button", name=f"Remove {name}").click()
        metric(page, "Crystals").wait_for(state="detached")

    assert counts[0] > 0 and len(set(counts)) == 1  # same pixels, same count every time
    figure = {
        "image": f"{BIG_SIZE[0]}x{BIG_SIZE[1]} 8-bit JPEG ({len(jpeg) / 1e6:.2f} MB), synthetic",
        "repeats": REPEATS, "seconds": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3), "crystals": counts[0],
        "pipeline_seconds": pipeline,
        "pipeline_median_s": round(statistics.median(pipeline), 3) if None not in pipeline else None,
        "measured": "Playwright, from set_input_files until the Crystals metric is visible; pipeline_seconds is"
                    " the app's own analysis time shown on the result line (the rest: upload, saving in the vault,"
                    " rendering)",
        "cpu_count": os.cpu_count(),
    }
    (tmp_path / "upload_to_result.json").write_text(json.dumps(figure, indent=2))
    record_property("upload_to_result", figure)
    print(f"upload-to-result median {figure['median_s']:.2f} s over {REPEATS}: {figure['seconds']}"
          f" (pipeline {figure['pipeline_seconds']})")


# ------------------------------------------------------------------------------------------------ 3: no browser
def test_a_missing_chromium_fails_the_browser_tests_with_what_to_install(monkeypatch):
    monkeypatch.setenv("CRYSTALQC_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(conftest.os, "access", lambda path, mode: False)  # no executable anywhere
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        conftest.chromium_path()
    monkeypatch.setattr(conftest.os, "access", lambda path, mode: path == "/nonexistent/chromium")
    assert conftest.chromium_path() == "/nonexistent/chromium"  # CRYSTALQC_CHROMIUM wins when it exists
