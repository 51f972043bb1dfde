"""Share screen (AppTest): researcher keys (invalid key -> clear error), the export form, the preview, the QC-lead
confirmation before the encrypt button works, the download only after that, and the audit record with the vault
user. The app fixtures come from tests/app/conftest.py (vault under tmp_path, user 'alice')."""
from __future__ import annotations

import pytest

import collab.dataset as ds
from collab import researcher as rtool
from collab.crypto_age import generate_identity, identity_file_text
from tests.app.conftest import _isolated, app, events, open_vault, recovery_key, vault_path  # noqa: F401
from tests.collab.conftest import LOT, OPERATOR, planted_files, save


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def share_page(at):
    at.switch_page("screens/share.py")
    at = at.run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Share with a researcher"]
    return at


def add_key(at, name: str, key: str):
    at.text_input(key="share_new_name").input(name)
    at.text_input(key="share_new_key").input(key)
    at.button(key="share_add").click()
    return at.run()


@pytest.fixture
def identity():
    return generate_identity()


def test_invalid_key_is_refused_with_a_clear_error_and_a_valid_one_is_listed(app, vault_path, identity):
    at = share_page(app)
    assert "Add a researcher's public key first." in texts(at.info)
    at = add_key(at, "Dr. Ada", "age1thisisnotakey")
    assert "The key was not added: This is not an age public key" in texts(at.error)
    at = add_key(at, "Dr. Ada", identity[0])  # the private key by mistake
    assert "PRIVATE key" in texts(at.error)
    at = add_key(at, "Dr. Ada", identity[1])
    assert not at.error and "Added Dr. Ada" in texts(at.success)
    assert list(at.dataframe[0].value["researcher"]) == ["Dr. Ada"]
    assert "There are no saved analyses to export yet." in texts(at.info)
    added = [e for e in events(vault_path) if e.event == "researcher_key_added"]
    assert len(added) == 1 and added[0].user == "alice" and added[0].details["name"] == "Dr. Ada"


def test_an_invalidated_analysis_is_marked_in_the_export_choice(app, vault_path, identity):
    from ui.analyses import invalidate_analysis

    with open_vault(vault_path) as v:
        ids = [save(v, name, data) for name, data in list(planted_files().items())[:2]]
        invalidate_analysis(v, ids[0], reason="calibration slide", user="lead")
    at = add_key(share_page(app), "Dr. Ada", identity[1])
    options = at.multiselect(key="share_analyses").options
    assert len(options) == 2 and sum("INVALID: calibration slide" in o for o in options) == 1


def test_preview_confirm_encrypt_download_and_audit(app, vault_path, identity):
    with open_vault(vault_path) as v:
        ids = [save(v, name, data) for name, data in list(planted_files().items())[:2]]
    at = add_key(share_page(app), "Dr. Ada", identity[1])
    assert at.button(key="share_preview").disabled  # nothing chosen yet
    at.multiselect(key="share_analyses").set_value(ids)
    at.text_area(key="share_purpose").input("fine-tune the detector")
    at.text_input(key="share_plant").input("plant-A")
    at.radio(key="share_crop_mode").set_value("Same margins for every image")
    at = at.run()
    at.number_input(key="share_crop_bottom").set_value(40)
    at = at.run()
    at.button(key="share_preview").click()
    at = at.run()
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[-1].value
    assert list(table["kind"]) == ["manifest", "data.yaml", "image", "label", "image", "label"]
    assert "2 images re-encoded from their pixels" in texts(at.caption)
    assert len(at.image) == 2  # one thumbnail per image (up to 3)
    manifest_shown = at.json[0].value
    assert OPERATOR not in manifest_shown and LOT not in manifest_shown and "plant-A" in manifest_shown
    # no download, and no encryption, before the QC lead confirms
    assert len(at.download_button) == 0 and at.button(key="share_encrypt").disabled
    assert not [e for e in events(vault_path) if e.event == "export"]
    at.checkbox(key="share_confirm").check()
    at = at.run()
    at.button(key="share_encrypt").click()
    at = at.run()
    assert not at.exception and not at.error, texts(at.error)
    assert len(at.download_button) == 1 and "Encrypted for Dr. Ada" in texts(at.success)
    (export,) = [e for e in events(vault_path) if e.event == "export"]
    assert export.user == "alice" and export.details["qc_lead_confirmed"] is True
    assert export.details["images"] == 2 and export.details["files"] == 6 and export.details["cropped"] == 2
    assert export.details["purpose"] == "fine-tune the detector" and sorted(export.details["analyses"]) == sorted(ids)

    # changing a choice drops the preview and the encrypted file
    at.text_area(key="share_purpose").input("something else")
    at = at.run()
    assert "The choices changed: build the preview again." in texts(at.info)
    assert len(at.download_button) == 0 and len(at.json) == 0


def test_the_encrypted_file_is_what_the_researcher_tool_opens(app, vault_path, identity, monkeypatch):
    sealed_seen = {}
    real = ds.seal_export

    def spy(*a, **k):
        sealed_seen["bytes"] = real(*a, **k)
        return sealed_seen["bytes"]

    monkeypatch.setattr(ds, "seal_export", spy)  # the screen imports it anew on every run
    with open_vault(vault_path) as v:
        ids = [save(v, name, data) for name, data in list(planted_files().items())[:1]]
    at = add_key(share_page(app), "Dr. Ada", identity[1])
    at.multiselect(key="share_analyses").set_value(ids)
    at.text_area(key="share_purpose").input("p")
    at.text_input(key="share_plant").input("plant-B")
    at = at.run()
    at.button(key="share_preview").click()
    at = at.run()
    at.checkbox(key="share_confirm").check()
    at = at.run()
    at.button(key="share_encrypt").click()
    at = at.run()
    assert "bytes" in sealed_seen, "the screen must encrypt through collab.dataset.seal_export"
    opened = rtool.open_export(sealed_seen["bytes"], identity_file_text(identity[0]))
    assert opened.manifest["plant"] == "plant-B" and opened.manifest["totals"]["images"] == 1
