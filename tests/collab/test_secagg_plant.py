"""Secure aggregation, the plant side in the vault (collab.secagg_plant) and the researcher's command line
(python -m collab.secagg): keys stay in the vault, rounds are checked on joining, the histogram comes from the
calibrated saved analyses, every step is audited without values, and a three-plant round run through the CLI gives
the exact sum."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from analysis.stats import counted
from collab import secagg_plant as plant
from collab.secagg_cli import main as cli
from collab.secagg_files import aggregate, make_partial, make_shares
from collab.secagg_keys import PlantKeys
from collab.secagg_math import ecd_histogram
from collab.secagg_protocol import (CURRENT_BINS, SecAggError, card_json, create_round, parse_card, parse_round,
                                    round_json, vector_length)
from tests.app.conftest import crystal_image, png_bytes
from ui.analyses import load_analysis, save_analysis
from vault import KdfParams, Vault

ROOT = Path(__file__).resolve().parents[2]
L = vector_length(CURRENT_BINS)


@pytest.fixture(scope="module")
def analysed():
    data = png_bytes(crystal_image())
    return data, {px: analyze_bytes(data, name="c.png", detector=ClassicalDetector(),
                                    options=AnalysisOptions(pixel_size_um=px)) for px in (0.5, 2.0, None)}


@pytest.fixture
def vault(tmp_path):
    v, _ = Vault.create(tmp_path / "vault", "correct horse battery staple", kdf_params=KdfParams.minimum(),
                        user="lead")
    yield v
    v.lock()


@pytest.fixture
def saved(vault, analysed):
    """Three analyses: sugar at 0.5 µm/px, salt at 2 µm/px, one uncalibrated (px); ids in that order."""
    data, results = analysed
    return [save_analysis(vault, data, results[0.5], source="upload", user="lead", product="sugar").analysis_id,
            save_analysis(vault, data, results[2.0], source="upload", user="lead", product="salt").analysis_id,
            save_analysis(vault, data, results[None], source="upload", user="lead", product="sugar").analysis_id]


@pytest.fixture(scope="module")
def others() -> list[PlantKeys]:
    return [PlantKeys.generate("plant-b"), PlantKeys.generate("plant-c")]


def events(vault, prefix="secagg_"):
    return [r for r in vault.audit.entries() if r.event.startswith(prefix)]


def joined_round(vault, others, **over):
    card = plant.create_keys(vault, "plant-a", user="lead") if plant.plant_keys(vault) is None \
        else plant.plant_keys(vault).card()
    args = dict(title="Q1", deadline=datetime.now(timezone.utc) + timedelta(days=7))
    args.update(over)
    rnd = create_round([card] + [k.card() for k in others], **args)
    plant.join_round(vault, round_json(rnd), user="lead")
    return rnd


def expected_histogram(vault, ids):
    sizes = []
    for i in ids:
        r = load_analysis(vault, i).result
        sizes += [p.ecd_px * r.pixel_size_um for p in counted(r.particles, include_border=r.include_border)]
    return ecd_histogram(np.array(sizes), bins_version=CURRENT_BINS)


# ------------------------------------------------------------------------------------------------ keys, rounds
def test_keys_are_created_once_and_only_public_keys_leave(vault):
    assert plant.plant_keys(vault) is None
    with pytest.raises(SecAggError, match="Create this plant's keys first"):
        plant.card_file(vault)
    card = plant.create_keys(vault, "plant-a", user="lead")
    keys = plant.plant_keys(vault)
    assert keys.card() == card == parse_card(plant.card_file(vault))
    exported = plant.card_file(vault).decode()
    assert keys.age_identity not in exported and "PRIVATE KEY" not in exported
    assert "AGE-SECRET-KEY" not in repr(keys)
    with pytest.raises(SecAggError, match="already has"):
        plant.create_keys(vault, "plant-z", user="lead")
    with pytest.raises(SecAggError, match="pseudonym"):
        PlantKeys.generate("Bad Name")
    [e] = events(vault)
    assert e.event == "secagg_keys_created" and e.details == {"pseudonym": "plant-a", "fingerprint": card.fingerprint}


def test_joining_checks_the_round(vault, others):
    rnd = joined_round(vault, others)
    assert [s.round for s in plant.joined_rounds(vault)] == [rnd]
    assert plant.round_status(vault, rnd.round_id).step == "joined"
    plant.join_round(vault, round_json(rnd), user="lead")  # the same file again: harmless
    changed = create_round(list(rnd.plants), title="Q1", deadline=datetime.now(timezone.utc) + timedelta(days=7),
                           epsilon=1.0, round_id=rnd.round_id)
    with pytest.raises(SecAggError, match="already joined round .* with a different round file"):
        plant.join_round(vault, round_json(changed), user="lead")
    stranger = create_round([k.card() for k in others] + [PlantKeys.generate("plant-x").card()], title="x",
                            deadline=datetime.now(timezone.utc) + timedelta(days=1))
    with pytest.raises(SecAggError, match="not a participant"):
        plant.join_round(vault, round_json(stranger), user="lead")
    with pytest.raises(SecAggError, match="not valid JSON"):
        plant.join_round(vault, b"\x00garbage", user="lead")
    refused = [e.details for e in events(vault) if e.event == "secagg_refused"]
    assert [r["step"] for r in refused] == ["join"] * 3 and "not a participant" in refused[1]["reason"]
    [joined] = [e for e in events(vault) if e.event == "secagg_round_joined"]
    assert joined.details["plants"] == ["plant-a", "plant-b", "plant-c"] and joined.details["digest"] == rnd.digest


def test_only_calibrated_analyses_of_the_chosen_product_and_dates_are_eligible(vault, saved):
    sugar, salt, uncalibrated = saved
    assert [a.analysis_id for a in plant.eligible_analyses(vault)] == sorted([sugar, salt], reverse=True)
    assert [a.analysis_id for a in plant.eligible_analyses(vault, product="salt")] == [salt]
    today = date.today()
    assert plant.eligible_analyses(vault, since=today + timedelta(days=1)) == []
    assert len(plant.eligible_analyses(vault, since=today - timedelta(days=1), until=today + timedelta(days=1))) == 2
    with pytest.raises(SecAggError, match="not calibrated"):
        plant.histogram_of(vault, [uncalibrated], bins_version=CURRENT_BINS)
    h = plant.histogram_of(vault, [sugar, salt], bins_version=CURRENT_BINS)
    assert h == expected_histogram(vault, [sugar, salt]) and sum(h) > 0
    # the same crystals at 4x the pixel size land two sqrt(2)-bins (a factor 4 = 4 bins) further up
    h_sugar = plant.histogram_of(vault, [sugar], bins_version=CURRENT_BINS)
    h_salt = plant.histogram_of(vault, [salt], bins_version=CURRENT_BINS)
    assert h_salt[4:] == h_sugar[:-4] and sum(h_salt) == sum(h_sugar)


# ------------------------------------------------------------------------------------------------ the round
def test_three_plant_round_from_the_vault_gives_the_exact_sum(vault, saved, others):
    rnd = joined_round(vault, others)
    histograms = {"plant-b": [3] * L, "plant-c": list(range(L))}
    with pytest.raises(SecAggError, match="at least one calibrated analysis"):
        plant.make_shares(vault, rnd.round_id, [], user="lead")
    outgoing = plant.make_shares(vault, rnd.round_id, saved[:2], user="lead", filters={"product": ""})
    assert sorted(outgoing) == ["plant-b", "plant-c"] and plant.outgoing_shares(vault, rnd.round_id) == outgoing
    with pytest.raises(SecAggError, match="already made"):
        plant.make_shares(vault, rnd.round_id, saved[:2], user="lead")
    kept, to_a = {}, []
    for k in others:
        mine, files = make_shares(rnd, k, histograms[k.pseudonym])
        kept[k.pseudonym] = mine
        to_a.append(files.pop("plant-a"))
        for recipient, data in files.items():
            kept.setdefault(("in", recipient), []).append(data)
    for k in others:
        kept.setdefault(("in", k.pseudonym), []).append(outgoing[k.pseudonym])
    with pytest.raises(SecAggError, match="Shares missing from: plant-c"):
        plant.make_partial(vault, rnd.round_id, to_a[:1], user="lead")
    partial_a = plant.make_partial(vault, rnd.round_id, to_a, user="lead")
    assert plant.stored_partial(vault, rnd.round_id) == partial_a
    partials = [partial_a] + [make_partial(rnd, k, kept[k.pseudonym], kept[("in", k.pseudonym)]) for k in others]
    agg = aggregate(rnd, partials)
    cmp = plant.load_aggregate(vault, rnd.round_id, agg, user="lead")
    own = expected_histogram(vault, saved[:2])
    truth = [a + b + c for a, b, c in zip(own, histograms["plant-b"], histograms["plant-c"])]
    assert list(cmp.aggregate_counts) == truth and cmp.own_counts == own
    assert sum(cmp.own_pct) == pytest.approx(100) and sum(cmp.aggregate_pct) == pytest.approx(100)
    assert cmp.aggregate_pct[5] == pytest.approx(100 * truth[5] / sum(truth))
    assert plant.comparison(vault, rnd.round_id) == cmp and plant.round_status(vault, rnd.round_id).step == "done"
    log = events(vault)
    assert [e.event for e in log] == ["secagg_keys_created", "secagg_round_joined", "secagg_refused",
                                      "secagg_shares_made", "secagg_refused", "secagg_refused",
                                      "secagg_partial_made", "secagg_aggregate_loaded"]
    made = log[3].details
    assert made["n_crystals"] == sum(own) and made["recipients"] == ["plant-b", "plant-c"]
    logged = json.dumps([e.details for e in log])
    assert "histogram" not in logged and "kept" not in logged and "values" not in logged


def test_a_file_that_is_not_an_aggregate_is_refused_and_audited(vault, saved, others):
    rnd = joined_round(vault, others)
    plant.make_shares(vault, rnd.round_id, saved[:1], user="lead")
    with pytest.raises(SecAggError, match="This is not an aggregate file"):
        plant.load_aggregate(vault, rnd.round_id, b"{}", user="lead")
    assert plant.comparison(vault, rnd.round_id) is None
    assert events(vault)[-1].event == "secagg_refused" and events(vault)[-1].details["step"] == "aggregate"


# ------------------------------------------------------------------------------------------------ CLI
def test_researcher_cli_runs_a_round_from_files(tmp_path, others, capsys):
    plants = [PlantKeys.generate("plant-a"), *others]
    cards = []
    for k in plants:
        cards.append(tmp_path / f"{k.pseudonym}.card.json")
        cards[-1].write_bytes(card_json(k.card()))
    round_file = tmp_path / "round.json"
    assert cli(["new-round", *map(str, cards), "--title", "Q1", "--days", "7", "--out", str(round_file)]) == 0
    out = capsys.readouterr().out
    assert all(k.card().fingerprint in out for k in plants)
    rnd = parse_round(round_file.read_bytes())
    histograms = [[i] * L for i in (1, 10, 100)]
    kept, shares = {}, []
    for k, h in zip(plants, histograms):
        kept[k.pseudonym], files = make_shares(rnd, k, h)
        for recipient, data in files.items():
            shares.append(tmp_path / f"{k.pseudonym}-{recipient}.json")
            shares[-1].write_bytes(data)
    routed = tmp_path / "routed"
    assert cli(["route", "--round", str(round_file), *map(str, shares), "--out-dir", str(routed)]) == 0
    partials = []
    for k in plants:
        received = [p.read_bytes() for p in sorted((routed / k.pseudonym).iterdir())]
        partials.append(tmp_path / f"partial-{k.pseudonym}.json")
        partials[-1].write_bytes(make_partial(rnd, k, kept[k.pseudonym], received))
    agg = tmp_path / "aggregate.json"
    assert cli(["aggregate", "--round", str(round_file), *map(str, partials), "--out", str(agg)]) == 0
    assert json.loads(agg.read_bytes())["counts"] == [111] * L
    assert cli(["show", "--round", str(round_file), str(agg)]) == 0
    assert "3 plants, 2664 crystals" in capsys.readouterr().out
    assert cli(["aggregate", "--round", str(round_file), *map(str, partials[:2]), "--out", str(agg)]) == 2
    assert "Too few plants: partial sums from 2, the round's minimum is 3" in capsys.readouterr().err


def test_cli_refuses_too_few_plants_and_runs_as_a_module(tmp_path, others):
    cards = []
    for k in others:
        cards.append(tmp_path / f"{k.pseudonym}.json")
        cards[-1].write_bytes(card_json(k.card()))
    done = subprocess.run([sys.executable, "-m", "collab.secagg", "new-round", *map(str, cards), "--title", "t",
                           "--days", "7", "--out", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Too few plants: 2 joined" in done.stderr
    assert not (tmp_path / "r.json").exists()
    done = subprocess.run([sys.executable, "-m", "collab.secagg", "error-bound", "--plants", "5", "--epsilon", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "within ±20 with probability >= 1 - 1e-06" in done.stdout
