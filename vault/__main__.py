"""Command line for the vault::

    python -m vault init   [--path DIR] [--user NAME] [--kdf-memory-mib N --kdf-iterations N --kdf-lanes N]
    python -m vault check  [--path DIR]     verify every entry, the index and the audit chain (exit 1 on a problem)
    python -m vault passwd [--path DIR] [--recovery]   change the passphrase (or reset it with the recovery key)
    python -m vault list   [--path DIR] [--prefix P]
    python -m vault gc     [--path DIR]     remove left-overs of interrupted writes
    python -m vault audit  [--path DIR]     print the audit log and verify its chain (exit 1 if broken)
    python -m vault accept-restore [--path DIR]   accept a vault restored from an older backup

The passphrase is asked with a hidden prompt, or read from CRYSTALQC_PASSPHRASE (scripts, tests); a new passphrase
from CRYSTALQC_NEW_PASSPHRASE, a recovery key from CRYSTALQC_RECOVERY_KEY. ``--path`` defaults to CRYSTALQC_VAULT or
~/.local/share/crystal-qc/vault. Exit codes: 0 ok, 1 problems found, 2 error (message on stderr).
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys

from vault.errors import VaultError, WrongPassphraseError
from vault.format import KdfParams
from vault.store import Vault, default_vault_path

PASS_ENV = "CRYSTALQC_PASSPHRASE"
NEW_PASS_ENV = "CRYSTALQC_NEW_PASSPHRASE"
RECOVERY_ENV = "CRYSTALQC_RECOVERY_KEY"


class _UsageError(Exception):
    pass


def _secret(env: str, prompt: str, *, confirm: bool = False) -> str:
    value = os.environ.get(env)
    if value is not None:
        return value
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat: ") != value:
        raise _UsageError("The two entries differ; nothing was changed.")
    return value


def _open(args: argparse.Namespace, *, allow_rollback: bool = False) -> Vault:
    passphrase = _secret(PASS_ENV, "Vault passphrase: ")
    try:
        return Vault.open(args.path, passphrase, user=args.user, allow_rollback=allow_rollback)
    except WrongPassphraseError:
        Vault.record_failed_unlock(args.path, user=args.user)
        raise


def cmd_init(args: argparse.Namespace) -> int:
    params = KdfParams.default()
    params = KdfParams(memory_kib=(args.kdf_memory_mib * 1024) if args.kdf_memory_mib else params.memory_kib,
                       iterations=args.kdf_iterations or params.iterations, lanes=args.kdf_lanes or params.lanes)
    passphrase = _secret(PASS_ENV, "New vault passphrase: ", confirm=True)
    vault, recovery_key = Vault.create(args.path, passphrase, kdf_params=params, user=args.user)
    vault.lock()
    print(f"Created the vault in {vault.path}.")
    print("RECOVERY KEY (shown only now; print it or write it down and keep it offline, away from the PC):")
    print(f"    {recovery_key}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with _open(args) as vault:
        report = vault.check()
    print(report.summary())
    return 0 if report.ok else 1


def cmd_passwd(args: argparse.Namespace) -> int:
    if args.recovery:
        recovery_key = _secret(RECOVERY_ENV, "Recovery key: ")
        new = _secret(NEW_PASS_ENV, "New passphrase: ", confirm=True)
        with Vault.open_with_recovery_key(args.path, recovery_key, user=args.user) as vault:
            vault.reset_passphrase(recovery_key, new)
    else:
        old = _secret(PASS_ENV, "Current passphrase: ")
        new = _secret(NEW_PASS_ENV, "New passphrase: ", confirm=True)
        try:
            vault = Vault.open(args.path, old, user=args.user)
        except WrongPassphraseError:
            Vault.record_failed_unlock(args.path, user=args.user)
            raise
        with vault:
            vault.change_passphrase(old, new)
    print("Passphrase changed.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as vault:
        for e in vault.list(args.prefix):
            print(f"{e.modified}  {e.size_bytes:>12}  {e.kind:<10} v{e.version:<4} {e.name}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _open(args) as vault:
        report = vault.gc()
    print(f"Removed {report.removed_files} left-over file(s), {report.freed_bytes} bytes.")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    with _open(args) as vault:
        records = vault.audit.entries()
        ok, bad, message = vault.audit.verify()
    for r in records:
        print(f"{r.seq:>6}  {r.time}  {r.user or '-':<16} {r.event:<18} {json.dumps(r.details, ensure_ascii=False)}")
    print(("OK: " if ok else f"BROKEN at record {bad}: ") + message)
    return 0 if ok else 1


def cmd_accept_restore(args: argparse.Namespace) -> int:
    with _open(args, allow_rollback=True):
        pass
    print("Accepted the current (restored) state of the vault.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", default=None, help=f"vault folder (default: {default_vault_path()})")
    common.add_argument("--user", default=None, help="name recorded in the audit log (default: login name)")
    ap = argparse.ArgumentParser(prog="python -m vault", description="crystal-QC encrypted vault")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", parents=[common], help="create a vault")
    p.add_argument("--kdf-memory-mib", type=int, default=None)
    p.add_argument("--kdf-iterations", type=int, default=None)
    p.add_argument("--kdf-lanes", type=int, default=None)
    p.set_defaults(func=cmd_init)
    sub.add_parser("check", parents=[common], help="verify everything").set_defaults(func=cmd_check)
    p = sub.add_parser("passwd", parents=[common], help="change the passphrase")
    p.add_argument("--recovery", action="store_true", help="use the recovery key instead of the old passphrase")
    p.set_defaults(func=cmd_passwd)
    p = sub.add_parser("list", parents=[common], help="list entries")
    p.add_argument("--prefix", default="")
    p.set_defaults(func=cmd_list)
    sub.add_parser("gc", parents=[common], help="remove left-over files").set_defaults(func=cmd_gc)
    sub.add_parser("audit", parents=[common], help="show and verify the audit log").set_defaults(func=cmd_audit)
    sub.add_parser("accept-restore", parents=[common],
                   help="accept a vault restored from an older backup").set_defaults(func=cmd_accept_restore)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.user is None:
        try:
            args.user = getpass.getuser()
        except (KeyError, OSError):
            args.user = ""
    try:
        return args.func(args)
    except (VaultError, _UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, disk full, read-only medium
        print(f"error: {e.strerror or type(e).__name__}: {e.filename or ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
