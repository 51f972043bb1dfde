"""Signed model packages (detection.package, detection.package_cli): format, signatures, every refusal, the CLI."""
from __future__ import annotations

import json
import stat
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

import detection.package as pkg
from analysis.errors import ModelPackageError
from detection import package_cli
from detection.package import (
    PackageLimits, build_package, canonical_json, check_manifest, first_inference, fingerprint, format_fingerprint,
    pack, parse_version, sign_manifest, unpack, validate_package,
)
from detection.validate import OnnxLimits
from tests.detection.onnx_fixtures import band_model, ultralytics_props
from tests.detection.test_sandbox import run_time_bomb

NAMES = ("crystal", "agglomerate", "mimic")
FIELDS = {"name": "crystal-test", "version": "1.2.0", "author": "Dr. Ada Researcher",
          "training_data": "6000 synthetic 320x320 tiles (detection.synthetic, seed 1)",
          "created": "2026-11-27T10:00:00+00:00", "metrics": {"mAP50": 0.91, "per_class": {"crystal": {"mAP50": 0.93}}}}
TRUSTED = pkg.generate_private_key()
STRANGER = pkg.generate_private_key()
TRUSTED_KEYS = {pkg.private_key_id(TRUSTED): pkg.public_key_of(TRUSTED)}


def make(model: bytes | None = None, *, key=TRUSTED, **over) -> bytes:
    return build_package({**FIELDS, **over}, band_model() if model is None else model, key=key)


def validate(data: bytes, accepted=None, **kw):
    return validate_package(data, trusted_keys=TRUSTED_KEYS, accepted_versions=accepted or {}, **kw)


def refused(data: bytes, match: str, accepted=None, **kw) -> ModelPackageError:
    with pytest.raises(ModelPackageError, match=match) as info:
        validate(data, accepted, **kw)
    return info.value


def manifest_dict(**over) -> dict:
    data = json.loads(unpack(make()).manifest_bytes)
    data.update(over)
    return data


def signed(manifest: dict | bytes, model: bytes, key=TRUSTED) -> bytes:
    raw = manifest if isinstance(manifest, bytes) else canonical_json(manifest)
    return pack(raw, model, sign_manifest(raw, key))


# ---------------------------------------------------------------------------------------------- the good path


def test_good_package_from_a_trusted_key_validates_and_passes_the_sandbox():
    vp = validate(make(), accepted={"crystal-test": "1.1.9", "other-model": "9.0.0"})
    assert vp.manifest.name == "crystal-test" and vp.manifest.version == "1.2.0"
    assert vp.key_id == pkg.private_key_id(TRUSTED)
    assert vp.meta.names == NAMES and vp.meta.imgsz == (64, 64)
    assert vp.manifest.data["metrics"]["mAP50"] == 0.91 and vp.manifest.author == "Dr. Ada Researcher"
    assert vp.model_bytes == band_model() and vp.model.n_nodes > 0
    report = first_inference(vp, timeout_s=60)
    assert report.output_shapes == ((1, 7, 84),) and report.outputs_finite


def test_manifest_is_canonical_and_complete():
    contents = unpack(make())
    data = json.loads(contents.manifest_bytes)
    assert contents.manifest_bytes == canonical_json(data)
    assert data["sha256"] == pkg.hashlib.sha256(band_model()).hexdigest()
    assert data["size_bytes"] == len(band_model())
    assert (data["opset"], data["ir_version"], data["stride"]) == (17, 9, 32)
    assert data["classes"] == list(NAMES) and data["input_size"] == [64, 64] and data["package_format"] == 1
    sig = json.loads(contents.signature_bytes)
    assert sig["algorithm"] == "ed25519" and sig["key_id"] == pkg.private_key_id(TRUSTED)


def test_container_layout_round_trips():
    data = pack(b"{}", b"model", b"sig")
    assert data.startswith(pkg.MAGIC)
    assert data[8:9] == bytes([len("manifest.json")])
    contents = unpack(data)
    assert (contents.manifest_bytes, contents.model_bytes, contents.signature_bytes) == (b"{}", b"model", b"sig")
    assert unpack(pack(b"{}", b"m")).signature_bytes is None


# ---------------------------------------------------------------------------------------------- signatures


def test_a_byte_flipped_anywhere_after_signing_is_refused():
    data = make()
    contents = unpack(data)
    manifest_at = len(pkg.MAGIC) + 1 + len("manifest.json") + 8
    model_at = manifest_at + len(contents.manifest_bytes) + 1 + len("model.onnx") + 8
    sig_at = model_at + len(contents.model_bytes) + 1 + len("signature.json") + 8
    positions = [0, 7, 8, 12, manifest_at, manifest_at + 40, model_at - 1, model_at, model_at + 100, sig_at - 3,
                 sig_at + 20, len(data) - 5, len(data) - 1]
    positions += list(np.random.default_rng(7).integers(0, len(data), size=60))
    for pos in positions:
        buf = bytearray(data)
        buf[int(pos)] ^= 0x01
        with pytest.raises(ModelPackageError):
            validate(bytes(buf))


def test_model_byte_flip_names_the_hash_check():
    data = bytearray(make())
    data[-300] ^= 0x40  # inside model.onnx (the signature member is ~170 bytes)
    refused(bytes(data), "does not match the sha256")


def test_manifest_byte_flip_names_the_signature():
    contents = unpack(make())
    forged = contents.manifest_bytes.replace(b'"1.2.0"', b'"9.2.0"')
    refused(pack(forged, contents.model_bytes, contents.signature_bytes), "modified after signing")


def test_fuzzed_package_is_always_refused():
    data = make()
    rng = np.random.default_rng(42)
    for _ in range(300):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), size=rng.integers(1, 4)):
            buf[pos] = int(rng.integers(256)) if buf[pos] else 1
        if rng.random() < 0.3:
            del buf[int(rng.integers(len(buf))):]
        if bytes(buf) == data:
            continue
        with pytest.raises(ModelPackageError):
            validate(bytes(buf))


def test_signature_by_an_unknown_key_is_refused():
    err = refused(make(key=STRANGER), "unknown key")
    assert format_fingerprint(pkg.private_key_id(STRANGER)) in str(err)


def test_claiming_a_trusted_key_id_does_not_help():
    contents = unpack(make(key=STRANGER))
    sig = json.loads(contents.signature_bytes)
    sig["key_id"] = pkg.private_key_id(TRUSTED)
    refused(pack(contents.manifest_bytes, contents.model_bytes, canonical_json(sig)), "modified after signing")


def test_unsigned_or_malformed_signature_is_refused():
    refused(make(key=None), "not signed")
    contents = unpack(make())
    for bad in (b"{}", b"not json", canonical_json({"algorithm": "rsa", "key_id": "0" * 64, "signature": "0" * 128}),
                canonical_json({"algorithm": "ed25519", "key_id": "0" * 64, "signature": "zz" * 64})):
        refused(pack(contents.manifest_bytes, contents.model_bytes, bad), "malformed|not valid UTF-8 JSON")


def test_signature_with_another_context_is_refused():
    contents = unpack(make())
    raw_sig = TRUSTED.sign(contents.manifest_bytes)  # no domain separation prefix
    sig = canonical_json({"algorithm": "ed25519", "key_id": pkg.private_key_id(TRUSTED), "signature": raw_sig.hex()})
    refused(pack(contents.manifest_bytes, contents.model_bytes, sig), "modified after signing")


def test_trusted_key_table_must_match_its_fingerprints():
    with pytest.raises(ModelPackageError, match="does not have that fingerprint"):
        validate_package(make(), trusted_keys={pkg.private_key_id(TRUSTED): pkg.public_key_of(STRANGER)},
                         accepted_versions={})
    pem = pkg.public_key_pem(pkg.public_key_of(TRUSTED))
    spaced = format_fingerprint(pkg.private_key_id(TRUSTED)).upper()
    assert validate_package(make(), trusted_keys={spaced: pem}, accepted_versions={}).key_id


def test_manifest_for_another_model_file_is_refused():
    other = band_model(score=0.8)
    refused(signed(manifest_dict(), other), "does not match the sha256")
    with pytest.raises(ModelPackageError, match="describes another model"):
        build_package({**FIELDS, "sha256": pkg.hashlib.sha256(band_model()).hexdigest()}, other)


# ---------------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize("accepted", ["1.2.0", "1.2.1", "2.0.0", ["0.9.0", "1.10.0"]])
def test_older_or_equal_version_is_refused(accepted):
    refused(make(), "no rollback", accepted={"crystal-test": accepted})


def test_newer_version_and_other_names_pass():
    assert validate(make(), accepted={"crystal-test": ["1.1.0", "1.1.10"], "x": "99.0.0"}).manifest.version == "1.2.0"
    assert validate(make(version="1.10.0"), accepted={"crystal-test": "1.9.0"}).manifest.version_tuple == (1, 10, 0)


def test_version_syntax():
    assert parse_version("0.0.1") == (0, 0, 1) and parse_version("10.20.30") == (10, 20, 30)
    for bad in ("1.0", "01.0.0", "1.0.0-rc1", "v1.0.0", "1.0.0 ", 1):
        with pytest.raises(ModelPackageError, match="MAJOR.MINOR.PATCH"):
            parse_version(bad)


# ---------------------------------------------------------------------------------------------- container


def _member(name: str, data: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + struct.pack(">Q", len(data)) + data


def test_container_refuses_odd_layouts():
    contents = unpack(make())
    m, o, s = contents.manifest_bytes, contents.model_bytes, contents.signature_bytes
    good = pack(m, o, s)
    cases = {
        "not a crystal QC model package": b"PK\x03\x04" + good[4:],
        "where 'model.onnx' belongs": pkg.MAGIC + _member("manifest.json", m) + _member("manifest.json", m),
        "where 'manifest.json' belongs": pkg.MAGIC + _member("../../etc/cron.d/x", m),
        "member 'model.onnx' where 'manifest.json'": pkg.MAGIC + _member("model.onnx", o) + _member("manifest.json", m),
        "extra data": good + _member("signature.json", s),
        "truncated": good[:-1],
        "lacks model.onnx": pkg.MAGIC + _member("manifest.json", m),
    }
    for match, data in cases.items():
        with pytest.raises(ModelPackageError, match=match):
            unpack(data)
    with pytest.raises(ModelPackageError, match="truncated"):
        unpack(good[: len(pkg.MAGIC) + 5])
    with pytest.raises(ModelPackageError, match="lacks"):
        unpack(pkg.MAGIC)


def test_size_caps():
    data = make()
    refused(data, "at most 0 MiB", limits=PackageLimits(max_package_bytes=1000))
    refused(data, "manifest.json is", limits=PackageLimits(max_manifest_bytes=100))
    refused(data, "model.onnx is", limits=PackageLimits(onnx=OnnxLimits(max_model_bytes=1000)))
    refused(data, "signature.json is", limits=PackageLimits(max_signature_bytes=10))
    # A declared member size far beyond the file never allocates: it is refused by the cap first.
    huge = pkg.MAGIC + bytes([13]) + b"manifest.json" + struct.pack(">Q", 2**62)
    with pytest.raises(ModelPackageError, match="at most"):
        unpack(huge)


# ---------------------------------------------------------------------------------------------- manifest


def test_manifest_not_in_canonical_form_is_refused_even_when_signed():
    pretty = json.dumps(manifest_dict(), indent=1).encode()
    refused(signed(pretty, band_model()), "canonical form")


def test_manifest_json_tricks_are_refused():
    base = canonical_json(manifest_dict())
    dup = base[:-1] + b',"version":"9.9.9"}'
    refused(signed(dup, band_model()), "key twice")
    nan = base.replace(b'"mAP50":0.91', b'"mAP50":NaN')
    refused(signed(nan, band_model()), "finite numbers")
    refused(signed(b"\xff\xfe", band_model()), "UTF-8 JSON")
    refused(signed(b"[" * 10_000 + b"]" * 10_000, band_model()), "manifest")


@pytest.mark.parametrize("over, match", [
    ({"author": ""}, "'author'"),
    ({"author": "x" * 201}, "'author'"),
    ({"author": "evil\x1b[31m"}, "control characters"),
    ({"training_data": "x" * 5000}, "'training_data'"),
    ({"created": "yesterday"}, "ISO 8601"),
    ({"version": "1.2"}, "MAJOR.MINOR.PATCH"),
    ({"name": "../evil"}, "'name'"),
    ({"task": "segment"}, "'task'"),
    ({"stride": 0}, "'stride'"),
    ({"stride": 7}, "'stride'"),
    ({"input_size": [64]}, "input_size"),
    ({"input_size": [64, 50]}, "multiple of the model stride"),
    ({"classes": ["Crystal!"]}, "not allowed"),
    ({"metrics": [1, 2]}, "'metrics'"),
    ({"metrics": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, "nested"),
    ({"package_format": 2}, "format"),
    ({"package_format": True}, "format"),
    ({"format": "tflite"}, "'format'"),
    ({"sha256": "ABC"}, "'sha256'"),
    ({"evil": 1}, "unknown fields"),
])
def test_manifest_schema_violations_are_refused(over, match):
    with pytest.raises(ModelPackageError, match=match):
        check_manifest(manifest_dict(**over))
    refused(signed(manifest_dict(**over), band_model()), match)


def test_nan_metrics_are_refused_when_building():
    with pytest.raises(ModelPackageError, match="NaN"):
        make(metrics={"mAP50": float("nan")})


def test_missing_manifest_fields_are_named():
    data = manifest_dict()
    del data["author"], data["training_data"]
    with pytest.raises(ModelPackageError, match="lacks author, training_data"):
        check_manifest(data)


def test_manifest_must_agree_with_the_model():
    refused(signed(manifest_dict(classes=["crystal", "agglomerate", "dust"]), band_model()), "does not agree")
    refused(signed(manifest_dict(input_size=[128, 128]), band_model()), "does not agree")
    refused(signed(manifest_dict(opset=16), band_model()), "opset 16")
    with pytest.raises(ModelPackageError, match="does not agree"):
        make(classes=["crystal"])


# ---------------------------------------------------------------------------------------------- bad models


def _signed_for(model: bytes) -> bytes:
    """A package whose signed manifest correctly describes ``model`` (a trusted researcher's bad model)."""
    data = manifest_dict(sha256=pkg.hashlib.sha256(model).hexdigest(), size_bytes=len(model))
    return signed(data, model)


def test_a_signed_package_with_a_bad_model_is_still_refused():
    refused(_signed_for(band_model(props=ultralytics_props(NAMES, (64, 64), stride="0"))), "'stride' must be one of")
    refused(_signed_for(band_model(n_anchors=100)), "anchors")
    refused(_signed_for(band_model(props=ultralytics_props(NAMES, (64, 64), args="x" * 10_000_000))),
            "characters long")
    proto = onnx.ModelProto()
    proto.ParseFromString(band_model())
    proto.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))
    proto.graph.node.append(onnx.helper.make_node("Backdoor", ["images"], ["x"], domain="com.evil"))
    refused(_signed_for(proto.SerializeToString()), "com.evil")


def test_a_run_time_memory_bomb_passes_the_static_checks_but_not_the_sandbox():
    proto = onnx.ModelProto()
    proto.ParseFromString(band_model())
    bomb = onnx.ModelProto()
    bomb.ParseFromString(run_time_bomb(100_000))  # 3 * 6.4e6^2 float32: ~500 TB, known only at run time
    # Graft the bomb's nodes onto the good model and make the output depend on them.
    for node in bomb.graph.node:
        if node.output[0] != "output0":
            proto.graph.node.append(node)
    proto.graph.initializer.extend(bomb.graph.initializer)
    last = next(n for n in proto.graph.node if n.output[0] == "output0")  # the band model's final Pad
    last.output[0] = "pre"
    proto.graph.node.append(onnx.helper.make_node("Mul", ["pre", "bomb_max"], ["output0"]))
    vp = validate(_signed_for(proto.SerializeToString()))
    with pytest.raises(ModelPackageError, match="memory limit"):
        first_inference(vp, memory_mb=1024)


# ---------------------------------------------------------------------------------------------- keys


def test_keys_round_trip_and_fingerprints():
    raw = pkg.public_key_of(TRUSTED)
    assert len(raw) == 32 and pkg.public_key_raw(pkg.public_key_pem(raw)) == raw and pkg.public_key_raw(raw) == raw
    fp = fingerprint(raw)
    assert len(fp) == 64 and len(format_fingerprint(fp).split()) == 16
    assert pkg.normalize_fingerprint(format_fingerprint(fp).upper()) == fp
    with pytest.raises(ModelPackageError):
        pkg.normalize_fingerprint("abc")
    with pytest.raises(ModelPackageError, match="not a PEM"):
        pkg.public_key_raw(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    pem = pkg.private_key_pem(TRUSTED, passphrase="correct horse")
    assert b"ENCRYPTED" in pem
    assert pkg.private_key_id(pkg.load_private_key(pem, passphrase="correct horse")) == pkg.private_key_id(TRUSTED)
    with pytest.raises(ModelPackageError, match="wrong passphrase"):
        pkg.load_private_key(pem, passphrase="wrong")
    with pytest.raises(ModelPackageError, match="passphrase-protected"):
        pkg.load_private_key(pem)


def test_sign_package_adds_or_replaces_a_signature():
    unsigned = make(key=None)
    assert validate(pkg.sign_package(unsigned, TRUSTED)).key_id == pkg.private_key_id(TRUSTED)
    with pytest.raises(ModelPackageError, match="already signed"):
        pkg.sign_package(make(key=STRANGER), TRUSTED)
    assert validate(pkg.sign_package(make(key=STRANGER), TRUSTED, replace=True)).key_id
    contents = unpack(unsigned)
    with pytest.raises(ModelPackageError, match="sha256"):
        pkg.sign_package(pack(contents.manifest_bytes, band_model(score=0.5)), TRUSTED)


def test_load_trusted_keys(tmp_path):
    assert pkg.load_trusted_keys(tmp_path / "missing") == {}
    (tmp_path / "a.pub").write_bytes(pkg.public_key_pem(pkg.public_key_of(TRUSTED)))
    (tmp_path / "notes.txt").write_text("ignored")
    assert pkg.load_trusted_keys(tmp_path) == TRUSTED_KEYS
    (tmp_path / "b.pub").write_text("garbage")
    with pytest.raises(ModelPackageError, match="b.pub"):
        pkg.load_trusted_keys(tmp_path)


# ---------------------------------------------------------------------------------------------- CLI


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = package_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_researcher_workflow(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(package_cli.PASSPHRASE_ENV, "researcher secret")
    rc, out, _ = _cli(capsys, "keygen", "--out", tmp_path / "keys", "--passphrase")
    assert rc == 0
    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and b"ENCRYPTED" in private.read_bytes()
    fp = json.loads(out)["fingerprint"]
    assert fp == format_fingerprint(fingerprint(pkg.public_key_raw(public.read_bytes())))
    assert _cli(capsys, "keygen", "--out", tmp_path / "keys")[0] == 2  # never overwrites a key

    model = tmp_path / "model.onnx"
    model.write_bytes(band_model())
    export_manifest = tmp_path / "manifest.json"
    export_manifest.write_text(json.dumps({"name": "crystal-test", "version": "2.0.0", "format": "onnx",
                                           "file": "model.onnx", "metrics": {"mAP50": 0.9}, "training": {"seed": 0},
                                           "created": "2026-11-27T10:00:00+0000"}))
    out_pkg = tmp_path / "crystal-test.cqcpkg"
    rc, out, err = _cli(capsys, "build", "--model", model, "--manifest-from", export_manifest, "--author", "Ada",
                        "--training-data", "synthetic", "--out", out_pkg)
    assert rc == 0, err
    rc, _, err = _cli(capsys, "verify", out_pkg, "--trusted-key", public, "--no-sandbox")
    assert rc == 1 and "not signed" in err
    assert _cli(capsys, "sign", out_pkg, "--key", private)[0] == 0
    rc, out, err = _cli(capsys, "verify", out_pkg, "--trusted-key", public)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["signed_by"] == fp and summary["sandbox"]["output_shapes"] == [[1, 7, 84]]
    rc, _, err = _cli(capsys, "verify", out_pkg, "--trusted-key", public, "--accepted", "crystal-test=2.0.0",
                      "--no-sandbox")
    assert rc == 1 and "no rollback" in err
    rc, out, _ = _cli(capsys, "inspect", out_pkg)
    info = json.loads(out)
    assert rc == 0 and info["author"] == "Ada" and info["signed_by"] == fp and "NOT verified" in info["note"]
    assert _cli(capsys, "build", "--model", model, "--manifest-from", export_manifest, "--author", "A",
                "--training-data", "s", "--out", out_pkg)[0] == 2  # exists, no --force


def test_cli_build_without_required_fields_fails_with_a_message(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(band_model())
    rc, _, err = _cli(capsys, "build", "--model", model, "--name", "x", "--version", "1.0.0", "--out", tmp_path / "p")
    assert rc == 2 and "lacks author, training_data" in err


def test_project_key_and_pack_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv(package_cli.PASSPHRASE_ENV, "project release secret")
    public = tmp_path / "repo" / "weights" / "trusted_keys" / "project.pub"
    rc, out, _ = _cli(capsys, "project-key", "--public-out", public)
    assert rc == 0
    private = tmp_path / "config" / "crystal-qc" / "project_signing_key.pem"
    assert json.loads(out)["private_key"] == str(private)
    assert b"ENCRYPTED" in private.read_bytes()  # protected by default
    with pytest.raises(ModelPackageError, match="passphrase"):
        pkg.load_private_key(private.read_bytes())
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert _cli(capsys, "project-key", "--public-out", public)[0] == 2  # never replaced

    folder = tmp_path / "repo" / "weights" / "crystal-test"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(band_model())
    (folder / "manifest.json").write_text(json.dumps({"name": "crystal-test", "version": "1.0.0", "metrics": {}}))
    rc, out, err = _cli(capsys, "pack-folder", folder, "--author", "crystal QC team", "--training-data", "synthetic")
    assert rc == 0, err
    out_pkg = tmp_path / "repo" / "weights" / "crystal-test.cqcpkg"
    assert json.loads(out)["package"] == str(out_pkg)
    vp = validate_package(out_pkg.read_bytes(), trusted_keys=pkg.load_trusted_keys(public.parent),
                          accepted_versions={})
    assert vp.manifest.name == "crystal-test" and vp.manifest.author == "crystal QC team"

    monkeypatch.setenv(package_cli.PASSPHRASE_ENV, "not the passphrase")
    rc, _, err = _cli(capsys, "pack-folder", folder, "--author", "A", "--training-data", "s", "--force")
    assert rc == 2 and "wrong passphrase" in err


def test_release_sign_uses_a_key_that_is_never_written(tmp_path, capsys):
    trusted_dir = tmp_path / "trusted_keys"
    trusted_dir.mkdir()
    (trusted_dir / "project-2.pub").write_bytes(pkg.public_key_pem(pkg.public_key_of(TRUSTED)))
    shipped, fresh = tmp_path / "shipped.cqcpkg", tmp_path / "fresh.cqcpkg"
    shipped.write_bytes(make())
    folder = tmp_path / "crystal-test"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(band_model())
    (folder / "manifest.json").write_text(json.dumps({**FIELDS, "version": "1.3.0"}))
    rc, out, err = _cli(capsys, "pack-folder", folder, "--unsigned", "--out", fresh)
    assert rc == 0 and json.loads(out)["signed"] is False, err
    assert unpack(fresh.read_bytes()).signature_bytes is None
    with pytest.raises(SystemExit):
        package_cli.build_parser().parse_args(["pack-folder", str(folder), "--unsigned", "--key", "k.pem"])
    before = {p: unpack(p.read_bytes()) for p in (shipped, fresh)}
    public = trusted_dir / "project-3.pub"
    rc, out, err = _cli(capsys, "release-sign", shipped, fresh, "--public-out", public, "--trusted-dir", trusted_dir)
    assert rc == 0, err
    info = json.loads(out)
    new_keys = {fingerprint(pkg.public_key_raw(public.read_bytes())): pkg.public_key_raw(public.read_bytes())}
    assert info["fingerprint"] == format_fingerprint(next(iter(new_keys)))
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    for path, old in before.items():
        now = unpack(path.read_bytes())
        assert (now.manifest_bytes, now.model_bytes) == (old.manifest_bytes, old.model_bytes)  # only the signature
        assert validate_package(path.read_bytes(), trusted_keys=new_keys, accepted_versions={}).key_id in new_keys
        with pytest.raises(ModelPackageError, match="signed by an unknown key"):
            validate(path.read_bytes())  # the old key no longer signs it

    # A file changed since it was signed, or signed by a key nobody trusts, is not blessed; nothing is written.
    stranger, tampered = tmp_path / "stranger.cqcpkg", tmp_path / "tampered.cqcpkg"
    stranger.write_bytes(make(key=STRANGER))
    data = bytearray(make())
    data[-40] ^= 1  # inside model.onnx
    tampered.write_bytes(bytes(data))
    for bad in (stranger, tampered):
        original = bad.read_bytes()
        rc, _, err = _cli(capsys, "release-sign", shipped, bad, "--public-out", trusted_dir / "project-4.pub",
                          "--trusted-dir", trusted_dir)
        assert rc == 2 and "does not verify" in err and bad.name in err
        assert bad.read_bytes() == original and not (trusted_dir / "project-4.pub").exists()
    rc, _, err = _cli(capsys, "release-sign", fresh, "--public-out", public, "--trusted-dir", trusted_dir)
    assert rc == 2 and "never overwritten" in err


def test_new_keys_refuse_a_short_passphrase_and_warn_without_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(package_cli.PASSPHRASE_ENV, "x" * (package_cli.MIN_PASSPHRASE_CHARS - 1))
    rc, _, err = _cli(capsys, "keygen", "--out", tmp_path / "keys")
    assert rc == 2 and "too short" in err and not (tmp_path / "keys" / "signing.pem").exists()
    rc, _, err = _cli(capsys, "project-key", "--private-out", tmp_path / "p.pem", "--public-out", tmp_path / "p.pub")
    assert rc == 2 and "too short" in err and not (tmp_path / "p.pem").exists()

    rc, out, err = _cli(capsys, "keygen", "--out", tmp_path / "keys", "--no-passphrase")
    assert rc == 0 and "WITHOUT a passphrase" in err
    private = Path(json.loads(out)["private_key"])
    assert b"ENCRYPTED" not in private.read_bytes()
    assert pkg.private_key_id(pkg.load_private_key(private.read_bytes()))  # usable as it is


def test_an_existing_key_is_refused_before_the_passphrase_is_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(package_cli.PASSPHRASE_ENV, raising=False)
    asked = []
    monkeypatch.setattr(package_cli.getpass, "getpass", lambda prompt: asked.append(prompt) or "long enough secret")
    (tmp_path / "signing.pub").write_text("already here")
    rc, _, err = _cli(capsys, "keygen", "--out", tmp_path)
    assert rc == 2 and "never overwritten" in err and asked == []
    rc, out, err = _cli(capsys, "keygen", "--out", tmp_path, "--name", "second")
    assert rc == 0, err
    assert asked == ["New key passphrase: ", "Repeat: "]
    assert b"ENCRYPTED" in (tmp_path / "second.pem").read_bytes()


def test_only_package_py_imports_cryptography_in_detection():
    import ast

    importers = set()
    for path in (Path(pkg.__file__).parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] == "cryptography" for n in names):
                importers.add(path.name)
    assert importers == {"package.py"}
