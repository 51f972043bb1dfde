"""Typed errors of the vault, all deriving from :class:`analysis.errors.CrystalQCError`.

Messages are written for a technician and never contain passphrases, keys, decrypted bytes or entry names (names are
decrypted data too; the caller knows which name it asked for).
"""
from __future__ import annotations

from analysis.errors import CrystalQCError


class VaultError(CrystalQCError):
    """Base class of every error the vault raises on purpose."""


class VaultNotFoundError(VaultError, FileNotFoundError):
    """There is no vault at the given folder (no header file)."""


class VaultExistsError(VaultError, FileExistsError):
    """``create`` was asked to use a folder that already holds a vault or other files."""


class WrongPassphraseError(VaultError):
    """The passphrase (or recovery key) does not unlock this vault. The message is deliberately generic."""


class WrongRecoveryKeyError(WrongPassphraseError):
    """The recovery key is well formed but does not unlock this vault."""


class RecoveryKeyFormatError(VaultError, ValueError):
    """The typed recovery key is not of the expected form (wrong length, characters or checksum: a typo)."""


class WeakPassphraseError(VaultError, ValueError):
    """A new passphrase is too short or otherwise refused."""


class VaultCorruptedError(VaultError):
    """A vault file is damaged or was tampered with (failed authentication, bad layout, wrong size)."""


class KdfParamsError(VaultCorruptedError, ValueError):
    """Argon2id parameters are outside the enforced bounds; refused before any key derivation is attempted."""


class VaultRollbackError(VaultCorruptedError):
    """The vault state is older than a state already seen: a file or the whole folder was rolled back."""


class VaultLockedError(VaultError):
    """The vault object was locked (keys dropped); open it again."""


class EntryNotFoundError(VaultError, KeyError):
    """No entry with the requested name."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else "No such entry in the vault."


class InvalidEntryError(VaultError, ValueError):
    """An entry name, kind, metadata dict or data argument is not acceptable."""


class AuditLogError(VaultError, ValueError):
    """An audit record argument (event, user, details) is not acceptable."""
