"""Signed model packages (``.cqcpkg``): format, build, sign, validate.

A package is one file holding ``manifest.json``, ``model.onnx`` and, once signed, ``signature.json``. Layout (all
integers big-endian)::

    b"CQCPKG1\\n"                                 8-byte magic, format version 1
    then 2 or 3 members, in exactly this order:   manifest.json, model.onnx[, signature.json]
        u8  name length | name (ASCII) | u64 data length | data
    nothing after the last member

Members are never extracted to disk: they are read into memory, each with its own size cap, and only the three
fixed names in the fixed order are accepted (no paths, no duplicates, no extra members, no compression, so nothing
can traverse paths or expand).

``manifest.json`` is canonical JSON (sorted keys, no whitespace, UTF-8, no NaN) and is stored exactly as signed; it
holds the model's sha256 and size, so the signature covers the model. ``signature.json`` is
``{"algorithm": "ed25519", "key_id": <sha256 of the raw public key, hex>, "signature": <hex>}``: Ed25519 over
``SIGNING_CONTEXT + manifest bytes``. Why Ed25519 rather than OpenSSF model-signing / Sigstore: see
docs/model_packages.md (offline sites, no transparency log or OIDC identity to reach).

This module is the only place outside ``vault/crypto.py`` that imports ``cryptography``, and it uses only the
Ed25519 signature primitive and PEM key serialisation (a documented exception, see docs/model_packages.md). The
command line lives in :mod:`detection.package_cli` (``python -m detection.package ...``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from analysis.errors import ModelPackageError
from detection.modelmeta import ModelMeta, check_output_shape, parse_metadata
from detection.sandbox import SandboxReport, run_first_inference
from detection.validate import OnnxLimits, ValidatedModel, validate_onnx

logger = logging.getLogger(__name__)

MAGIC = b"CQCPKG1\n"
PACKAGE_FORMAT = 1
SUFFIX = ".cqcpkg"
MANIFEST_MEMBER, MODEL_MEMBER, SIGNATURE_MEMBER = "manifest.json", "model.onnx", "signature.json"
_MEMBERS = (MANIFEST_MEMBER, MODEL_MEMBER, SIGNATURE_MEMBER)
#: Domain separation: a signature made for anything else can never pass as a package signature.
SIGNING_CONTEXT = b"crystal-qc model package v1\n"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION_RE = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_REQUIRED = {
    "package_format", "name", "version", "task", "classes", "input_size", "stride", "opset", "ir_version", "sha256",
    "size_bytes", "author", "created", "training_data", "metrics",
}
_OPTIONAL = {"description", "license", "format", "file", "input", "output", "training"}
_TEXT_CAPS = {"author": 200, "training_data": 4000, "description": 2000, "license": 200, "created": 40}
_MAX_JSON_DEPTH = 6
_MAX_JSON_ITEMS = 2000


@dataclass(frozen=True)
class PackageLimits:
    """Size caps for an untrusted package (bytes) and for the ONNX model inside it."""

    max_package_bytes: int = 100 * 1024 * 1024
    max_manifest_bytes: int = 64 * 1024
    max_signature_bytes: int = 1024
    onnx: OnnxLimits = field(default_factory=OnnxLimits)


@dataclass(frozen=True)
class Manifest:
    """A schema-checked manifest. ``data``: the whole manifest (read-only); ``raw``: its canonical bytes."""

    name: str
    version: str
    meta: ModelMeta
    sha256: str
    size_bytes: int
    opset: int
    ir_version: int
    author: str
    created: str
    data: Mapping[str, Any]
    raw: bytes = field(repr=False)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)


@dataclass(frozen=True)
class PackageContents:
    """The members of a package, as read (nothing verified except the layout and the caps)."""

    manifest_bytes: bytes = field(repr=False)
    model_bytes: bytes = field(repr=False)
    signature_bytes: bytes | None = field(repr=False)


@dataclass(frozen=True)
class ValidatedPackage:
    """A package that passed every static check: signed by ``key_id`` (a trusted key), model matches the manifest,
    version newer than any accepted one, ONNX checks passed. The first inference (sandbox) is still to be run."""

    manifest: Manifest
    model_bytes: bytes = field(repr=False)
    key_id: str
    model: ValidatedModel

    @property
    def meta(self) -> ModelMeta:
        return self.manifest.meta


# ---------------------------------------------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8, NaN/inf refused (ValueError)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def parse_version(text: str) -> tuple[int, int, int]:
    """'1.2.3' -> (1, 2, 3). Semantic version MAJOR.MINOR.PATCH, no leading zeros, no pre-release tags.

    Raises ModelPackageError otherwise.
    """
    m = _VERSION_RE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ModelPackageError(f"Version {str(text)[:20]!r} is not MAJOR.MINOR.PATCH (e.g. 1.2.0).")
    return int(m[1]), int(m[2]), int(m[3])


def fingerprint(public_key_raw: bytes) -> str:
    """Key id: hex SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(bytes(public_key_raw)).hexdigest()


def format_fingerprint(key_id: str) -> str:
    """'ab12cd34...' -> 'ab12 cd34 ...' (16 groups of 4 hex digits) for reading aloud and comparing."""
    return " ".join(key_id[i : i + 4] for i in range(0, len(key_id), 4))


def normalize_fingerprint(text: str) -> str:
    """Accept a fingerprint with spaces/colons/upper case; return 64 lower-case hex digits or raise
    ModelPackageError."""
    clean = re.sub(r"[\s:]", "", str(text)).lower()
    if not _HEX64_RE.fullmatch(clean):
        raise ModelPackageError(f"{str(text)[:80]!r} is not a key fingerprint (64 hex digits).")
    return clean


def public_key_raw(data: bytes) -> bytes:
    """Raw 32-byte Ed25519 public key from raw bytes or a PEM 'PUBLIC KEY' block. Raises ModelPackageError."""
    data = bytes(data)
    if len(data) == 32:
        return data
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ModelPackageError("The public key is not a PEM Ed25519 public key or 32 raw bytes.") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ModelPackageError("The public key is not an Ed25519 key; use `python -m detection.package keygen`.")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(public_key_raw_bytes: bytes) -> bytes:
    """PEM (SubjectPublicKeyInfo) text of a raw Ed25519 public key."""
    key = Ed25519PublicKey.from_public_bytes(bytes(public_key_raw_bytes))
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey, *, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted with ``passphrase`` (best available scheme) when given."""
    enc = (serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_private_key(pem: bytes, *, passphrase: str | None = None) -> Ed25519PrivateKey:
    """Load a PEM Ed25519 private key. Raises ModelPackageError for a wrong/missing passphrase or another key type."""
    try:
        key = serialization.load_pem_private_key(bytes(pem), passphrase.encode("utf-8") if passphrase else None)
    except TypeError as e:
        raise ModelPackageError("The signing key is passphrase-protected; give its passphrase.") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ModelPackageError("The signing key cannot be read: wrong passphrase or not a PEM private key.") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelPackageError("The signing key is not an Ed25519 key; use `python -m detection.package keygen`.")
    return key


def public_key_of(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public half of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_key_id(key: Ed25519PrivateKey) -> str:
    """Fingerprint of the public half of ``key``."""
    return fingerprint(public_key_of(key))


# ---------------------------------------------------------------------------------------------------- container


def pack(manifest_bytes: bytes, model_bytes: bytes, signature_bytes: bytes | None = None) -> bytes:
    """Serialize members into the container layout (module docstring). Pure; nothing is checked here."""
    parts = [MAGIC]
    members = [(MANIFEST_MEMBER, manifest_bytes), (MODEL_MEMBER, model_bytes)]
    if signature_bytes is not None:
        members.append((SIGNATURE_MEMBER, signature_bytes))
    for name, data in members:
        encoded = name.encode("ascii")
        parts += [struct.pack(">B", len(encoded)), encoded, struct.pack(">Q", len(data)), bytes(data)]
    return b"".join(parts)


def unpack(data: bytes, *, limits: PackageLimits = PackageLimits()) -> PackageContents:
    """Read the members of a package into memory, enforcing the layout and every size cap.

    Raises ModelPackageError for a file that is too large, not a package, truncated, has unknown, duplicate or
    misordered members, an oversized member, or trailing bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelPackageError("A model package must be given as bytes.")
    data = bytes(data)
    if len(data) > limits.max_package_bytes:
        raise ModelPackageError(
            f"The model package is {len(data) / 2**20:.1f} MiB; at most {limits.max_package_bytes / 2**20:.0f} MiB "
            "is accepted."
        )
    if not data.startswith(MAGIC):
        raise ModelPackageError(f"The file is not a crystal QC model package ({SUFFIX}); build one with "
                                "`python -m detection.package build`.")
    caps = {MANIFEST_MEMBER: limits.max_manifest_bytes, MODEL_MEMBER: limits.onnx.max_model_bytes,
            SIGNATURE_MEMBER: limits.max_signature_bytes}
    pos, found = len(MAGIC), {}
    while pos < len(data):
        if len(found) == len(_MEMBERS):
            raise ModelPackageError("The model package has extra data after its last member; it was altered.")
        expected = _MEMBERS[len(found)]
        n = data[pos]
        name_bytes = data[pos + 1 : pos + 1 + n]
        if len(name_bytes) != n or pos + 1 + n + 8 > len(data):
            raise ModelPackageError("The model package is truncated; copy it again.")
        if name_bytes != expected.encode("ascii"):
            shown = name_bytes.decode("ascii", "replace")[:40]
            raise ModelPackageError(
                f"The model package has a member {shown!r} where {expected!r} belongs; only {', '.join(_MEMBERS)} "
                "are allowed, once each and in this order."
            )
        (size,) = struct.unpack_from(">Q", data, pos + 1 + n)
        if size > caps[expected]:
            raise ModelPackageError(f"The package member {expected} is {size} bytes (at most {caps[expected]}).")
        start = pos + 1 + n + 8
        if start + size > len(data):
            raise ModelPackageError("The model package is truncated; copy it again.")
        found[expected] = data[start : start + size]
        pos = start + size
    if MODEL_MEMBER not in found:
        raise ModelPackageError("The model package lacks model.onnx or manifest.json; it is incomplete.")
    return PackageContents(found[MANIFEST_MEMBER], found[MODEL_MEMBER], found.get(SIGNATURE_MEMBER))


# ---------------------------------------------------------------------------------------------------- manifest


def _strict_json(raw: bytes, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ModelPackageError(f"The {what} has a key twice; it was not written by the package tool.")
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise ModelPackageError(f"The {what} contains {name}; only finite numbers are allowed.")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelPackageError(f"The {what} is not valid UTF-8 JSON; rebuild the package.") from e


def _check_tree(value: Any, key: str, depth: int = 0, budget: list[int] | None = None) -> None:
    budget = budget if budget is not None else [_MAX_JSON_ITEMS]
    budget[0] -= 1
    if depth > _MAX_JSON_DEPTH or budget[0] < 0:
        raise ModelPackageError(f"Manifest field {key!r} is nested too deeply or too large.")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > 100:
                raise ModelPackageError(f"Manifest field {key!r} has a key that is not a short text.")
            _check_tree(v, key, depth + 1, budget)
    elif isinstance(value, list):
        for v in value:
            _check_tree(v, key, depth + 1, budget)
    elif isinstance(value, str):
        if len(value) > 4000:
            raise ModelPackageError(f"Manifest field {key!r} holds a text of {len(value)} characters (at most 4000).")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ModelPackageError(f"Manifest field {key!r} contains NaN or infinity; only finite numbers are allowed.")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ModelPackageError(f"Manifest field {key!r} has an unsupported value.")


def _text(d: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = d.get(key)
    if value is None and not required:
        return ""
    cap = _TEXT_CAPS[key]
    if not isinstance(value, str) or not value.strip() or len(value) > cap:
        raise ModelPackageError(f"Manifest field {key!r} must be a non-empty text of at most {cap} characters.")
    if any(not c.isprintable() and c not in "\n\t" for c in value):
        raise ModelPackageError(f"Manifest field {key!r} contains control characters.")
    return value


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ModelPackageError(f"Manifest field {key!r} must be an integer in {lo}..{hi}, got {str(value)[:20]!r}.")
    return value


def check_manifest(data: Mapping[str, Any]) -> Manifest:
    """Schema-check a manifest dict (see docs/model_packages.md) and return it as a :class:`Manifest`.

    Raises ModelPackageError naming the first missing, unknown or out-of-schema field.
    """
    if not isinstance(data, Mapping):
        raise ModelPackageError("The manifest must be a JSON object.")
    missing = sorted(_REQUIRED - data.keys())
    if missing:
        raise ModelPackageError(f"The manifest lacks {', '.join(missing)}; add them with the build command's options.")
    unknown = sorted(data.keys() - _REQUIRED - _OPTIONAL)
    if unknown:
        raise ModelPackageError(f"The manifest has unknown fields {', '.join(repr(k[:40]) for k in unknown[:5])}.")
    if type(data["package_format"]) is not int or data["package_format"] != PACKAGE_FORMAT:
        raise ModelPackageError(f"The package format {str(data['package_format'])[:10]!r} is not supported "
                                f"(this app reads format {PACKAGE_FORMAT}); update the app or rebuild the package.")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ModelPackageError("Manifest field 'name' must be 1-64 lower-case letters, digits, '.', '_' or '-'.")
    version = data["version"]
    parse_version(version)
    if data["task"] != "detect":
        raise ModelPackageError("Manifest field 'task' must be 'detect'.")
    for key in ("format", "file"):
        if key in data and data[key] != {"format": "onnx", "file": MODEL_MEMBER}[key]:
            raise ModelPackageError(f"Manifest field {key!r} must be {'onnx' if key == 'format' else MODEL_MEMBER!r}.")
    classes, size = data["classes"], data["input_size"]
    if not isinstance(classes, list) or not isinstance(size, list):
        raise ModelPackageError("Manifest fields 'classes' and 'input_size' must be lists.")
    if not all(isinstance(c, str) and len(c) <= 64 for c in classes) or len(classes) > 256:
        raise ModelPackageError("Manifest field 'classes' must list at most 256 class names.")
    stride = _int(data, "stride", 1, 1024)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 100_000 for v in size):
        raise ModelPackageError("Manifest field 'input_size' must be [height, width] in pixels.")
    # Reuse the ONNX metadata schema: class names, stride, input size.
    meta = parse_metadata({"names": repr(dict(enumerate(classes))), "stride": str(stride), "imgsz": repr(list(size))})
    sha = data["sha256"]
    if not isinstance(sha, str) or not _HEX64_RE.fullmatch(sha):
        raise ModelPackageError("Manifest field 'sha256' must be 64 lower-case hex digits.")
    size_bytes = _int(data, "size_bytes", 1, 2**40)
    opset, ir_version = _int(data, "opset", 1, 1000), _int(data, "ir_version", 1, 1000)
    author, training_data = _text(data, "author"), _text(data, "training_data")
    created = _text(data, "created")
    try:
        datetime.fromisoformat(created)
    except ValueError as e:
        raise ModelPackageError(
            "Manifest field 'created' must be an ISO 8601 date/time, e.g. 2026-11-27T10:00:00+00:00."
        ) from e
    _text(data, "description", required=False)
    _text(data, "license", required=False)
    if not isinstance(data["metrics"], dict):
        raise ModelPackageError("Manifest field 'metrics' must be an object, e.g. {\"mAP50\": 0.91}.")
    for key in ("metrics", "input", "output", "training"):
        if key in data:
            if key != "metrics" and not isinstance(data[key], dict):
                raise ModelPackageError(f"Manifest field {key!r} must be an object.")
            _check_tree(data[key], key)
    return Manifest(name=name, version=version, meta=meta, sha256=sha, size_bytes=size_bytes, opset=opset,
                    ir_version=ir_version, author=author, created=created, data=MappingProxyType(dict(data)),
                    raw=canonical_json(dict(data)))


def parse_manifest(raw: bytes) -> Manifest:
    """Parse the manifest member: strict JSON (no duplicate keys, no NaN), canonical form, schema.

    Raises ModelPackageError.
    """
    data = _strict_json(raw, "manifest")
    manifest = check_manifest(data)
    if manifest.raw != raw:
        raise ModelPackageError("The manifest is not in canonical form (sorted keys, no spaces); it was edited by "
                                "hand after the package was built. Rebuild the package.")
    return manifest


# ---------------------------------------------------------------------------------------------------- signing


def sign_manifest(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The signature member for ``manifest_bytes``: canonical JSON {algorithm, key_id, signature}."""
    sig = key.sign(SIGNING_CONTEXT + bytes(manifest_bytes))
    return canonical_json({"algorithm": "ed25519", "key_id": private_key_id(key), "signature": sig.hex()})


def _trusted_table(trusted_keys: Mapping[str, bytes]) -> dict[str, bytes]:
    table = {}
    for fp, key in trusted_keys.items():
        raw = public_key_raw(key)
        if fingerprint(raw) != normalize_fingerprint(fp):
            raise ModelPackageError(f"The trusted key listed as {str(fp)[:80]!r} does not have that fingerprint; "
                                    "fix the trusted key list.")
        table[fingerprint(raw)] = raw
    return table


def verify_signature(manifest_bytes: bytes, signature_bytes: bytes | None,
                     trusted_keys: Mapping[str, bytes]) -> str:
    """Check the signature member against the trusted keys; return the signer's key id.

    ``trusted_keys``: fingerprint -> public key (raw 32 bytes or PEM). Raises ModelPackageError for an unsigned
    package, a malformed signature, an unknown key or a signature that does not verify.
    """
    if signature_bytes is None:
        raise ModelPackageError("The model package is not signed; sign it with `python -m detection.package sign`.")
    sig = _strict_json(signature_bytes, "signature")
    if (not isinstance(sig, dict) or set(sig) != {"algorithm", "key_id", "signature"}
            or sig["algorithm"] != "ed25519" or not isinstance(sig["key_id"], str)
            or not isinstance(sig["signature"], str) or not re.fullmatch(r"[0-9a-f]{128}", sig["signature"])
            or not _HEX64_RE.fullmatch(sig["key_id"])):
        raise ModelPackageError("The package signature is malformed (expected an Ed25519 signature).")
    table = _trusted_table(trusted_keys)
    key_id = sig["key_id"]
    if key_id not in table:
        raise ModelPackageError(
            f"The package is signed by an unknown key {format_fingerprint(key_id)}; add the researcher's public key "
            "to the trusted keys only after checking this fingerprint with them."
        )
    try:
        Ed25519PublicKey.from_public_bytes(table[key_id]).verify(bytes.fromhex(sig["signature"]),
                                                                 SIGNING_CONTEXT + bytes(manifest_bytes))
    except InvalidSignature as e:
        raise ModelPackageError("The package signature does not match its manifest: the package was modified after "
                                "signing. Get the package again from the researcher.") from e
    return key_id


# ---------------------------------------------------------------------------------------------------- build


def manifest_from(fields: Mapping[str, Any], model_bytes: bytes, *,
                  limits: OnnxLimits = OnnxLimits()) -> tuple[bytes, ValidatedModel]:
    """Canonical manifest bytes for ``model_bytes``: ``fields`` (e.g. an export manifest.json plus author,
    training_data) completed with what the model says (sha256, size, opset, IR, classes, input size, stride).

    The model must pass the static checks and agree with any class/size/stride given in ``fields``.
    Raises ModelPackageError.
    """
    vm = validate_onnx(model_bytes, limits=limits)
    sha = hashlib.sha256(bytes(model_bytes)).hexdigest()
    if fields.get("sha256", sha) != sha:
        raise ModelPackageError("The given manifest describes another model file (its sha256 differs from model.onnx);"
                                " use the manifest.json exported together with this model.")
    data = {k: v for k, v in dict(fields).items() if k in _REQUIRED | _OPTIONAL}
    data.setdefault("classes", list(vm.meta.names))
    data.setdefault("input_size", list(vm.meta.imgsz))
    data.setdefault("stride", vm.meta.stride)
    data.setdefault("task", "detect")
    data.setdefault("metrics", {})
    data.update(package_format=PACKAGE_FORMAT, sha256=sha,
                size_bytes=len(model_bytes), opset=vm.opset, ir_version=vm.ir_version)
    if "format" in data:
        data["format"] = "onnx"
    if "file" in data:
        data["file"] = MODEL_MEMBER
    manifest = check_manifest(data)
    _check_agreement(manifest, vm)
    return manifest.raw, vm


def build_package(fields: Mapping[str, Any], model_bytes: bytes, *, key: Ed25519PrivateKey | None = None) -> bytes:
    """A package for ``model_bytes`` (see :func:`manifest_from`), signed with ``key`` when given."""
    raw, _ = manifest_from(fields, model_bytes)
    return pack(raw, model_bytes, sign_manifest(raw, key) if key is not None else None)


def sign_package(data: bytes, key: Ed25519PrivateKey, *, replace: bool = False) -> bytes:
    """Add (or with ``replace`` replace) the signature of a package. Raises ModelPackageError for a package that is
    already signed (without ``replace``) or whose manifest is invalid or does not match its model."""
    contents = unpack(data)
    if contents.signature_bytes is not None and not replace:
        raise ModelPackageError("The package is already signed; pass replace=True (--force) to sign it again.")
    manifest = parse_manifest(contents.manifest_bytes)
    check_model_hash(manifest, contents.model_bytes)
    return pack(contents.manifest_bytes, contents.model_bytes, sign_manifest(contents.manifest_bytes, key))


# ---------------------------------------------------------------------------------------------------- validate


def check_model_hash(manifest: Manifest, model_bytes: bytes, *,
                     remedy: str = "Get the package again from the researcher.") -> None:
    """Raise ModelPackageError (ending with ``remedy``) when model.onnx differs from the signed manifest's sha256/size."""
    if len(model_bytes) != manifest.size_bytes or hashlib.sha256(model_bytes).hexdigest() != manifest.sha256:
        raise ModelPackageError("model.onnx does not match the sha256 in the signed manifest: the model was replaced "
                                f"or damaged. {remedy}")


def _check_rollback(manifest: Manifest, accepted_versions: Mapping[str, str | Iterable[str]]) -> None:
    accepted = accepted_versions.get(manifest.name)
    if accepted is None:
        return
    versions = [accepted] if isinstance(accepted, str) else list(accepted)
    if not versions:
        return
    newest = max(versions, key=parse_version)
    if manifest.version_tuple <= parse_version(newest):
        relation = "the same version as" if manifest.version_tuple == parse_version(newest) else "older than"
        raise ModelPackageError(
            f"{manifest.name} {manifest.version} is {relation} the accepted version {newest}; only a newer version "
            "can be installed (no rollback). Ask the researcher for a package with a higher version number."
        )


def _check_agreement(manifest: Manifest, vm: ValidatedModel) -> None:
    if manifest.meta != vm.meta:
        raise ModelPackageError(
            f"The manifest (classes {list(manifest.meta.names)}, input {list(manifest.meta.imgsz)}, stride "
            f"{manifest.meta.stride}) does not agree with the model's own metadata (classes {list(vm.meta.names)}, "
            f"input {list(vm.meta.imgsz)}, stride {vm.meta.stride}); rebuild the package from the exported model."
        )
    if (manifest.opset, manifest.ir_version) != (vm.opset, vm.ir_version):
        raise ModelPackageError(f"The manifest says opset {manifest.opset} / IR {manifest.ir_version} but the model "
                                f"has opset {vm.opset} / IR {vm.ir_version}; rebuild the package.")


def validate_package(
    data: bytes,
    *,
    trusted_keys: Mapping[str, bytes],
    accepted_versions: Mapping[str, str | Iterable[str]],
    limits: PackageLimits = PackageLimits(),
) -> ValidatedPackage:
    """Every static check of an untrusted package, cheapest first; nothing of the model is executed.

    Order: size and layout caps -> manifest JSON and schema -> signature by a trusted key -> model sha256/size ->
    no rollback (version strictly newer than ``accepted_versions[name]``, a version or several) -> ONNX static checks
    (:func:`detection.validate.validate_onnx`) -> manifest agrees with the model's metadata, opset and IR.
    ``trusted_keys``: fingerprint -> public key (raw 32 bytes or PEM). Raises ModelPackageError naming the check.
    Run :func:`first_inference` on the result before activating the model.
    """
    contents = unpack(data, limits=limits)
    manifest = parse_manifest(contents.manifest_bytes)
    key_id = verify_signature(contents.manifest_bytes, contents.signature_bytes, trusted_keys)
    check_model_hash(manifest, contents.model_bytes)
    _check_rollback(manifest, accepted_versions)
    vm = validate_onnx(contents.model_bytes, limits=limits.onnx)
    _check_agreement(manifest, vm)
    logger.info("package %s %s signed by %s passed the static checks", manifest.name, manifest.version, key_id[:16])
    return ValidatedPackage(manifest=manifest, model_bytes=contents.model_bytes, key_id=key_id, model=vm)


def first_inference(package: ValidatedPackage, *, timeout_s: float = 60, memory_mb: int = 2048) -> SandboxReport:
    """Run the package's model once in the sandbox (:func:`detection.sandbox.run_first_inference`) and check what
    it returns: one (1, 4 + classes, anchors) output matching the metadata, finite values.

    Returns the :class:`detection.sandbox.SandboxReport`. Raises ModelPackageError.
    """
    report = run_first_inference(package.model_bytes, timeout_s=timeout_s, memory_mb=memory_mb,
                                 input_size=package.meta.imgsz)
    if len(report.output_shapes) != 1:
        raise ModelPackageError(f"The model returned {len(report.output_shapes)} outputs; one is expected.")
    check_output_shape(package.meta, report.output_shapes[0])
    if report.output_shapes[0][0] != 1:
        raise ModelPackageError(f"The model returned batch {report.output_shapes[0][0]} for a batch of 1.")
    if not report.outputs_finite:
        raise ModelPackageError("The model returned NaN or infinite values on a blank image; it is broken.")
    return report


def load_trusted_keys(folder: Path) -> dict[str, bytes]:
    """Fingerprint -> raw public key for every ``*.pub`` (PEM) file in ``folder`` (e.g. weights/trusted_keys).

    A missing folder gives {}. Raises ModelPackageError for a file that is not an Ed25519 public key.
    """
    folder = Path(folder)
    keys: dict[str, bytes] = {}
    if not folder.is_dir():
        return keys
    for path in sorted(folder.glob("*.pub")):
        if path.stat().st_size > 4096:
            raise ModelPackageError(f"{path.name} is too large to be a public key.")
        try:
            raw = public_key_raw(path.read_bytes())
        except ModelPackageError as e:
            raise ModelPackageError(f"{path.name}: {e}") from e
        keys[fingerprint(raw)] = raw
    return keys


if __name__ == "__main__":
    from detection.package_cli import main

    raise SystemExit(main())
