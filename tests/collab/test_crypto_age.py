"""collab.crypto_age: key parsing with actionable errors, identity files, encryption round trip, wrong key and
tampering refused, and the files are standard age (an independent decoder written from the spec opens them)."""
from __future__ import annotations

import hashlib

import pytest

from collab import crypto_age
from collab.errors import DecryptionFailedError, RecipientKeyError
from tests.collab import age_spec


def test_generated_pair_round_trips_through_pyrage_and_the_spec_decoder(identity):
    secret, public = identity
    assert public.startswith("age1") and len(public) == 62 and secret.startswith("AGE-SECRET-KEY-1")
    text = crypto_age.identity_file_text(secret)
    assert crypto_age.public_key_of(text) == public and f"# public key: {public}" in text
    data = bytes(range(256)) * 700  # 179 200 bytes: three 64 KiB chunks, the last one partial
    sealed = crypto_age.encrypt(data, public)
    assert sealed.startswith(crypto_age.AGE_MAGIC) and data[:64] not in sealed
    assert crypto_age.decrypt(sealed, text) == data
    assert age_spec.decrypt(sealed, secret) == data  # standard age, not just pyrage's dialect


def test_public_key_parsing_accepts_age_keygen_forms_and_names_each_mistake(identity):
    secret, public = identity
    assert crypto_age.parse_recipient(f"  {public}\n") == public
    assert crypto_age.parse_recipient(f"# public key: {public}") == public
    with pytest.raises(RecipientKeyError, match="PRIVATE key"):
        crypto_age.parse_recipient(secret)
    with pytest.raises(RecipientKeyError, match="62 characters starting with age1"):
        crypto_age.parse_recipient("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
    with pytest.raises(RecipientKeyError, match="62 characters"):
        crypto_age.parse_recipient(public[:-1])
    flipped = public[:-3] + ("q" if public[-3] != "q" else "p") + public[-2:]
    with pytest.raises(RecipientKeyError, match="checksum"):
        crypto_age.parse_recipient(flipped)


def test_fingerprint_is_sha256_of_the_canonical_key(identity):
    public = identity[1]
    fp = crypto_age.recipient_fingerprint(f" {public} ")
    assert fp == hashlib.sha256(public.encode()).hexdigest()
    assert crypto_age.short_fingerprint(fp) == f"{fp[:4]} {fp[4:8]} {fp[8:12]} {fp[12:16]}"


def test_identity_file_errors():
    with pytest.raises(RecipientKeyError, match="no private key"):
        crypto_age.parse_identities("# only a comment\n\n")
    with pytest.raises(RecipientKeyError, match="not an age private key"):
        crypto_age.parse_identities("age1notasecret\n")


def test_wrong_recipient_is_refused_with_a_clear_message(identity):
    sealed = crypto_age.encrypt(b"plant data", identity[1])
    other, _ = crypto_age.generate_identity()
    with pytest.raises(DecryptionFailedError, match="another researcher's public key"):
        crypto_age.decrypt(sealed, crypto_age.identity_file_text(other))
    with pytest.raises(ValueError, match="no identity matched"):
        age_spec.decrypt(sealed, other)


@pytest.mark.parametrize("where", ["payload", "last_byte", "header_mac"])
def test_any_altered_byte_is_refused(identity, where):
    data = b"x" * 100_000
    sealed = bytearray(crypto_age.encrypt(data, identity[1]))
    header_end = bytes(sealed).index(b"\n---") + 6
    pos = {"payload": len(sealed) // 2, "last_byte": len(sealed) - 1, "header_mac": header_end + 3}[where]
    sealed[pos] ^= 0x01
    with pytest.raises(DecryptionFailedError):
        crypto_age.decrypt(bytes(sealed), crypto_age.identity_file_text(identity[0]))


def test_not_an_age_file_is_named(identity):
    with pytest.raises(DecryptionFailedError, match="not an encrypted export"):
        crypto_age.decrypt(b"PK\x03\x04 a zip file", crypto_age.identity_file_text(identity[0]))
