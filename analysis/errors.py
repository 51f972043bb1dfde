"""Typed errors with messages a technician can act on.

Every error raised on purpose by the analysis package derives from :class:`CrystalQCError`, so callers (the CLI and
the app) can show ``str(err)`` to the user instead of a traceback.
"""
from __future__ import annotations


class CrystalQCError(Exception):
    """Base class of all errors the product raises on purpose."""


class InvalidImageError(CrystalQCError, ValueError):
    """The file is not an image we can read (wrong type, corrupt, truncated)."""


class UnsupportedFormatError(InvalidImageError):
    """The bytes are not PNG, JPEG, TIFF or BMP (checked by magic bytes, not by file name)."""


class ImageTooLargeError(InvalidImageError):
    """The declared image size exceeds the pixel or byte cap; refused before decoding."""


class DetectorUnavailableError(CrystalQCError):
    """The requested detector cannot be used (e.g. no model file)."""


class ModelPackageError(CrystalQCError):
    """A model package (ONNX bytes, metadata, manifest) is unreadable, malformed or inconsistent."""
