"""Encrypted local vault: every file the app keeps (images, results, settings, models) plus an audit log.

Public API (see docs/vault.md for the format and the threat model)::

    from vault import Vault
    vault, recovery_key = Vault.create(path, passphrase)      # show recovery_key once
    vault = Vault.open(path, passphrase, user="alice")        # WrongPassphraseError on a wrong passphrase
    vault.put(name, data, kind="image", meta={...}); vault.get(name); vault.list(prefix); vault.delete(name)
    vault.audit.append("import", user="alice", details={...}); vault.audit.verify()
    vault.check(); vault.gc(); vault.change_passphrase(old, new); vault.lock()

Never imports streamlit. Only :mod:`vault.crypto` imports ``cryptography``.
"""
from vault.audit import KNOWN_EVENTS, AuditLog, AuditRecord
from vault.errors import (AuditLogError, EntryNotFoundError, InvalidEntryError, KdfParamsError,
                          RecoveryKeyFormatError, VaultCorruptedError, VaultError, VaultExistsError, VaultLockedError,
                          VaultNotFoundError, VaultRollbackError, WeakPassphraseError, WrongPassphraseError,
                          WrongRecoveryKeyError)
from vault.format import KdfParams
from vault.layout import default_state_dir, default_vault_path
from vault.reports import CheckProblem, CheckReport, EntryInfo, GcReport
from vault.store import Vault

__all__ = [
    "KNOWN_EVENTS", "AuditLog", "AuditRecord", "AuditLogError", "EntryNotFoundError", "InvalidEntryError",
    "KdfParamsError", "RecoveryKeyFormatError", "VaultCorruptedError", "VaultError", "VaultExistsError",
    "VaultLockedError", "VaultNotFoundError", "VaultRollbackError", "WeakPassphraseError", "WrongPassphraseError",
    "WrongRecoveryKeyError", "KdfParams", "CheckProblem", "CheckReport", "EntryInfo", "GcReport", "Vault",
    "default_state_dir", "default_vault_path",
]
