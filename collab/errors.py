"""Typed errors of the collaboration package; every message is safe to show (no key material, no image data)."""
from __future__ import annotations

from analysis.errors import CrystalQCError


class CollabError(CrystalQCError):
    """Base class of the collaboration errors."""


class RecipientKeyError(CollabError, ValueError):
    """A researcher public key (``age1...``) or identity (``AGE-SECRET-KEY-1...``) is malformed or unknown."""


class ExportBuildError(CollabError, ValueError):
    """The training set cannot be built from the chosen analyses and options."""


class DecryptionFailedError(CollabError):
    """An export cannot be decrypted: not meant for this key, damaged or altered."""


class ExportFormatError(CollabError):
    """A decrypted export does not have the expected layout (archive members, manifest, hashes)."""


class ExpiredExportError(CollabError):
    """The export's expiry date has passed; the plant agreed to its use only until then."""
