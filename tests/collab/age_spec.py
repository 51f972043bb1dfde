"""An independent age v1 decoder for X25519 recipients, written from the format specification
(https://age-encryption.org/v1, C2SP age spec) with ``cryptography`` primitives only - no pyrage, no project code.

The tests use it to show that the app's exports are standard age files that other implementations (the stock
``age`` tool among them) can open: if this decoder and pyrage both read the file, it follows the spec, not just
one implementation's habits.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
CHUNK = 64 * 1024


def _polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32_decode(text: str) -> tuple[str, bytes]:
    """(hrp, data bytes) of a bech32 string (BIP 173 checksum; age allows any length)."""
    text = text.lower()
    pos = text.rfind("1")
    hrp, data = text[:pos], [_CHARSET.index(c) for c in text[pos + 1:]]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _polymod(expanded + data) != 1:
        raise ValueError("bad bech32 checksum")
    acc, bits, out = 0, 0, bytearray()
    for v in data[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return hrp, bytes(out)


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _hkdf(ikm: bytes, salt: bytes, info: bytes, n: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=salt, info=info).derive(ikm)


def decrypt(data: bytes, secret_key_text: str) -> bytes:
    """Plaintext of a binary age file encrypted to the X25519 identity ``AGE-SECRET-KEY-1...``."""
    hrp, scalar = bech32_decode(secret_key_text)
    assert hrp == "age-secret-key-" and len(scalar) == 32
    identity = X25519PrivateKey.from_private_bytes(scalar)
    own_public = identity.public_key().public_bytes_raw()

    end = data.index(b"\n---") + 4  # the header MAC covers everything up to and including "---"
    header, rest = data[:end], data[end:]
    assert rest.startswith(b" ")
    mac_line, payload = rest[1:].split(b"\n", 1)
    lines = header.decode("ascii").split("\n")
    assert lines[0] == "age-encryption.org/v1"
    file_key = None
    i = 1
    while i < len(lines) - 1:
        args = lines[i].split(" ")
        assert args[0] == "->"
        body_lines = []
        i += 1
        while True:  # the body ends with its first line shorter than 64 columns
            body_lines.append(lines[i])
            i += 1
            if len(body_lines[-1]) < 64:
                break
        if args[1] != "X25519" or file_key is not None:
            continue
        share = _b64(args[2])
        shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
        wrap_key = _hkdf(shared, share + own_public, b"age-encryption.org/v1/X25519")
        try:
            file_key = ChaCha20Poly1305(wrap_key).decrypt(b"\x00" * 12, _b64("".join(body_lines)), None)
        except Exception:  # noqa: BLE001 - not our stanza
            continue
    if file_key is None:
        raise ValueError("no identity matched")
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, _b64(mac_line.decode("ascii"))):
        raise ValueError("header MAC mismatch")
    nonce, body = payload[:16], payload[16:]
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    out = bytearray()
    counter = 0
    step = CHUNK + 16
    while True:
        chunk = body[counter * step:(counter + 1) * step]
        last = (counter + 1) * step >= len(body)
        out += aead.decrypt(counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), chunk, None)
        if last:
            return bytes(out)
        counter += 1
