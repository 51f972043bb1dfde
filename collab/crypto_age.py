"""age encryption of exports (https://age-encryption.org/v1) through ``pyrage``; the only importer of ``pyrage``.

Why age: a small, maintained, standard file format with X25519 recipients, authenticated encryption of the whole
file (ChaCha20-Poly1305 in 64 KiB chunks; a changed byte anywhere makes decryption fail) and several independent
implementations - the researcher can open an export with the stock tool, no project code needed::

    age -d -i key.txt export.age > export.tar && tar -xf export.tar

``pyrage`` wraps ``rage``, the Rust implementation of the same format. Keys are text: a public key (recipient) is
``age1`` + 58 bech32 characters; a private key (identity) ``AGE-SECRET-KEY-1...``, kept in an identity file in the
format of ``age-keygen`` (comment lines, then the key).

Every error is a :class:`collab.errors.CollabError` whose message names no key material.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

import pyrage
from pyrage import x25519

from collab.errors import DecryptionFailedError, RecipientKeyError

AGE_MAGIC = b"age-encryption.org/v1\n"
#: Bech32 data characters (lower case); a X25519 recipient is "age1" + 58 of them.
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_RECIPIENT_RE = re.compile(rf"age1[{_BECH32}]{{58}}")
_IDENTITY_RE = re.compile(rf"AGE-SECRET-KEY-1[{_BECH32.upper()}]{{58}}")
MAX_KEY_TEXT = 4096
MAX_CIPHERTEXT_BYTES = 2 * 1024 ** 3


# ------------------------------------------------------------------------------------------------ public keys
def parse_recipient(text: str) -> str:
    """The canonical form of a researcher's public key (surrounding white space and a ``# public key:`` prefix as
    printed by age-keygen are accepted).

    Raises:
        RecipientKeyError: a private key was pasted, or the text is not a valid X25519 age public key.
    """
    if not isinstance(text, str) or len(text) > MAX_KEY_TEXT:
        raise RecipientKeyError("A researcher's public key is one line of text starting with age1.")
    key = text.strip()
    if key.lower().startswith("# public key:"):
        key = key.split(":", 1)[1].strip()
    if "AGE-SECRET-KEY" in key.upper():
        raise RecipientKeyError("This is a PRIVATE key. Ask the researcher for the PUBLIC key (a line starting with"
                                " age1); the private key must never leave the researcher's computer.")
    if not _RECIPIENT_RE.fullmatch(key):
        raise RecipientKeyError("This is not an age public key: it must be 62 characters starting with age1"
                                " (letters and digits only). The researcher prints it with"
                                " `python -m collab.researcher keygen` or `age-keygen`.")
    try:
        x25519.Recipient.from_str(key)
    except pyrage.RecipientError as e:
        raise RecipientKeyError("This public key is damaged (its checksum does not match): ask the researcher to"
                                " send it again, e.g. as the key file instead of retyping it.") from e
    return key


def recipient_fingerprint(recipient: str) -> str:
    """SHA-256 (64 hex) of the canonical public key: what the audit log records and people compare."""
    return hashlib.sha256(parse_recipient(recipient).encode("ascii")).hexdigest()


def short_fingerprint(fp: str) -> str:
    """First 16 hex digits of a fingerprint in groups of 4, for screens."""
    return " ".join(fp[i:i + 4] for i in range(0, 16, 4))


# ------------------------------------------------------------------------------------------------ identities
def generate_identity() -> tuple[str, str]:
    """A new key pair: (private identity ``AGE-SECRET-KEY-1...``, public recipient ``age1...``)."""
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def identity_file_text(identity: str, *, created: datetime | None = None) -> str:
    """An identity file as ``age-keygen`` writes it (readable by ``age -d -i``)."""
    parsed = _parse_identity_line(identity)
    created = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return (f"# created: {created.isoformat(timespec='seconds').replace('+00:00', 'Z')}\n"
            f"# public key: {parsed.to_public()}\n{identity}\n")


def _parse_identity_line(line: str) -> x25519.Identity:
    if not _IDENTITY_RE.fullmatch(line):
        raise RecipientKeyError("The identity file holds a line that is not an age private key"
                                " (AGE-SECRET-KEY-1...). Use the key.txt written by keygen.")
    try:
        return x25519.Identity.from_str(line)
    except pyrage.IdentityError as e:
        raise RecipientKeyError("The private key in the identity file is damaged (checksum mismatch).") from e


def parse_identities(text: str) -> list[x25519.Identity]:
    """The private keys of an identity file (``#`` comments and blank lines skipped).

    Raises:
        RecipientKeyError: no key, a malformed line, or a file far too large to be an identity file.
    """
    if len(text) > 64 * MAX_KEY_TEXT:
        raise RecipientKeyError("This file is too large to be an age identity file.")
    keys = [_parse_identity_line(line.strip()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise RecipientKeyError("The identity file holds no private key (AGE-SECRET-KEY-1...).")
    return keys


def public_key_of(identity_text: str) -> str:
    """The public key of the first identity in an identity file."""
    return str(parse_identities(identity_text)[0].to_public())


# ------------------------------------------------------------------------------------------------ files
def encrypt(data: bytes, recipient: str) -> bytes:
    """``data`` encrypted to one public key (binary age file, starts with :data:`AGE_MAGIC`)."""
    return pyrage.encrypt(bytes(data), [x25519.Recipient.from_str(parse_recipient(recipient))])


def decrypt(data: bytes, identity_text: str) -> bytes:
    """Decrypt an age file with the keys of an identity file.

    Raises:
        RecipientKeyError: the identity file is unusable.
        DecryptionFailedError: not an age file, too large, encrypted to someone else, or altered/damaged.
    """
    identities = parse_identities(identity_text)
    if len(data) > MAX_CIPHERTEXT_BYTES:
        raise DecryptionFailedError("This file is larger than any export the app writes (2 GiB); refused.")
    if not bytes(data[:len(AGE_MAGIC)]) == AGE_MAGIC:
        raise DecryptionFailedError("This is not an encrypted export (an age file starts with"
                                    " 'age-encryption.org/v1').")
    try:
        return pyrage.decrypt(bytes(data), identities)
    except pyrage.DecryptError as e:
        if "no matching keys" in str(e).lower():
            raise DecryptionFailedError(
                "Your key cannot open this export: it was encrypted to another researcher's public key (wrong"
                " recipient), or its header was altered. Send the plant the public key printed by keygen and ask"
                " for a new export.") from e
        raise DecryptionFailedError("The export is damaged or was altered after it was encrypted (authentication"
                                    " failed); nothing was extracted. Ask the plant for a fresh copy.") from e
