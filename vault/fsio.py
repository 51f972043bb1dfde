"""File-system primitives of the vault: atomic writes, directory fsync, capped reads and the vault lock.

Atomic write = write a temp file ``.tmp-<random>`` in the destination folder (mode 0600), fsync it, rename it over the
destination, fsync the folder. A crash at any point leaves either the old or the new file plus, at worst, a temp file
that ``Vault.gc`` removes.

Every step calls an optional *fault hook* with a step name (e.g. ``"blob.renamed"``); tests use it to simulate a crash
at that exact point (the hook raises a ``BaseException`` that skips the clean-up a real kill would skip too).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

FaultHook = Callable[[str], None]
TEMP_PREFIX = ".tmp-"


def _hook(fault_hook: FaultHook | None, step: str) -> None:
    if fault_hook is not None:
        fault_hook(step)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, creations) to disk. No-op where the OS cannot open folders (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, fault_hook: FaultHook | None = None, step: str = "file",
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and (unless ``durable`` is False) durably.

    Fault-hook steps: ``<step>.tmp_written``, ``<step>.fsynced``, ``<step>.renamed``, ``<step>.dir_fsynced``.
    ``durable=False`` skips both fsyncs (still atomic: readers see the old or the new file; after a power cut the
    file may be old or empty) - only for best-effort hints such as the seen file.

    Raises:
        OSError: the disk is full, read-only, ... (the temp file is removed on ordinary errors).
    """
    tmp = path.parent / (TEMP_PREFIX + os.urandom(8).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            _hook(fault_hook, f"{step}.tmp_written")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        _hook(fault_hook, f"{step}.fsynced")
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    _hook(fault_hook, f"{step}.renamed")
    if durable:
        fsync_dir(path.parent)
    _hook(fault_hook, f"{step}.dir_fsynced")


def read_capped(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, or None if it is larger than ``max_bytes`` (checked before reading).

    Raises:
        FileNotFoundError / OSError: as ``open``.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            return None
        data = f.read(max_bytes + 1)
    return None if len(data) > max_bytes else data


def remove_quietly(path: Path) -> bool:
    """Delete a file; False (and a debug log) if it was already gone or could not be removed."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        logger.warning("could not remove a vault file (%s); `gc` will retry", type(e).__name__)
        return False


class PathLock:
    """Re-entrant lock for one vault folder: a thread lock for this process plus an exclusive OS file lock on
    ``<vault>/lock`` for other processes (CLI `gc` while the app runs). Only the outermost acquire takes the file
    lock. Obtain instances with :func:`lock_for` so that every ``Vault`` object on the same folder shares one."""

    def __init__(self, folder: Path):
        self._folder = folder
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> PathLock:
        self._rlock.acquire()
        try:
            if self._depth == 0:
                self._fd = _lock_file(self._folder / "lock")
            self._depth += 1
        except BaseException:
            self._rlock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                _unlock_file(self._fd)
                self._fd = None
        finally:
            self._rlock.release()


_registry: dict[str, PathLock] = {}
_registry_guard = threading.Lock()


def lock_for(folder: Path) -> PathLock:
    """The process-wide :class:`PathLock` of a vault folder (keyed by its resolved path)."""
    key = os.path.normcase(str(folder.resolve()))
    with _registry_guard:
        lock = _registry.get(key)
        if lock is None:
            lock = _registry[key] = PathLock(folder)
        return lock


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_file(path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        return fd

    def _unlock_file(fd: int) -> None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
else:
    import fcntl

    def _lock_file(path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _unlock_file(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
