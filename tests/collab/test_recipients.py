"""collab.recipients: the named list of researcher public keys in the vault (validated, audited)."""
from __future__ import annotations

import json

import pytest

from collab.crypto_age import generate_identity
from collab.errors import RecipientKeyError
from collab.recipients import RESEARCHERS_ENTRY, add_researcher, get_researcher, list_researchers, remove_researcher


def test_add_list_get_remove_with_audit(vault, identity):
    r = add_researcher(vault, "  Dr. Ada Researcher ", identity[1], user="lead")
    assert r.name == "Dr. Ada Researcher" and r.recipient == identity[1]
    second = add_researcher(vault, "Prof. B", generate_identity()[1], user="lead")
    assert [x.name for x in list_researchers(vault)] == ["Dr. Ada Researcher", "Prof. B"]
    assert get_researcher(vault, "Prof. B") == second
    remove_researcher(vault, "Prof. B", user="lead")
    assert [x.name for x in list_researchers(vault)] == ["Dr. Ada Researcher"]
    events = [(e.event, e.user, e.details) for e in vault.audit.entries()
              if e.event.startswith("researcher_key")]
    assert events == [("researcher_key_added", "lead", {"name": "Dr. Ada Researcher", "fingerprint": r.fingerprint}),
                      ("researcher_key_added", "lead", {"name": "Prof. B", "fingerprint": second.fingerprint}),
                      ("researcher_key_removed", "lead", {"name": "Prof. B", "fingerprint": second.fingerprint})]


def test_invalid_private_duplicate_and_unknown_are_refused(vault, identity):
    with pytest.raises(RecipientKeyError, match="not an age public key"):
        add_researcher(vault, "X", "not a key", user="lead")
    with pytest.raises(RecipientKeyError, match="PRIVATE"):
        add_researcher(vault, "X", identity[0], user="lead")
    with pytest.raises(ValueError, match="name"):
        add_researcher(vault, "   ", identity[1], user="lead")
    add_researcher(vault, "Ada", identity[1], user="lead")
    with pytest.raises(RecipientKeyError, match="already in the list, as 'Ada'"):
        add_researcher(vault, "Other name", identity[1], user="lead")
    with pytest.raises(RecipientKeyError, match="already a researcher called 'Ada'"):
        add_researcher(vault, "Ada", generate_identity()[1], user="lead")
    with pytest.raises(RecipientKeyError, match="No researcher called 'Bob'"):
        get_researcher(vault, "Bob")
    assert len(list_researchers(vault)) == 1


def test_a_swapped_key_in_the_stored_list_is_detected(vault, identity):
    add_researcher(vault, "Ada", identity[1], user="lead")
    data = json.loads(vault.get(RESEARCHERS_ENTRY))
    data["researchers"][0]["recipient"] = generate_identity()[1]  # fingerprint no longer matches
    vault.put(RESEARCHERS_ENTRY, json.dumps(data).encode(), kind="settings")
    with pytest.raises(RecipientKeyError, match="does not match its fingerprint"):
        list_researchers(vault)
