"""Command line of the model packages: ``python -m detection.package COMMAND`` (researcher and lead side).

Commands::

    keygen      --out KEYDIR [--name signing] [--no-passphrase]    new Ed25519 key pair (private key 0600, PEM)
    build       --model model.onnx [--manifest-from manifest.json] --author A --training-data T
                [--name N --version V --description D --license L --metrics metrics.json] [--key KEY] --out PKG
    sign        PKG --key KEY [--out OUT] [--force]                 add the signature (in place by default)
    verify      PKG [--trusted-key PUB ...] [--trusted-dir DIR] [--accepted NAME=VERSION ...] [--no-sandbox]
    inspect     PKG                                                 show the manifest and signer (NOT verified)
    project-key [--private-out FILE] [--public-out weights/trusted_keys/project.pub] [--no-passphrase]
    pack-folder weights/NAME (--key KEY | --unsigned) [--author A --training-data T] [--out weights/NAME.cqcpkg]
    release-sign PKG [PKG ...] --public-out weights/trusted_keys/project-N.pub
                                                                    sign with a new one-shot key, never written

Private keys are written passphrase-protected (PKCS#8, the best scheme ``cryptography`` offers) unless
``--no-passphrase`` is given: a copied key file alone must not let anyone sign models that plants will trust. The
passphrase comes from ``CRYSTALQC_SIGNING_PASSPHRASE`` or a hidden prompt (asked twice for a new key; at least
MIN_PASSPHRASE_CHARS characters), and is read the same way when a key is used.
Exit codes: 0 ok, 1 the package was refused (verify), 2 any other error.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from analysis.errors import CrystalQCError, ModelPackageError
from detection import package as pkg

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TRUSTED_DIR = ROOT / "weights" / "trusted_keys"
PASSPHRASE_ENV = "CRYSTALQC_SIGNING_PASSPHRASE"
#: Shortest passphrase accepted for a new private key.
MIN_PASSPHRASE_CHARS = 12
_MAX_JSON_FILE = 1024 * 1024


def default_project_key_path() -> Path:
    """Where the project's private signing key lives: outside the repository, in the user's config folder."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "crystal-qc" / "project_signing_key.pem"


def write_file(path: Path, data: bytes, *, mode: int = 0o644, force: bool = False) -> None:
    """Write ``data`` atomically (temp file, fsync, rename) with ``mode``; refuse to replace a file without ``force``.

    Raises ModelPackageError when ``path`` exists and ``force`` is False; OSError from the file system.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ModelPackageError(f"{path} exists; add --force to replace it.")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_new_key(path: Path, pem: bytes) -> None:
    """Create a private key file (mode 0600, parent folder 0700); never replaces an existing file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise ModelPackageError(f"{path} exists; a signing key is never overwritten. Choose another path.") from e
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > cap:
            raise ModelPackageError(f"{path} is {size} bytes; a {what} is at most {cap} bytes.")
        return path.read_bytes()
    except OSError as e:
        raise ModelPackageError(f"Cannot read {what} {path}: {e.strerror or e}") from e


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read_capped(path, _MAX_JSON_FILE, what).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelPackageError(f"{path} is not valid JSON.") from e


def _passphrase(prompt: str, *, confirm: bool = False) -> str:
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != first:
        raise ModelPackageError("The passphrases differ.")
    if not first:
        raise ModelPackageError("An empty passphrase is not allowed.")
    return first


def new_key_passphrase(*, protect: bool) -> str | None:
    """The passphrase for a new private key (None when ``protect`` is False; a warning says what that means).

    Raises ModelPackageError when the passphrase is shorter than MIN_PASSPHRASE_CHARS or its repetition differs.
    """
    if not protect:
        print("warning: the private key is written WITHOUT a passphrase; anyone who copies the file can sign "
              "models. Keep it on an offline medium.", file=sys.stderr)
        return None
    phrase = _passphrase("New key passphrase: ", confirm=True)
    if len(phrase) < MIN_PASSPHRASE_CHARS:
        raise ModelPackageError(f"The passphrase is too short: use at least {MIN_PASSPHRASE_CHARS} characters "
                                "(a few unrelated words are easy to remember). No key was written.")
    return phrase


def load_key_file(path: Path) -> pkg.Ed25519PrivateKey:
    """Load a private signing key file, asking for its passphrase when it is encrypted."""
    pem = _read_capped(Path(path), 64 * 1024, "private key")
    if b"ENCRYPTED" in pem:
        return pkg.load_private_key(pem, passphrase=_passphrase(f"Passphrase for {path}: "))
    return pkg.load_private_key(pem)


def keygen(out_dir: Path, *, name: str = "signing", passphrase: str | None = None) -> tuple[Path, Path, str]:
    """Create ``out_dir/NAME.pem`` (private, 0600) and ``out_dir/NAME.pub``; return (private, public, key id)."""
    key = pkg.generate_private_key()
    private, public = out_dir / f"{name}.pem", out_dir / f"{name}.pub"
    if public.exists():
        raise ModelPackageError(f"{public} exists; choose another --name or folder.")
    write_new_key(private, pkg.private_key_pem(key, passphrase=passphrase))
    raw = pkg.public_key_of(key)
    write_file(public, pkg.public_key_pem(raw))
    return private, public, pkg.fingerprint(raw)


def project_key(*, private_out: Path | None = None, public_out: Path | None = None,
                passphrase: str | None = None) -> tuple[Path, Path, str]:
    """Create the project signing key: private key outside the repo (default :func:`default_project_key_path`),
    encrypted with ``passphrase`` when given, public key into weights/trusted_keys/project.pub (commit it). Never
    overwrites either file."""
    private_out = private_out or default_project_key_path()
    public_out = public_out or TRUSTED_DIR / "project.pub"
    if public_out.exists():
        raise ModelPackageError(f"{public_out} exists; the project key was already created.")
    key = pkg.generate_private_key()
    write_new_key(private_out, pkg.private_key_pem(key, passphrase=passphrase))
    raw = pkg.public_key_of(key)
    public_out.parent.mkdir(parents=True, exist_ok=True)
    write_file(public_out, pkg.public_key_pem(raw))
    return private_out, public_out, pkg.fingerprint(raw)


def release_sign(packages: Sequence[Path], *, public_out: Path, trusted_dir: Path = TRUSTED_DIR) -> str:
    """Sign ``packages`` in place with a new one-shot key and write only its public half to ``public_out``.

    The private key exists in this process's memory only: it is never written anywhere, so it cannot be lost with a
    development machine or copied later, and the next release brings its own key (delete the old ``.pub`` in the
    same commit). A package that is already signed must verify against ``trusted_dir`` first, so a file changed
    since it was signed is never blessed; an unsigned one (a fresh ``build`` without ``--key``) is checked like any
    package. Every re-signed package then passes :func:`detection.package.validate_package` against the new key
    (layout, manifest, sha256, ONNX static checks) before anything is written. Returns the new key's fingerprint.

    Raises ModelPackageError (nothing written): ``public_out`` exists, a package does not verify or is malformed.
    """
    public_out = Path(public_out)
    if public_out.exists():
        raise ModelPackageError(f"{public_out} exists; a key file is never overwritten. Choose the next number.")
    if not packages:
        raise ModelPackageError("Name at least one package to sign.")
    trusted = pkg.load_trusted_keys(trusted_dir)
    limit = pkg.PackageLimits().max_package_bytes
    originals = []
    for path in packages:
        data = _read_capped(Path(path), limit, "model package")
        if pkg.unpack(data).signature_bytes is not None:
            try:
                pkg.validate_package(data, trusted_keys=trusted, accepted_versions={})
            except ModelPackageError as e:
                raise ModelPackageError(f"{path}: its present signature does not verify against {trusted_dir} "
                                        f"({e}); re-signing it would bless an unverified model.") from e
        originals.append(data)
    key = pkg.generate_private_key()
    raw = pkg.public_key_of(key)
    signed = [pkg.sign_package(data, key, replace=True) for data in originals]
    del key
    key_id = pkg.fingerprint(raw)
    for path, data in zip(packages, signed):
        try:
            pkg.validate_package(data, trusted_keys={key_id: raw}, accepted_versions={})
        except ModelPackageError as e:
            raise ModelPackageError(f"{path}: {e}") from e
    public_out.parent.mkdir(parents=True, exist_ok=True)
    write_file(public_out, pkg.public_key_pem(raw))
    for path, data in zip(packages, signed):
        write_file(Path(path), data, force=True)
    return key_id


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _fields(base: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    fields = dict(base)
    for key in ("name", "version", "author", "training_data", "description", "license"):
        value = getattr(args, key, None)
        if value is not None:
            fields[key] = value
    if getattr(args, "metrics", None):
        fields["metrics"] = _read_json(args.metrics, "metrics file")
    fields.setdefault("created", _now())
    return fields


def package_folder(folder: Path, *, key: pkg.Ed25519PrivateKey | None, fields: Mapping[str, Any] | None = None,
                   out: Path | None = None, force: bool = False) -> Path:
    """Sign an exported ``weights/NAME/`` folder (model.onnx + manifest.json) into ``weights/NAME.cqcpkg``.

    ``fields`` override/complete the folder's manifest (author, training_data, ...). ``key`` None writes it unsigned
    (for :func:`release_sign`, or ``quantize``, which reads its source unverified). Returns the package path.
    Raises ModelPackageError.
    """
    folder = Path(folder)
    limits = pkg.PackageLimits()
    model = _read_capped(folder / pkg.MODEL_MEMBER, limits.onnx.max_model_bytes, "model")
    manifest = _read_json(folder / "manifest.json", "manifest")
    if not isinstance(manifest, dict):
        raise ModelPackageError(f"{folder / 'manifest.json'} is not a JSON object.")
    manifest.update(fields or {})
    manifest.setdefault("created", _now())
    data = pkg.build_package(manifest, model, key=key)
    out = out or folder.parent / f"{folder.name}{pkg.SUFFIX}"
    write_file(out, data, force=force)
    return out


def _summary(contents: pkg.PackageContents, manifest: pkg.Manifest) -> dict[str, Any]:
    sig = None
    if contents.signature_bytes is not None:
        try:
            sig = json.loads(contents.signature_bytes).get("key_id")
        except (ValueError, AttributeError):
            sig = "unreadable"
    return {
        "name": manifest.name, "version": manifest.version, "classes": list(manifest.meta.names),
        "input_size": list(manifest.meta.imgsz), "stride": manifest.meta.stride, "opset": manifest.opset,
        "ir_version": manifest.ir_version, "sha256": manifest.sha256, "size_bytes": manifest.size_bytes,
        "author": manifest.author, "created": manifest.created, "training_data": manifest.data["training_data"],
        "metrics": manifest.data["metrics"],
        "signed_by": pkg.format_fingerprint(sig) if isinstance(sig, str) and len(sig) == 64 else sig,
    }


def _accepted(items: list[str]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep:
            raise ModelPackageError(f"--accepted {item!r}: use NAME=VERSION.")
        pkg.parse_version(version)
        table.setdefault(name, []).append(version)
    return table


def _cmd_verify(args: argparse.Namespace) -> int:
    data = _read_capped(args.package, pkg.PackageLimits().max_package_bytes, "model package")
    trusted: dict[str, bytes] = {}
    for path in args.trusted_key:
        raw = pkg.public_key_raw(_read_capped(path, 4096, "public key"))
        trusted[pkg.fingerprint(raw)] = raw
    if args.trusted_dir or not args.trusted_key:
        trusted.update(pkg.load_trusted_keys(args.trusted_dir or TRUSTED_DIR))
    if not trusted:
        raise ModelPackageError("No trusted key: pass --trusted-key PUB or put *.pub files in weights/trusted_keys.")
    try:
        vp = pkg.validate_package(data, trusted_keys=trusted, accepted_versions=_accepted(args.accepted))
        report = None if args.no_sandbox else pkg.first_inference(vp, timeout_s=args.timeout_s,
                                                                  memory_mb=args.memory_mb)
    except ModelPackageError as e:
        print(f"REFUSED: {e}", file=sys.stderr)
        return 1
    out = {"ok": True, "name": vp.manifest.name, "version": vp.manifest.version,
           "signed_by": pkg.format_fingerprint(vp.key_id), "nodes": vp.model.n_nodes,
           "parameters": vp.model.n_parameters}
    if report is not None:
        out["sandbox"] = {"output_shapes": report.output_shapes, "load_s": round(report.load_s, 3),
                          "blank_s": round(report.blank_s, 3), "random_s": round(report.random_s, 3),
                          "peak_rss_mb": round(report.peak_rss_mb, 1)}
    print(json.dumps(out, indent=2))
    return 0


def _refuse_existing(*paths: Path) -> None:
    """Stop before asking for a new key's passphrase when one of its files already exists (never replaced)."""
    for path in paths:
        if Path(path).exists():
            raise ModelPackageError(f"{path} exists; a key file is never overwritten. Choose another name or folder.")


def _run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        _refuse_existing(args.out / f"{args.name}.pem", args.out / f"{args.name}.pub")
        private, public, key_id = keygen(args.out, name=args.name,
                                         passphrase=new_key_passphrase(protect=args.passphrase))
        print(json.dumps({"private_key": str(private), "public_key": str(public),
                          "fingerprint": pkg.format_fingerprint(key_id)}, indent=2))
    elif args.command == "project-key":
        _refuse_existing(args.private_out or default_project_key_path(), args.public_out or TRUSTED_DIR / "project.pub")
        private, public, key_id = project_key(private_out=args.private_out, public_out=args.public_out,
                                              passphrase=new_key_passphrase(protect=args.passphrase))
        print(json.dumps({"private_key": str(private), "public_key": str(public),
                          "fingerprint": pkg.format_fingerprint(key_id)}, indent=2))
    elif args.command == "build":
        model = _read_capped(args.model, pkg.PackageLimits().onnx.max_model_bytes, "model")
        base = _read_json(args.manifest_from, "manifest") if args.manifest_from else {}
        if not isinstance(base, dict):
            raise ModelPackageError(f"{args.manifest_from} is not a JSON object.")
        key = load_key_file(args.key) if args.key else None
        data = pkg.build_package(_fields(base, args), model, key=key)
        write_file(args.out, data, force=args.force)
        print(json.dumps({"package": str(args.out), "signed": key is not None, "bytes": len(data)}, indent=2))
    elif args.command == "sign":
        data = _read_capped(args.package, pkg.PackageLimits().max_package_bytes, "model package")
        key = load_key_file(args.key)
        signed = pkg.sign_package(data, key, replace=args.force)
        out = args.out or args.package
        write_file(out, signed, force=args.force or out == args.package)
        print(json.dumps({"package": str(out), "signed_by": pkg.format_fingerprint(pkg.private_key_id(key))},
                         indent=2))
    elif args.command == "verify":
        return _cmd_verify(args)
    elif args.command == "inspect":
        contents = pkg.unpack(_read_capped(args.package, pkg.PackageLimits().max_package_bytes, "model package"))
        summary = _summary(contents, pkg.parse_manifest(contents.manifest_bytes))
        summary["note"] = "signature and model NOT verified; use verify"
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    elif args.command == "pack-folder":
        fields = {k: v for k, v in (("author", args.author), ("training_data", args.training_data),
                                    ("description", args.description)) if v is not None}
        if args.version:
            fields["version"] = args.version
        key = None if args.unsigned else load_key_file(args.key or default_project_key_path())
        out = package_folder(args.folder, key=key, fields=fields, out=args.out, force=args.force)
        print(json.dumps({"package": str(out), "signed": key is not None}, indent=2))
    elif args.command == "release-sign":
        key_id = release_sign(args.packages, public_out=args.public_out, trusted_dir=args.trusted_dir or TRUSTED_DIR)
        print(json.dumps({"packages": [str(p) for p in args.packages], "public_key": str(args.public_out),
                          "fingerprint": pkg.format_fingerprint(key_id),
                          "private_key": "none: used in memory, never written"}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detection.package", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="create a researcher key pair")
    k.add_argument("--out", type=Path, required=True, help="folder for NAME.pem (private) and NAME.pub")
    k.add_argument("--name", default="signing")
    pk = sub.add_parser("project-key", help="create the project key (private key outside the repository)")
    pk.add_argument("--private-out", type=Path, default=None, help=f"default {default_project_key_path()}")
    pk.add_argument("--public-out", type=Path, default=None, help="default weights/trusted_keys/project.pub")
    for parser in (k, pk):
        protect = parser.add_mutually_exclusive_group()
        protect.add_argument("--passphrase", dest="passphrase", action="store_true", default=True,
                             help=f"encrypt the private key (the default; prompt or ${PASSPHRASE_ENV})")
        protect.add_argument("--no-passphrase", dest="passphrase", action="store_false",
                             help="write the private key unencrypted (keep it offline)")
    b = sub.add_parser("build", help="build a package from model.onnx (+ an exported manifest.json)")
    b.add_argument("--model", type=Path, required=True)
    b.add_argument("--manifest-from", type=Path, default=None, help="manifest.json written by detection.export")
    for opt in ("name", "version", "author", "training-data", "description", "license"):
        b.add_argument(f"--{opt}", default=None)
    b.add_argument("--metrics", type=Path, default=None, help="JSON file with the researcher's own metrics")
    b.add_argument("--key", type=Path, default=None, help="sign at once with this private key")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--force", action="store_true")
    s = sub.add_parser("sign", help="sign a package")
    s.add_argument("package", type=Path)
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("--out", type=Path, default=None)
    s.add_argument("--force", action="store_true", help="replace an existing signature / output file")
    v = sub.add_parser("verify", help="run every check an installing app runs")
    v.add_argument("package", type=Path)
    v.add_argument("--trusted-key", type=Path, action="append", default=[])
    v.add_argument("--trusted-dir", type=Path, default=None, help="default weights/trusted_keys")
    v.add_argument("--accepted", action="append", default=[], help="NAME=VERSION already accepted (rollback check)")
    v.add_argument("--no-sandbox", action="store_true", help="skip the first inference")
    v.add_argument("--timeout-s", type=float, default=60.0)
    v.add_argument("--memory-mb", type=int, default=2048)
    i = sub.add_parser("inspect", help="show a package's manifest (nothing verified)")
    i.add_argument("package", type=Path)
    f = sub.add_parser("pack-folder", help="sign an exported weights/NAME folder into weights/NAME.cqcpkg")
    f.add_argument("folder", type=Path)
    signing = f.add_mutually_exclusive_group()
    signing.add_argument("--key", type=Path, default=None, help=f"default {default_project_key_path()}")
    signing.add_argument("--unsigned", action="store_true",
                         help="write it unsigned (then `release-sign` it, or quantise it first)")
    for opt in ("author", "training-data", "description", "version"):
        f.add_argument(f"--{opt}", default=None)
    f.add_argument("--out", type=Path, default=None)
    f.add_argument("--force", action="store_true")
    r = sub.add_parser("release-sign", help="sign packages in place with a new one-shot key (private half never "
                                            "written); write its public key")
    r.add_argument("packages", type=Path, nargs="+")
    r.add_argument("--public-out", type=Path, required=True, help="e.g. weights/trusted_keys/project-3.pub")
    r.add_argument("--trusted-dir", type=Path, default=None,
                   help="keys an already-signed package must verify against first; default weights/trusted_keys")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except CrystalQCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
