"""The cryptographic layer on its own: chunk framing attacks on real ciphertexts, key wrapping, MACs, sealing."""
from __future__ import annotations

import os

import pytest

from vault import crypto
from vault.format import CHUNK_BYTES, MESSAGE_OVERHEAD_BYTES, TAG_BYTES, KdfParams, ciphertext_size

KEY = bytearray(os.urandom(32))
CTX = b"ctx-vault-entry-v1"
FRAME = CHUNK_BYTES + TAG_BYTES  # one full encrypted chunk


def _fails(ciphertext: bytes, *, key=KEY, context=CTX) -> bool:
    try:
        crypto.decrypt(key, ciphertext, context)
    except crypto.AuthenticationFailed:
        return True
    return False


@pytest.fixture(scope="module")
def message() -> tuple[bytes, bytes]:
    plain = os.urandom(3 * CHUNK_BYTES + 5000)  # 3 full chunks + a short final chunk
    return plain, crypto.encrypt(KEY, plain, CTX)


def _chunk(ct: bytes, i: int) -> bytes:
    start = MESSAGE_OVERHEAD_BYTES + i * FRAME
    return ct[start:start + FRAME]


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 7])
def test_round_trip_and_exact_size(size):
    plain = os.urandom(size)
    ct = crypto.encrypt(KEY, plain, CTX)
    assert len(ct) == ciphertext_size(size)
    assert crypto.decrypt(KEY, ct, CTX) == plain


def test_same_plaintext_encrypts_differently(message):
    plain, ct = message
    assert crypto.encrypt(KEY, plain, CTX) != ct


def test_truncation_at_every_chunk_boundary_and_mid_chunk(message):
    _, ct = message
    cuts = {0, 1, 24, MESSAGE_OVERHEAD_BYTES - 1, MESSAGE_OVERHEAD_BYTES, len(ct) - 1, len(ct) - TAG_BYTES}
    for k in range(4):
        boundary = MESSAGE_OVERHEAD_BYTES + k * FRAME
        cuts |= {boundary, boundary + 1, boundary + FRAME // 2, boundary + TAG_BYTES}
    for cut in sorted(c for c in cuts if c < len(ct)):
        assert _fails(ct[:cut]), f"truncation to {cut} bytes not detected"


def test_message_ending_on_a_chunk_boundary_cannot_be_cut_to_it():
    plain = os.urandom(2 * CHUNK_BYTES)  # two full chunks + an empty final chunk
    ct = crypto.encrypt(KEY, plain, CTX)
    assert len(ct) == MESSAGE_OVERHEAD_BYTES + 2 * FRAME + TAG_BYTES
    assert _fails(ct[:-TAG_BYTES])  # drop the empty final chunk: the last full chunk is not marked final
    assert _fails(ct[:MESSAGE_OVERHEAD_BYTES + FRAME])


def test_empty_header_only_and_trailing_bytes(message):
    _, ct = message
    assert _fails(b"")
    assert _fails(ct[:MESSAGE_OVERHEAD_BYTES])
    assert _fails(ct + b"\x00")
    assert _fails(ct + ct[-TAG_BYTES:])


@pytest.mark.parametrize("offset_name", ["salt", "commitment", "chunk0", "chunk2", "final", "tag0", "last_tag"])
def test_bit_flips_anywhere_are_detected(message, offset_name):
    _, ct = message
    offsets = {"salt": 3, "commitment": 40, "chunk0": MESSAGE_OVERHEAD_BYTES + 100,
               "chunk2": MESSAGE_OVERHEAD_BYTES + 2 * FRAME + 5, "final": len(ct) - TAG_BYTES - 1,
               "tag0": MESSAGE_OVERHEAD_BYTES + FRAME - 1, "last_tag": len(ct) - 1}
    i = offsets[offset_name]
    assert _fails(ct[:i] + bytes([ct[i] ^ 0x01]) + ct[i + 1:])


def test_reordered_and_duplicated_chunks_are_detected(message):
    _, ct = message
    head = ct[:MESSAGE_OVERHEAD_BYTES]
    tail = ct[MESSAGE_OVERHEAD_BYTES + 3 * FRAME:]
    c0, c1, c2 = (_chunk(ct, i) for i in range(3))
    assert _fails(head + c1 + c0 + c2 + tail)  # swapped (same length)
    assert _fails(head + c0 + c0 + c2 + tail)  # duplicated in place of another (same length)
    assert _fails(head + c0 + c0 + c1 + c2 + tail)  # duplicated (longer)
    assert _fails(head + c0 + c2 + tail)  # one chunk removed


def test_chunk_from_another_message_is_rejected(message):
    plain, ct = message
    other = crypto.encrypt(KEY, plain, CTX)
    spliced = ct[:MESSAGE_OVERHEAD_BYTES] + _chunk(other, 0) + ct[MESSAGE_OVERHEAD_BYTES + FRAME:]
    assert _fails(spliced)


def test_wrong_key_or_context_is_rejected(message):
    _, ct = message
    assert _fails(ct, key=bytearray(os.urandom(32)))
    assert _fails(ct, context=CTX + b"x")
    assert _fails(ct, context=b"")


def test_passphrase_kek_is_deterministic_and_salted():
    params = KdfParams.minimum()
    a = crypto.derive_passphrase_kek("pass phrase", params, b"s" * 32)
    assert a == crypto.derive_passphrase_kek("pass phrase", params, b"s" * 32)
    assert a != crypto.derive_passphrase_kek("pass phrase", params, b"t" * 32)
    assert a != crypto.derive_passphrase_kek("pass phrase!", params, b"s" * 32)
    # NFC and NFD spellings of the same passphrase unlock the same vault
    assert crypto.derive_passphrase_kek("caf\u00e9 au lait", params, b"s" * 32) == \
        crypto.derive_passphrase_kek("cafe\u0301 au lait", params, b"s" * 32)


def test_kek_derivation_re_checks_bounds():
    from vault.errors import KdfParamsError
    with pytest.raises(KdfParamsError):
        crypto.derive_passphrase_kek("x", KdfParams(1024, 1, 1), b"s" * 32)
    with pytest.raises(TypeError):
        crypto.derive_passphrase_kek(b"bytes", KdfParams.minimum(), b"s" * 32)


def test_wrap_unwrap_authenticates_associated_data():
    kek, key = bytearray(os.urandom(32)), bytearray(os.urandom(32))
    nonce, wrapped = crypto.wrap_key(kek, key, b"ad")
    assert crypto.unwrap_key(kek, nonce, wrapped, b"ad") == key
    for args in ((kek, nonce, wrapped, b"ae"), (bytearray(32), nonce, wrapped, b"ad"),
                 (kek, nonce, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"ad")):
        with pytest.raises(crypto.AuthenticationFailed):
            crypto.unwrap_key(*args)


def test_subkeys_are_distinct_and_wipeable():
    keys = crypto.derive_subkeys(bytearray(os.urandom(32)), b"v" * 16)
    values = [bytes(getattr(keys, f)) for f in ("blob", "index", "audit", "state_mac", "seen_mac", "seal")]
    assert len(set(values)) == 6
    keys.wipe()
    assert all(getattr(keys, f) == bytearray(32) for f in ("blob", "index", "audit", "state_mac", "seen_mac", "seal"))


def test_mac():
    tag = crypto.mac(KEY, b"data")
    assert crypto.mac_ok(KEY, b"data", tag)
    assert not crypto.mac_ok(KEY, b"date", tag)
    assert not crypto.mac_ok(bytearray(32), b"data", tag)


def test_seal_needs_only_the_public_key_and_opens_only_with_the_private_key():
    priv = bytearray(os.urandom(32))
    sealed = crypto.seal(crypto.seal_public_key(priv), b"secret name", b"ctx")
    assert b"secret name" not in sealed
    assert crypto.unseal(priv, sealed, b"ctx") == b"secret name"
    for bad_key, blob, ctx in ((bytearray(os.urandom(32)), sealed, b"ctx"), (priv, sealed, b"other"),
                               (priv, sealed[:-1], b"ctx"), (priv, b"short", b"ctx"),
                               (priv, bytes(32) + sealed[32:], b"ctx")):
        with pytest.raises(crypto.AuthenticationFailed):
            crypto.unseal(bad_key, blob, ctx)
