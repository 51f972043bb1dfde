"""Key slots of the header: reading the header, wrapping and unwrapping the master key, passphrase rules."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vault import crypto
from vault.errors import VaultCorruptedError, VaultNotFoundError, WeakPassphraseError
from vault.format import (MAX_HEADER_BYTES, SALT_BYTES, SLOT_PASSPHRASE, Header, KdfParams, KeySlot, decode_header,
                          slot_associated_data)
from vault.fsio import read_capped
from vault.layout import HEADER_FILE, MAX_PASSPHRASE_CHARS, MIN_PASSPHRASE_CHARS

GENERIC_UNLOCK_FAILURE = "Could not unlock the vault: the passphrase is not correct."


def check_new_passphrase(passphrase: str) -> None:
    """Raises WeakPassphraseError unless ``passphrase`` is text of 10..1024 characters."""
    if not isinstance(passphrase, str):
        raise WeakPassphraseError("The passphrase must be text.")
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise WeakPassphraseError(f"Choose a passphrase of at least {MIN_PASSPHRASE_CHARS} characters"
                                  " (several words are easier to remember).")
    if len(passphrase) > MAX_PASSPHRASE_CHARS:
        raise WeakPassphraseError(f"A passphrase may have at most {MAX_PASSPHRASE_CHARS} characters.")


def read_header(path: Path) -> tuple[Header, bytes]:
    """(parsed header, raw bytes) of the vault at ``path``; bounds are checked, nothing is derived.

    Raises:
        VaultNotFoundError: no header file. VaultCorruptedError / KdfParamsError: see :func:`decode_header`.
    """
    try:
        raw = read_capped(path / HEADER_FILE, MAX_HEADER_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        raise VaultNotFoundError(f"No vault in {path} (no {HEADER_FILE}); create one with `python -m vault init`"
                                 " or choose the right folder.") from None
    except IsADirectoryError:
        raise VaultCorruptedError(f"{HEADER_FILE} is not a file.") from None
    if raw is None:
        raise VaultCorruptedError("The vault header is too large: it is damaged or was tampered with.")
    return decode_header(raw), raw


def make_slot(header_core: Header, slot_type: int, master: bytearray, *, passphrase: str | None = None,
              params: KdfParams | None = None, recovery_secret: bytes | None = None) -> KeySlot:
    """A new key slot wrapping ``master`` under a passphrase (Argon2id, ``params``) or a recovery secret (HKDF)."""
    salt = crypto.random_bytes(SALT_BYTES)
    draft = KeySlot(slot_type, params if slot_type == SLOT_PASSPHRASE else None, salt, b"", b"")
    if slot_type == SLOT_PASSPHRASE:
        kek = crypto.derive_passphrase_kek(passphrase, params, salt)
    else:
        kek = crypto.derive_recovery_kek(recovery_secret, salt)
    try:
        nonce, wrapped = crypto.wrap_key(kek, master, slot_associated_data(header_core, draft))
    finally:
        crypto.wipe(kek)
    return replace(draft, nonce=nonce, wrapped_key=wrapped)


def unwrap_slot(header: Header, slot: KeySlot, kek: bytearray) -> bytearray:
    """The master key of ``slot`` (``kek`` is wiped).

    Raises:
        crypto.AuthenticationFailed: wrong KEK or tampered header core / slot.
    """
    try:
        return crypto.unwrap_key(kek, slot.nonce, slot.wrapped_key, slot_associated_data(header, slot))
    finally:
        crypto.wipe(kek)
