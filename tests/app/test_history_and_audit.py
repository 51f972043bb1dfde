"""History (saved analyses, reopened from the vault) and Audit log (entries + chain check) screens."""
from __future__ import annotations

import base64

import ui.result_view
from tests.app.conftest import open_vault, pick_sample, titles
from ui.analyses import entry_name, list_analyses


def _history(at):
    at.switch_page("screens/history.py")
    return at.run()


def test_empty_history_says_how_to_fill_it(app):
    at = _history(app)
    assert not at.exception
    assert titles(at) == ["History"]
    assert any("No saved analyses yet" in i.value for i in at.info)


def test_history_lists_a_saved_analysis_and_reopens_it(samples, app, vault_path, monkeypatch):
    offered = []
    real_render = ui.result_view.render_result

    def spy(result, *, csvs, **kwargs):
        offered.append(csvs)
        return real_render(result, csvs=csvs, **kwargs)

    monkeypatch.setattr(ui.result_view, "render_result", spy)
    at = pick_sample(app, "good.png")
    shown = {m.label: m.value for m in at.metric}
    at = _history(at)
    assert not at.exception
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
        stored_csv = v.get(entry_name(info.analysis_id, "particles.csv"))
    table = at.dataframe[0].value
    assert list(table["image"]) == ["good.png"] and list(table["id"]) == [info.analysis_id]
    assert at.selectbox(key="history_choice").value == info.analysis_id
    assert not at.metric  # nothing decrypted before "Open"

    at.button(key="history_open").click()
    at.run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric} == shown
    assert [i.type for i in at.main if i.type == "image"] == ["image", "image"]  # cleaned image + overlay
    assert "history_opened" in at.session_state
    assert offered[-1]["particles"] == stored_csv  # the CSV offered is the stored one, byte for byte


def test_an_opened_analysis_decrypts_its_reports_once_not_on_every_rerun(samples, app, monkeypatch):
    import ui.analyses

    reads = []
    real_read = ui.analyses.read_report

    def counting(vault, analysis_id, report):
        reads.append((analysis_id, report))
        return real_read(vault, analysis_id, report)

    monkeypatch.setattr(ui.analyses, "read_report", counting)
    at = _history(pick_sample(app, "good.png"))
    at.button(key="history_open").click()
    at.run()
    assert sorted(r for _, r in reads) == ["particles", "summary"]
    for _ in range(2):  # any widget change reruns the screen
        at.run()
    assert len(reads) == 2 and at.metric and not at.error
    at.button(key="history_open").click()  # opening (again) reads the stored reports afresh
    at.run()
    assert len(reads) == 4


def test_reopened_analysis_offers_the_stored_csv_and_records_the_export(samples, app, vault_path):
    at = _history(pick_sample(app, "good.png"))
    at.button(key="history_open").click()
    at.run()
    [button] = [b for b in at.get("download_button") if b.label == "Download summary CSV"]
    button.click()
    at.run()
    with open_vault(vault_path) as v:
        exports = [r for r in v.audit.entries() if r.event == "export"]
    assert [e.details["file"] for e in exports] == ["good_summary.csv"]


def test_a_damaged_saved_result_gives_an_error_not_a_traceback(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
        name = entry_name(info.analysis_id, "result.json")
        v.put(name, b"{not json", kind="result", meta=v.info(name).meta)
    at = _history(at)
    at.button(key="history_open").click()
    at.run()
    assert not at.exception
    assert any("could not be opened" in e.value and "not valid JSON" in e.value for e in at.error)
    assert "history_opened" not in at.session_state


# ------------------------------------------------------------------------------------------------ audit log
def _audit(at):
    at.switch_page("screens/audit.py")
    return at.run()


def test_audit_log_lists_events_and_verifies_the_chain(samples, app):
    at = _audit(pick_sample(app, "good.png"))
    assert not at.exception
    assert titles(at) == ["Audit log"]
    assert [s.value for s in at.success][0].startswith("Chain verified:")
    table = at.dataframe[0].value
    assert list(table["event"])[:3] == ["analysis", "import", "unlock_ok"]  # newest first
    assert set(table["user"]) >= {"alice"}


def test_a_broken_chain_is_reported_in_red(app, vault_path):
    lines = (vault_path / "audit.log").read_bytes().split(b"\n")
    blob = bytearray(base64.b64decode(lines[0]))
    blob[-1] ^= 1  # one bit of the first record flipped on disk
    lines[0] = base64.b64encode(bytes(blob))
    (vault_path / "audit.log").write_bytes(b"\n".join(lines))
    at = _audit(app)
    assert not at.exception
    assert not at.success
    assert any("audit chain is BROKEN" in e.value and "record 0" in e.value for e in at.error)
