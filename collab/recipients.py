"""The researchers a plant exports to: a named list of age public keys kept in the vault (no Streamlit).

Vault entry ``collab/researchers.json`` (kind ``settings``)::

    {"researchers": [{"name", "recipient" (age1...), "fingerprint" (sha256 hex of the key), "added_by", "added"}]}

Audit events: ``researcher_key_added`` and ``researcher_key_removed`` (name + fingerprint, never more).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from collab.crypto_age import parse_recipient, recipient_fingerprint, short_fingerprint
from collab.errors import RecipientKeyError
from ui.analyses import clean_label
from vault import Vault

RESEARCHERS_ENTRY = "collab/researchers.json"


@dataclass(frozen=True)
class Researcher:
    name: str
    recipient: str
    fingerprint: str
    added_by: str = ""
    added: str = ""

    @property
    def display(self) -> str:
        return f"{self.name} ({short_fingerprint(self.fingerprint)})"


def _stored(vault: Vault) -> list[dict]:
    if not vault.exists(RESEARCHERS_ENTRY):
        return []
    try:
        items = json.loads(vault.get(RESEARCHERS_ENTRY))["researchers"]
        if not isinstance(items, list):
            raise TypeError
        return [r for r in items if isinstance(r, dict)]
    except (ValueError, KeyError, TypeError) as e:
        raise RecipientKeyError("The list of researcher keys in the vault is unreadable; restore the vault from a"
                                " backup or add the keys again.") from e


def _save(vault: Vault, items: list[dict]) -> None:
    vault.put(RESEARCHERS_ENTRY, json.dumps({"researchers": items}, sort_keys=True).encode("utf-8"), kind="settings")


def list_researchers(vault: Vault) -> list[Researcher]:
    """The researchers in the order they were added; entries whose key no longer parses are refused loudly."""
    out = []
    for r in _stored(vault):
        recipient = parse_recipient(str(r.get("recipient", "")))
        if recipient_fingerprint(recipient) != r.get("fingerprint"):
            raise RecipientKeyError(f"The key of {r.get('name')!r} does not match its fingerprint; the list was"
                                    " altered. Remove the researcher and add the key again.")
        out.append(Researcher(str(r.get("name", "")), recipient, str(r["fingerprint"]), str(r.get("added_by", "")),
                              str(r.get("added", ""))))
    return out


def get_researcher(vault: Vault, name: str) -> Researcher:
    """The researcher called ``name``. Raises RecipientKeyError when there is none."""
    for r in list_researchers(vault):
        if r.name == name:
            return r
    raise RecipientKeyError(f"No researcher called {name!r}; add their public key first.")


def add_researcher(vault: Vault, name: str, public_key: str, *, user: str) -> Researcher:
    """Add a researcher's public key under a name (after the QC lead compared it with the researcher).

    Raises:
        RecipientKeyError: invalid key, a private key, a name or key already in the list.
        ValueError: an empty or over-long name, control characters.
    """
    name = clean_label(name, what="researcher name")
    if not name:
        raise ValueError("Give the researcher a name (e.g. 'Dr. A. Researcher, Lab X').")
    recipient = parse_recipient(public_key)
    fp = recipient_fingerprint(recipient)
    existing = list_researchers(vault)
    for r in existing:
        if r.name == name:
            raise RecipientKeyError(f"There is already a researcher called {name!r}.")
        if r.fingerprint == fp:
            raise RecipientKeyError(f"This key is already in the list, as {r.name!r}.")
    added = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _save(vault, _stored(vault) + [{"name": name, "recipient": recipient, "fingerprint": fp, "added_by": user,
                                    "added": added}])
    vault.audit.append("researcher_key_added", user=user, details={"name": name, "fingerprint": fp})
    return Researcher(name, recipient, fp, user, added)


def remove_researcher(vault: Vault, name: str, *, user: str) -> None:
    """Remove a researcher (exports already sent stay readable by them). Raises RecipientKeyError if unknown."""
    r = get_researcher(vault, name)
    _save(vault, [x for x in _stored(vault) if x.get("name") != name])
    vault.audit.append("researcher_key_removed", user=user, details={"name": name, "fingerprint": r.fingerprint})
