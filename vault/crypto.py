"""All cryptography of the vault; the only module that imports the ``cryptography`` package.

Choices (justified in docs/vault.md):

* Passphrase -> key-encryption key (KEK): Argon2id with the parameters of the header's passphrase slot.
* Recovery key (160 random bits) -> KEK: HKDF-SHA-256 (no stretching needed at 160 bits of entropy).
* The KEK wraps the random 256-bit master key with AES-256-GCM; the associated data authenticates the header core
  (vault id, sealing public key) and the slot's KDF parameters and salt.
* Per-purpose subkeys come from the master key with HKDF-SHA-256 (salt = vault id, info = purpose label).
* Contents (entries, index, audit records) are encrypted with Cobblestone-256 (C2SP chunked-encryption with
  AES-256-GCM and HKDF-SHA-512): a fresh random salt and a derived single-use key per message, 16 KiB chunks whose
  nonce carries the chunk counter, an always-short final chunk as end marker, key commitment, and an application
  context bound into the key derivation (vault id, entry id, version or index generation).
* The state file and the seen file are authenticated with HMAC-SHA-256.
* Failed-unlock records are sealed to an X25519 public key (ephemeral X25519 + HKDF + AES-256-GCM), so they can be
  written without any secret and read only after a successful unlock.

Keys are held in ``bytearray`` objects that :func:`wipe` overwrites; copies made inside Python or OpenSSL cannot be
wiped, so this is best effort (see docs/vault.md).
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.format import DOMAIN, KEY_BYTES, NONCE_BYTES, KdfParams

_SUBKEY_LABELS = ("blob", "index", "audit", "state-mac", "seen-mac", "seal")


class AuthenticationFailed(Exception):
    """A ciphertext, wrapped key or MAC did not verify. Carries no detail on purpose; callers map it to a typed
    vault error."""


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def wipe(buf: bytearray | None) -> None:
    """Overwrite a key buffer with zeros (best effort: copies elsewhere in memory are not reached)."""
    if buf is not None:
        buf[:] = bytes(len(buf))


def derive_passphrase_kek(passphrase: str, params: KdfParams, salt: bytes) -> bytearray:
    """Argon2id(NFC-normalised passphrase as UTF-8, salt) -> 32-byte KEK.

    The header decoder already enforced the bounds; they are checked again here so no path can reach Argon2id with
    a weak or bomb setting.

    Raises:
        KdfParamsError: parameters out of bounds. TypeError: the passphrase is not text.
    """
    if not isinstance(passphrase, str):
        raise TypeError("the passphrase must be a str")
    params.validate()
    kek = bytearray(KEY_BYTES)
    material = bytearray(unicodedata.normalize("NFC", passphrase).encode("utf-8"))
    try:
        Argon2id(salt=bytes(salt), length=KEY_BYTES, iterations=params.iterations, lanes=params.lanes,
                 memory_cost=params.memory_kib).derive_into(material, kek)
    finally:
        wipe(material)
    return kek


def derive_recovery_kek(secret: bytes, salt: bytes) -> bytearray:
    """HKDF-SHA-256(recovery secret, salt) -> 32-byte KEK."""
    kek = bytearray(KEY_BYTES)
    HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=bytes(salt),
         info=DOMAIN + b"\x00recovery-kek").derive_into(secret, kek)
    return kek


def wrap_key(kek: bytearray, key: bytearray, associated_data: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM-encrypt ``key`` under ``kek``: returns (nonce, wrapped key incl. tag)."""
    nonce = random_bytes(NONCE_BYTES)
    return nonce, AESGCM(kek).encrypt(nonce, key, associated_data)


def unwrap_key(kek: bytearray, nonce: bytes, wrapped: bytes, associated_data: bytes) -> bytearray:
    """Inverse of :func:`wrap_key`.

    Raises:
        AuthenticationFailed: wrong KEK or tampered slot / header core.
    """
    try:
        return bytearray(AESGCM(kek).decrypt(nonce, wrapped, associated_data))
    except InvalidTag:
        raise AuthenticationFailed() from None


@dataclass
class SubKeys:
    """Per-purpose keys derived from the master key (all 32-byte bytearrays)."""

    blob: bytearray
    index: bytearray
    audit: bytearray
    state_mac: bytearray
    seen_mac: bytearray
    seal: bytearray

    def wipe(self) -> None:
        for label in _SUBKEY_LABELS:
            wipe(getattr(self, label.replace("-", "_")))


def derive_subkeys(master_key: bytearray, vault_id: bytes) -> SubKeys:
    """HKDF-SHA-256(master key, salt = vault id, info = purpose label) for every purpose."""
    keys = {}
    for label in _SUBKEY_LABELS:
        out = bytearray(KEY_BYTES)
        HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=vault_id,
             info=DOMAIN + b"\x00subkey\x00" + label.encode()).derive_into(master_key, out)
        keys[label.replace("-", "_")] = out
    return SubKeys(**keys)


def encrypt(key: bytearray, plaintext: bytes | bytearray | memoryview, context: bytes) -> bytes:
    """Cobblestone-256 ciphertext of ``plaintext`` bound to ``context``
    (size: :func:`vault.format.ciphertext_size`)."""
    enc = Cobblestone256Encryptor(key, context)
    return enc.update(plaintext) + enc.finalize()


def decrypt(key: bytearray, ciphertext: bytes, context: bytes) -> bytes:
    """Authenticated decryption; returns the plaintext only once the whole message (including the final short chunk)
    verified.

    Raises:
        AuthenticationFailed: wrong key or context, any modified, missing, reordered, duplicated or extra byte.
    """
    dec = Cobblestone256Decryptor(key, context)
    try:
        plaintext = dec.update(ciphertext)
        plaintext += dec.finalize()  # the final (short) chunk is only released and checked here
    except (InvalidTag, ValueError):
        raise AuthenticationFailed() from None
    return plaintext


def mac(key: bytearray, data: bytes) -> bytes:
    """HMAC-SHA-256 tag (32 bytes)."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def mac_ok(key: bytearray, data: bytes, tag: bytes) -> bool:
    """Constant-time check of an HMAC-SHA-256 tag."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    try:
        h.verify(tag)
    except InvalidSignature:
        return False
    return True


def seal_public_key(seal_key: bytearray) -> bytes:
    """The X25519 public key of the sealing private key (32 bytes, stored in the header)."""
    return X25519PrivateKey.from_private_bytes(seal_key).public_key().public_bytes_raw()


def _seal_aead_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=context + ephemeral_public + recipient_public).derive(shared)


def seal(recipient_public: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt to a public key without any secret: ephemeral public key (32) || AES-256-GCM ciphertext.
    The AEAD key is single-use, so a zero nonce is safe."""
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _seal_aead_key(shared, eph_pub, recipient_public, context)
    return eph_pub + AESGCM(key).encrypt(bytes(NONCE_BYTES), plaintext, None)


def unseal(seal_key: bytearray, sealed: bytes, context: bytes) -> bytes:
    """Inverse of :func:`seal`.

    Raises:
        AuthenticationFailed: not sealed to this key, or modified.
    """
    if len(sealed) < 32 + 16:
        raise AuthenticationFailed()
    priv = X25519PrivateKey.from_private_bytes(seal_key)
    try:
        shared = priv.exchange(X25519PublicKey.from_public_bytes(sealed[:32]))
        key = _seal_aead_key(shared, sealed[:32], priv.public_key().public_bytes_raw(), context)
        return AESGCM(key).decrypt(bytes(NONCE_BYTES), sealed[32:], None)
    except (InvalidTag, ValueError):
        raise AuthenticationFailed() from None
