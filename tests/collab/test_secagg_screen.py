"""Industry comparison screen (AppTest): this plant ('plant-a', the app's vault) and two simulated plants run a round
- keys and card, join, shares, partial sum, aggregate shown against the plant's own distribution - and the error
paths show st.error (never a traceback) and are audited."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from collab import secagg_plant as plant
from collab.secagg_files import aggregate, make_partial, make_shares
from collab.secagg_keys import PlantKeys
from collab.secagg_protocol import CURRENT_BINS, create_round, round_json, vector_length
from tests.app.conftest import _isolated, app, crystal_image, events, open_vault, png_bytes, recovery_key  # noqa: F401
from tests.app.conftest import titles, vault_path  # noqa: F401
from ui.analyses import save_analysis

L = vector_length(CURRENT_BINS)


@pytest.fixture(scope="module")
def analysed():
    data = png_bytes(crystal_image())
    return data, analyze_bytes(data, name="c.png", detector=ClassicalDetector(),
                               options=AnalysisOptions(pixel_size_um=0.5))


@pytest.fixture(scope="module")
def others() -> list[PlantKeys]:
    return [PlantKeys.generate("plant-b"), PlantKeys.generate("plant-c")]


def ok(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def joined(app, vault_path, analysed, others):
    """The app on the screen with keys created, one calibrated analysis saved and a three-plant round joined."""
    with open_vault(vault_path) as v:
        save_analysis(v, analysed[0], analysed[1], source="upload", user="alice", product="sugar")
    at = app
    at.switch_page("screens/benchmark.py")
    ok(at.run())
    assert titles(at) == ["Industry comparison"]
    at.button(key="secagg_create_keys").click()  # no pseudonym yet
    at.run()
    assert not at.exception and "pseudonym is 2 to 32" in at.error[0].value
    at.text_input(key="secagg_pseudonym").input("plant-a")
    at.button(key="secagg_create_keys").click()
    ok(at.run())
    assert [b.label for b in at.get("download_button")] == ["Download plant card"]
    with open_vault(vault_path) as v:
        card = plant.plant_keys(v).card()
    rnd = create_round([card] + [k.card() for k in others], title="Q1 sugar",
                       deadline=datetime.now(timezone.utc) + timedelta(days=7))
    at.file_uploader(key="secagg_round_upload").set_value(("round.json", round_json(rnd), "application/json"))
    ok(at.run())
    assert at.button(key="secagg_join").disabled  # fingerprints not confirmed yet
    assert {r for r in at.dataframe[0].value["plant"]} == {"plant-a", "plant-b", "plant-c"}
    at.checkbox(key="secagg_round_confirm").check()
    ok(at.run())
    at.button(key="secagg_join").click()
    ok(at.run())
    return at, rnd


def others_shares(rnd, others):
    """The other plants' shares: ({plant: kept}, files addressed to plant-a, {plant: files addressed to it})."""
    kept, to_a, inbox = {}, [], {k.pseudonym: [] for k in others}
    for i, k in enumerate(others):
        kept[k.pseudonym], files = make_shares(rnd, k, [10 * (i + 1)] * L)
        to_a.append(files.pop("plant-a"))
        for recipient, data in files.items():
            inbox[recipient].append(data)
    return kept, to_a, inbox


def test_a_round_from_keys_to_the_comparison_chart(app, vault_path, analysed, others):
    at, rnd = joined(app, vault_path, analysed, others)
    at.button(key="secagg_make_shares").click()
    ok(at.run())
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download plant card", "Share for plant-b", "Share for plant-c"]
    with open_vault(vault_path) as v:
        outgoing = plant.outgoing_shares(v, rnd.round_id)
        own = json.loads(v.get(f"collab/secagg/rounds/{rnd.round_id}/own.json"))["histogram"]
    kept, to_a, inbox = others_shares(rnd, others)
    for k in others:
        inbox[k.pseudonym].append(outgoing[k.pseudonym])
    [share_button] = [b for b in at.get("download_button") if b.label == "Share for plant-b"]
    share_button.click()
    ok(at.run())

    at.file_uploader(key="secagg_shares_upload").set_value(
        [(f"s{i}.json", data, "application/json") for i, data in enumerate(to_a)])
    ok(at.run())
    at.button(key="secagg_make_partial").click()
    ok(at.run())
    assert "Partial sum for the researcher" in [b.label for b in at.get("download_button")]
    with open_vault(vault_path) as v:
        partial_a = plant.stored_partial(v, rnd.round_id)
    partials = [partial_a] + [make_partial(rnd, k, kept[k.pseudonym], inbox[k.pseudonym]) for k in others]

    at.file_uploader(key="secagg_aggregate_upload").set_value(("agg.json", aggregate(rnd, partials),
                                                                "application/json"))
    ok(at.run())
    at.button(key="secagg_load_aggregate").click()
    ok(at.run())
    truth = [a + 10 + 20 for a in own]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Plants": "3", "Crystals, all plants": f"{sum(truth):,}",
                       "Crystals, this plant": f"{sum(own):,}"}
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[-1].value
    assert table["industry (count)"].tolist() == truth
    assert table["this plant (%)"].sum() == pytest.approx(100, abs=0.1)
    assert [e.event for e in events(vault_path) if e.event.startswith("secagg_")] == [
        "secagg_keys_created", "secagg_round_joined", "secagg_shares_made", "secagg_share_exported",
        "secagg_partial_made", "secagg_aggregate_loaded"]


def test_a_tampered_share_and_a_bad_round_file_show_errors(app, vault_path, analysed, others):
    at, rnd = joined(app, vault_path, analysed, others)
    at.button(key="secagg_make_shares").click()
    ok(at.run())
    _, to_a, _ = others_shares(rnd, others)
    tampered = json.loads(to_a[0])
    tampered["age"] = tampered["age"][:-8] + ("A" if tampered["age"][-8] != "A" else "B") + tampered["age"][-7:]
    at.file_uploader(key="secagg_shares_upload").set_value(
        [("a.json", json.dumps(tampered).encode(), "application/json"), ("b.json", to_a[1], "application/json")])
    ok(at.run())
    at.button(key="secagg_make_partial").click()
    at.run()
    assert not at.exception
    assert any("cannot be opened with this plant's key" in e.value for e in at.error)
    with open_vault(vault_path) as v:
        assert plant.stored_partial(v, rnd.round_id) is None
    refused = [e.details for e in events(vault_path) if e.event == "secagg_refused"]
    assert [r["step"] for r in refused] == ["partial"]

    two = json.loads(round_json(rnd))
    two["plants"], two["min_plants"] = two["plants"][:2], 2
    at.file_uploader(key="secagg_round_upload").set_value(("r.json", json.dumps(two).encode(), "application/json"))
    at.run()
    assert not at.exception
    assert any("minimum number of plants must be at least 3" in e.value for e in at.error)
