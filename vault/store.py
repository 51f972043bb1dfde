"""The encrypted vault: a folder of authenticated ciphertexts with an encrypted index and an audit log.

Layout of a vault folder (names reveal roles, never content)::

    vault.hdr          header: vault id, Argon2id parameters, wrapped master key (passphrase slot + recovery slot)
    state              commit point: index generation + file id + SHA-256, audit anchor, sequence (HMAC'd)
    index-<32 hex>     the encrypted index (name -> entry id, version, size, sha256, times, kind, metadata)
    blobs/<32 hex>     one encrypted entry version per file (random ids)
    audit.log          encrypted, hash-chained audit records
    failed-unlocks     failed unlock attempts sealed to the vault's public key (written without any secret)
    lock               OS lock file (serialises writers across processes)

Write order (each step an atomic write: temp file, fsync, rename, fsync folder): blob -> index -> state. The state
rename is the commit point; a crash before it leaves the old state, after it the new one; stray files are orphans that
:meth:`Vault.gc` removes. A per-user *seen file* outside the vault remembers the highest state sequence opened on this
account, so a rolled-back state (even of the whole folder) is refused on this account (see docs/vault.md).

Typical use (one object per unlocked session; objects on the same folder share one lock)::

    v = Vault.open(path, passphrase, user="alice")
    v.put("images/2026-11-27/a.png", png_bytes, kind="image", meta={"pixel_size_um": 0.5})
    png = v.get("images/2026-11-27/a.png")
    v.audit.append("import", user="alice", details={"files": 1})
    v.lock()
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from vault import crypto, failed
from vault.audit import AuditLog, genesis_hash
from vault.errors import (EntryNotFoundError, InvalidEntryError, VaultCorruptedError, VaultError, VaultExistsError,
                          VaultLockedError, VaultRollbackError, WrongPassphraseError, WrongRecoveryKeyError)
from vault.format import (ID_BYTES, RECOVERY_SECRET_BYTES, SEEN_BYTES, SLOT_PASSPHRASE, SLOT_RECOVERY, STATE_BYTES,
                          Header, IndexRecord, KdfParams, State, blob_context, canonical_json, ciphertext_size,
                          decode_index, decode_seen, decode_state, encode_header, encode_index, encode_seen_body,
                          encode_state_body, format_recovery_key, index_context, normalize_name, parse_recovery_key,
                          validate_kind, validate_meta)
from vault.fsio import FaultHook, atomic_write, fsync_dir, lock_for, read_capped, remove_quietly
from vault.keyslots import GENERIC_UNLOCK_FAILURE, check_new_passphrase, make_slot, read_header, unwrap_slot
from vault.layout import (AUDIT_FILE, BLOB_DIR, FAILED_FILE, HEADER_FILE, INDEX_PREFIX, LOCK_FILE, MAX_ENTRY_BYTES,
                          MAX_INDEX_BYTES, STATE_FILE, clean_user, default_state_dir, default_vault_path, now_utc,
                          scan_files)
from vault.reports import CheckProblem, CheckReport, EntryInfo, GcReport

logger = logging.getLogger(__name__)



def _unwrap_with_recovery_key(header, recovery_key: str) -> bytes:
    """The master key unwrapped by the recovery-key slot of ``header``.

    Raises RecoveryKeyFormatError (a typo) or WrongRecoveryKeyError (no recovery slot, or not this vault's key).
    """
    secret = parse_recovery_key(recovery_key)
    slot = header.slot(SLOT_RECOVERY)
    if slot is None:
        raise WrongRecoveryKeyError("This vault has no recovery key.")
    try:
        return unwrap_slot(header, slot, crypto.derive_recovery_kek(secret, slot.salt))
    except crypto.AuthenticationFailed:
        raise WrongRecoveryKeyError("Could not unlock the vault: the recovery key is not correct.") from None

class Vault:
    """An unlocked vault. Create with :meth:`create`, open with :meth:`open` / :meth:`open_with_recovery_key`.

    Thread-safe: every operation holds the folder's lock (shared by all objects on the same folder in this process,
    plus an OS file lock for other processes) and first re-reads the small state file, so objects opened by several
    Streamlit sessions see each other's writes. Call :meth:`lock` when the session ends.
    """

    def __init__(self, path: Path, header: Header, master_key: bytearray, *, user: str, state_dir: Path | None,
                 fault_hook: FaultHook | None = None):
        """Internal: use the class methods."""
        self._path = Path(path)
        self._header = header
        self._vault_id = header.vault_id
        self._master: bytearray | None = master_key
        self._keys: crypto.SubKeys | None = crypto.derive_subkeys(master_key, header.vault_id)
        self._user = clean_user(user)
        self._state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._fault_hook = fault_hook
        self._lock = lock_for(self._path)
        self._state: State | None = None
        self._state_raw: bytes | None = None
        self._entries: dict[str, IndexRecord] = {}
        self.audit = AuditLog(self)
        if crypto.seal_public_key(self._keys.seal) != header.seal_public_key:
            self._wipe()
            raise VaultCorruptedError("The vault header does not belong to this master key; restore it from a backup.")

    # ================================================================== construction
    @classmethod
    def create(cls, path: str | Path | None, passphrase: str, *, kdf_params: KdfParams | None = None,
               user: str = "", state_dir: str | Path | None = None) -> tuple[Vault, str]:
        """Create a new vault folder and return ``(vault, recovery_key)``.

        The recovery key (9 groups of 4 characters) is shown once: the caller must display it and tell the user to
        keep it offline. ``path`` None means :func:`default_vault_path`. The folder is built under a temporary name
        next to ``path`` and renamed into place, so an interrupted create leaves no half vault.

        Raises:
            VaultExistsError: ``path`` exists and is not an empty folder.
            WeakPassphraseError: passphrase shorter than 10 characters.
            KdfParamsError: ``kdf_params`` outside the enforced bounds.
        """
        path = Path(path) if path is not None else default_vault_path()
        check_new_passphrase(passphrase)
        params = (kdf_params or KdfParams.default()).validate()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise VaultExistsError(f"{path} already exists and is not empty; choose a new folder for the vault.")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.creating-{os.urandom(6).hex()}"
        staging.mkdir(mode=0o700)
        master = bytearray(crypto.random_bytes(32))
        try:
            header, secret = cls._build(staging, master, passphrase, params, user=user, state_dir=state_dir)
            if path.exists():
                path.rmdir()  # empty, checked above
            os.replace(staging, path)
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            crypto.wipe(master)
            raise
        fsync_dir(path.parent)
        logger.info("created a vault")
        vault = cls(path, header, master, user=user, state_dir=state_dir)
        with vault._lock:
            vault._sync()
            vault.audit.append("vault_created", user=vault._user,
                               details={"kdf": {"memory_kib": params.memory_kib, "iterations": params.iterations,
                                                "lanes": params.lanes}})
        return vault, format_recovery_key(secret)

    @classmethod
    def _build(cls, staging: Path, master: bytearray, passphrase: str, params: KdfParams, *, user: str,
               state_dir: str | Path | None) -> tuple[Header, bytes]:
        """Write a complete new vault into the empty folder ``staging``: (header, recovery secret)."""
        (staging / BLOB_DIR).mkdir(mode=0o700)
        (staging / LOCK_FILE).touch(mode=0o600)
        vault_id = crypto.random_bytes(ID_BYTES)
        keys = crypto.derive_subkeys(master, vault_id)
        core = Header(vault_id, crypto.seal_public_key(keys.seal), ())
        keys.wipe()
        secret = crypto.random_bytes(RECOVERY_SECRET_BYTES)
        slots = (make_slot(core, SLOT_PASSPHRASE, master, passphrase=passphrase, params=params),
                 make_slot(core, SLOT_RECOVERY, master, recovery_secret=secret))
        header = Header(vault_id, core.seal_public_key, slots)
        atomic_write(staging / HEADER_FILE, encode_header(header))
        builder = cls(staging, header, bytearray(master), user=user, state_dir=state_dir)
        try:
            builder._commit_first_state()
        finally:
            builder._wipe()
        fsync_dir(staging / BLOB_DIR)
        fsync_dir(staging)
        return header, secret

    @classmethod
    def open(cls, path: str | Path | None, passphrase: str, *, user: str = "", allow_rollback: bool = False,
             state_dir: str | Path | None = None) -> Vault:
        """Unlock with the passphrase. Records ``unlock_ok`` (and failed attempts recorded since) in the audit log.

        Nothing is written when the passphrase is wrong; call :meth:`record_failed_unlock` for the audit trail.
        ``allow_rollback`` accepts a state older than one already seen on this account (after restoring a backup on
        purpose) and records ``rollback_accepted``.

        Raises:
            VaultNotFoundError: no vault there. WrongPassphraseError: wrong passphrase (generic message).
            KdfParamsError: header KDF parameters out of bounds (refused before deriving).
            VaultCorruptedError: damaged or tampered header, state or index. VaultRollbackError: rolled back.
        """
        path = Path(path) if path is not None else default_vault_path()
        if not isinstance(passphrase, str):
            raise TypeError("the passphrase must be a str")
        header, _ = read_header(path)
        slot = header.slot(SLOT_PASSPHRASE)
        kek = crypto.derive_passphrase_kek(passphrase, slot.kdf, slot.salt)
        try:
            master = unwrap_slot(header, slot, kek)
        except crypto.AuthenticationFailed:
            logger.info("unlock failed")
            raise WrongPassphraseError(GENERIC_UNLOCK_FAILURE) from None
        vault = cls(path, header, master, user=user, state_dir=state_dir)
        vault._after_unlock("unlock_ok", allow_rollback=allow_rollback)
        return vault

    @classmethod
    def open_with_recovery_key(cls, path: str | Path | None, recovery_key: str, *, user: str = "",
                               allow_rollback: bool = False, state_dir: str | Path | None = None) -> Vault:
        """Unlock with the recovery key shown at creation (then set a new passphrase with :meth:`reset_passphrase`).

        Raises:
            RecoveryKeyFormatError: a typo (length, characters, checksum). WrongRecoveryKeyError: not this vault's
            key. Otherwise as :meth:`open`.
        """
        path = Path(path) if path is not None else default_vault_path()
        header, _ = read_header(path)
        master = _unwrap_with_recovery_key(header, recovery_key)
        vault = cls(path, header, master, user=user, state_dir=state_dir)
        vault._after_unlock("recovery_unlock", allow_rollback=allow_rollback)
        return vault

    @staticmethod
    def exists_at(path: str | Path | None) -> bool:
        """True if ``path`` holds a vault header (nothing is decrypted)."""
        path = Path(path) if path is not None else default_vault_path()
        return (path / HEADER_FILE).is_file()

    @staticmethod
    def record_failed_unlock(path: str | Path | None, *, user: str = "") -> None:
        """Remember a failed unlock without any key (see :func:`vault.failed.record_failed_unlock`): the next
        successful unlock moves it into the audit log as ``unlock_failed``.

        Raises:
            VaultNotFoundError / VaultCorruptedError: no readable header.
        """
        failed.record_failed_unlock(Path(path) if path is not None else default_vault_path(), user=user)

    # ================================================================== properties and life cycle
    @property
    def path(self) -> Path:
        return self._path

    @property
    def vault_id(self) -> str:
        return self._vault_id.hex()

    @property
    def user(self) -> str:
        """The user name given at unlock (used for the audit records the vault writes itself)."""
        return self._user

    @property
    def is_locked(self) -> bool:
        return self._keys is None

    def lock(self) -> None:
        """Drop the keys and the cached index. Best effort: key buffers are overwritten, but Python may hold copies
        (immutable bytes, the allocator) and decrypted data returned by :meth:`get` belongs to the caller."""
        with self._lock:
            self._wipe()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock()

    def __repr__(self) -> str:
        return f"<Vault {self.vault_id[:8]} {'locked' if self.is_locked else 'unlocked'}>"

    def __getstate__(self):
        raise TypeError("a Vault holds keys and must not be pickled or cached (e.g. by st.cache_data)")

    def __del__(self):
        try:
            self._wipe()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def _wipe(self) -> None:
        if getattr(self, "_keys", None) is not None:
            self._keys.wipe()
        crypto.wipe(getattr(self, "_master", None))
        self._keys = None
        self._master = None
        self._entries = {}
        self._state = None
        self._state_raw = None

    def _require_keys(self) -> crypto.SubKeys:
        keys = self._keys
        if keys is None:
            raise VaultLockedError("The vault is locked; unlock it again with the passphrase.")
        return keys

    def _hook(self, step: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(step)

    # ================================================================== state, index, seen file
    def _seen_path(self) -> Path:
        return self._state_dir / "vaults" / f"{self._vault_id.hex()}.seen"

    def _read_seen(self) -> tuple[int, bytes] | None:
        try:
            raw = read_capped(self._seen_path(), SEEN_BYTES)
        except OSError:
            return None
        parsed = decode_seen(raw) if raw is not None else None
        if parsed is None:
            logger.warning("ignoring an unreadable seen file")
            return None
        vault_id, seq, digest, body, tag = parsed
        if vault_id != self._vault_id or not crypto.mac_ok(self._require_keys().seen_mac, body, tag):
            logger.warning("ignoring a seen file that failed authentication")
            return None
        return seq, digest

    def _write_seen(self, state: State, raw: bytes) -> None:
        body = encode_seen_body(self._vault_id, state.seq, hashlib.sha256(raw).digest())
        try:
            self._seen_path().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # best effort, not fsync'd: a lost update after a power cut only lowers the high-water mark by one step
            atomic_write(self._seen_path(), body + crypto.mac(self._require_keys().seen_mac, body), durable=False)
        except OSError as e:
            logger.warning("could not update the rollback guard (%s); rollback detection is weaker", type(e).__name__)

    def _commit_first_state(self) -> None:
        """Write the empty index (generation 1) and the first state of a new vault."""
        keys = self._require_keys()
        self._state = State(self._vault_id, seq=0, generation=0, index_id=bytes(ID_BYTES), index_sha256=bytes(32),
                            audit_count=0, audit_head=genesis_hash(self._vault_id), audit_size=0)
        self._commit_index({}, keys=keys, seen=False)

    def _sync(self) -> State:
        """Re-read the state file; reload the index if another object or process committed. Caller holds the lock.

        Raises:
            VaultCorruptedError: state or index missing, damaged, replaced. VaultRollbackError: state went back.
        """
        keys = self._require_keys()
        try:
            raw = read_capped(self._path / STATE_FILE, STATE_BYTES)
        except FileNotFoundError:
            raise VaultCorruptedError("The vault state file is missing; restore the vault from a backup.") from None
        if raw is None:
            raise VaultCorruptedError("The vault state file has the wrong size; restore the vault from a backup.")
        if raw == self._state_raw:
            return self._state
        state, body, tag = decode_state(raw)
        if not crypto.mac_ok(keys.state_mac, body, tag) or state.vault_id != self._vault_id:
            raise VaultCorruptedError("The vault state file failed authentication: it was damaged or replaced;"
                                      " restore the vault from a backup.")
        if self._state is not None and state.seq < self._state.seq:
            raise VaultRollbackError("The vault state went back to an older version while open: a file was rolled"
                                     " back. Stop using the vault and check the folder.")
        if self._state is None or state.index_id != self._state.index_id or state.generation != self._state.generation:
            self._entries = self._load_index(state)
        self._state, self._state_raw = state, raw
        return state

    def _index_path(self, index_id: bytes) -> Path:
        return self._path / f"{INDEX_PREFIX}{index_id.hex()}"

    def _load_index(self, state: State) -> dict[str, IndexRecord]:
        try:
            data = read_capped(self._index_path(state.index_id), MAX_INDEX_BYTES)
        except FileNotFoundError:
            raise VaultCorruptedError("The vault index file is missing; restore the vault from a backup.") from None
        if data is None or hashlib.sha256(data).digest() != state.index_sha256:
            raise VaultCorruptedError("The vault index does not match the state file: it was replaced (e.g. by an"
                                      " older copy) or damaged; restore the vault from a backup.")
        try:
            plaintext = crypto.decrypt(self._require_keys().index, data,
                                       index_context(self._vault_id, state.generation))
        except crypto.AuthenticationFailed:
            raise VaultCorruptedError("The vault index failed authentication; restore the vault from a backup.") \
                from None
        return decode_index(plaintext, vault_id=self._vault_id, generation=state.generation)

    def _commit_state(self, *, step: str = "state", **changes: object) -> State:
        """Atomically write the next state (sequence + 1) and update the seen file. Caller holds the lock."""
        keys = self._require_keys()
        new = replace(self._state, seq=self._state.seq + 1, **changes)
        body = encode_state_body(new)
        raw = body + crypto.mac(keys.state_mac, body)
        atomic_write(self._path / STATE_FILE, raw, fault_hook=self._fault_hook, step=step)
        self._state, self._state_raw = new, raw
        self._write_seen(new, raw)
        return new

    def _commit_index(self, entries: dict[str, IndexRecord], *, keys: crypto.SubKeys, seen: bool = True) -> None:
        """Write a new index file, then commit the state pointing to it, then remove the previous index file."""
        old_id = self._state.index_id
        generation = self._state.generation + 1
        index_id = crypto.random_bytes(ID_BYTES)
        data = crypto.encrypt(keys.index, encode_index(self._vault_id, generation, entries),
                              index_context(self._vault_id, generation))
        atomic_write(self._index_path(index_id), data, fault_hook=self._fault_hook, step="index")
        if seen:
            self._commit_state(generation=generation, index_id=index_id, index_sha256=hashlib.sha256(data).digest())
        else:  # the very first state of a vault under construction: no seen file for a staging folder
            new = replace(self._state, seq=1, generation=generation, index_id=index_id,
                          index_sha256=hashlib.sha256(data).digest())
            body = encode_state_body(new)
            raw = body + crypto.mac(keys.state_mac, body)
            atomic_write(self._path / STATE_FILE, raw)
            self._state, self._state_raw = new, raw
        self._entries = entries
        if old_id != bytes(ID_BYTES):
            remove_quietly(self._index_path(old_id))
            self._hook("old_index.removed")

    # ================================================================== unlock follow-up
    def _after_unlock(self, event: str, *, allow_rollback: bool) -> None:
        try:
            with self._lock:
                state = self._sync()
                seen = self._read_seen()
                digest = hashlib.sha256(self._state_raw).digest()
                rolled_back = seen is not None and (seen[0] > state.seq or (seen[0] == state.seq and seen[1] != digest))
                if rolled_back and not allow_rollback:
                    raise VaultRollbackError(
                        f"This vault is older than the version last opened on this computer (state {state.seq} <"
                        f" {seen[0]}): it was restored from a backup or rolled back. If you restored it on purpose,"
                        " run `python -m vault accept-restore`; otherwise stop and check the folder.")
                self._import_failed_unlocks()
                if rolled_back:
                    self.audit.append("rollback_accepted", user=self._user,
                                      details={"state_seq": state.seq, "seen_seq": seen[0]})
                self.audit.append(event, user=self._user)
        except BaseException:
            self._wipe()
            raise

    def _import_failed_unlocks(self) -> None:
        batch = failed.read_failed_unlocks(self._path, self._require_keys().seal, self._vault_id)
        if batch is None:
            return
        if batch:
            self.audit._append_batch(batch)
        remove_quietly(self._path / FAILED_FILE)
        self._hook("failed_unlocks.removed")

    # ================================================================== entries
    def _info(self, name: str, rec: IndexRecord) -> EntryInfo:
        return EntryInfo(name=name, kind=rec.kind, size_bytes=rec.size, sha256=rec.sha256, created=rec.created,
                         modified=rec.modified, version=rec.version, entry_id=rec.entry_id.hex(),
                         meta=json.loads(canonical_json(rec.meta)))

    def _blob_path(self, blob_id: bytes) -> Path:
        return self._path / BLOB_DIR / blob_id.hex()

    def _read_blob(self, rec: IndexRecord) -> bytes:
        label = f"Entry {rec.entry_id.hex()[:8]}"
        path = self._blob_path(rec.blob_id)
        expected = ciphertext_size(rec.size)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != expected:
                    raise VaultCorruptedError(f"{label} has the wrong size ({size} bytes instead of {expected}): it"
                                              " was truncated or extended; restore it from a backup.")
                data = f.read(expected + 1)
        except FileNotFoundError:
            raise VaultCorruptedError(f"{label} is missing its data file; restore the vault from a backup.") from None
        try:
            plaintext = crypto.decrypt(self._require_keys().blob, data,
                                       blob_context(self._vault_id, rec.entry_id, rec.version))
        except crypto.AuthenticationFailed:
            raise VaultCorruptedError(f"{label} failed authentication: its data file was damaged, swapped or replaced"
                                      " by an older version; restore it from a backup.") from None
        if len(plaintext) != rec.size or hashlib.sha256(plaintext).hexdigest() != rec.sha256:
            raise VaultCorruptedError(f"{label} does not match its checksum in the index.")
        return plaintext

    def put(self, name: str, data: bytes | bytearray | memoryview, *, kind: str, meta: dict | None = None) -> EntryInfo:
        """Store (or replace) ``name`` with ``data``; durable when it returns. A replaced version's file is removed.

        Raises:
            InvalidEntryError: bad name, kind, metadata or data type, or data over 2 GiB.
            VaultLockedError, VaultCorruptedError, OSError (disk full ...).
        """
        name = normalize_name(name)
        kind = validate_kind(kind)
        meta = validate_meta(meta)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidEntryError("Entry data must be bytes.")
        view = memoryview(data)
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        if view.nbytes > MAX_ENTRY_BYTES:
            raise InvalidEntryError("An entry may hold at most 2 GiB.")
        digest = hashlib.sha256(view).hexdigest()
        with self._lock:
            keys = self._require_keys()  # inside the lock: a concurrent lock() cannot wipe it mid-write
            self._sync()
            old = self._entries.get(name)
            entry_id = old.entry_id if old else crypto.random_bytes(ID_BYTES)
            version = old.version + 1 if old else 1
            blob_id = crypto.random_bytes(ID_BYTES)
            ciphertext = crypto.encrypt(keys.blob, view, blob_context(self._vault_id, entry_id, version))
            atomic_write(self._blob_path(blob_id), ciphertext, fault_hook=self._fault_hook, step="blob")
            now = now_utc()
            rec = IndexRecord(entry_id=entry_id, version=version, blob_id=blob_id, size=view.nbytes, sha256=digest,
                              created=old.created if old else now, modified=now, kind=kind, meta=meta)
            entries = dict(self._entries)
            entries[name] = rec
            self._commit_index(entries, keys=keys)
            if old is not None:
                remove_quietly(self._blob_path(old.blob_id))
                self._hook("old_blob.removed")
            return self._info(name, rec)

    def _lookup(self, name: str):
        """(normalised name, index record) of an existing entry, after re-reading the state. Call with the lock
        held. Raises InvalidEntryError for a bad name, EntryNotFoundError when there is no such entry."""
        name = normalize_name(name)
        self._sync()
        rec = self._entries.get(name)
        if rec is None:
            raise EntryNotFoundError("No entry with that name in the vault.")
        return name, rec

    def get(self, name: str) -> bytes:
        """The plaintext of ``name``, verified (authenticated decryption + size + SHA-256) before it is returned.

        Raises:
            EntryNotFoundError, InvalidEntryError, VaultCorruptedError (damaged, truncated, swapped, replayed).
        """
        with self._lock:
            _, rec = self._lookup(name)
            return self._read_blob(rec)

    def info(self, name: str) -> EntryInfo:
        """Index information of ``name`` (nothing is decrypted but the index).

        Raises:
            EntryNotFoundError, InvalidEntryError.
        """
        with self._lock:
            name, rec = self._lookup(name)
            return self._info(name, rec)

    def exists(self, name: str) -> bool:
        """True if ``name`` is stored (False for names that could never be stored)."""
        try:
            name = normalize_name(name)
        except InvalidEntryError:
            return False
        with self._lock:
            self._sync()
            return name in self._entries

    def list(self, prefix: str = "") -> list[EntryInfo]:
        """Entries whose name starts with ``prefix``, sorted by name."""
        if not isinstance(prefix, str):
            raise InvalidEntryError("The prefix must be text.")
        with self._lock:
            self._sync()
            return [self._info(n, r) for n, r in sorted(self._entries.items()) if n.startswith(prefix)]

    def delete(self, name: str) -> None:
        """Remove ``name`` (index first, then its data file).

        Raises:
            EntryNotFoundError, InvalidEntryError.
        """
        name = normalize_name(name)
        with self._lock:
            keys = self._require_keys()
            self._sync()
            if name not in self._entries:
                raise EntryNotFoundError("No entry with that name in the vault.")
            entries = dict(self._entries)
            old = entries.pop(name)
            self._commit_index(entries, keys=keys)
            remove_quietly(self._blob_path(old.blob_id))
            self._hook("old_blob.removed")

    # ================================================================== keys
    def _verify_master(self, master: bytearray) -> None:
        try:
            if master != self._master:
                raise VaultCorruptedError("The vault header on disk wraps a different key: it was replaced.")
        finally:
            crypto.wipe(master)

    def _write_header(self, header: Header) -> None:
        atomic_write(self._path / HEADER_FILE, encode_header(header), fault_hook=self._fault_hook, step="header")
        self._header = header

    def _confirm_passphrase(self, passphrase: str):
        """Check ``passphrase`` against the header's passphrase slot (it must unwrap this vault's master key).

        Returns (header, passphrase slot). Raises WrongPassphraseError (generic message). Call with the lock held.
        """
        header, _ = read_header(self._path)
        slot = header.slot(SLOT_PASSPHRASE)
        try:
            master = unwrap_slot(header, slot, crypto.derive_passphrase_kek(passphrase, slot.kdf, slot.salt))
        except crypto.AuthenticationFailed:
            raise WrongPassphraseError(GENERIC_UNLOCK_FAILURE) from None
        self._verify_master(master)
        return header, slot

    def change_passphrase(self, old: str, new: str, *, kdf_params: KdfParams | None = None) -> None:
        """Re-wrap the master key under ``new`` (nothing else is re-encrypted). Keeps the current Argon2id cost
        unless ``kdf_params`` is given. An interrupted change leaves the old or the new header (atomic rename).

        Raises:
            WrongPassphraseError: ``old`` is wrong. WeakPassphraseError: ``new`` too short. KdfParamsError.
        """
        check_new_passphrase(new)
        with self._lock:
            self._require_keys()
            header, slot = self._confirm_passphrase(old)
            params = (kdf_params or slot.kdf).validate()
            self._write_header(header.replace_slot(
                make_slot(header, SLOT_PASSPHRASE, self._master, passphrase=new, params=params)))
            self.audit.append("passphrase_changed", user=self._user)

    def reset_passphrase(self, recovery_key: str, new: str, *, kdf_params: KdfParams | None = None) -> None:
        """Set a new passphrase using the recovery key (after a forgotten passphrase).

        Raises:
            RecoveryKeyFormatError, WrongRecoveryKeyError, WeakPassphraseError, KdfParamsError.
        """
        check_new_passphrase(new)
        with self._lock:
            self._require_keys()
            header, _ = read_header(self._path)
            self._verify_master(_unwrap_with_recovery_key(header, recovery_key))
            params = (kdf_params or header.slot(SLOT_PASSPHRASE).kdf).validate()
            self._write_header(header.replace_slot(
                make_slot(header, SLOT_PASSPHRASE, self._master, passphrase=new, params=params)))
            self.audit.append("passphrase_changed", user=self._user, details={"with_recovery_key": True})

    def replace_recovery_key(self, passphrase: str) -> str:
        """Issue a new recovery key (the old one stops working) and return it; show it once.

        Raises:
            WrongPassphraseError: ``passphrase`` is wrong.
        """
        with self._lock:
            self._require_keys()
            header, _ = self._confirm_passphrase(passphrase)
            secret = crypto.random_bytes(RECOVERY_SECRET_BYTES)
            self._write_header(header.replace_slot(
                make_slot(header, SLOT_RECOVERY, self._master, recovery_secret=secret)))
            self.audit.append("recovery_key_replaced", user=self._user)
            return format_recovery_key(secret)

    # ================================================================== maintenance
    def check(self) -> CheckReport:
        """Verify everything, like ``restic check --read-data``: header, state, index, every entry (authenticated
        decryption, size, SHA-256), the audit chain; list left-over and unknown files. Nothing is modified.

        Raises:
            VaultLockedError.
        """
        problems: list[CheckProblem] = []
        checked = nbytes = 0
        with self._lock:
            self._require_keys()
            try:
                header, _ = read_header(self._path)
                if header.core_bytes() != self._header.core_bytes():
                    problems.append(CheckProblem(None, HEADER_FILE, "The header belongs to another vault."))
            except VaultError as e:
                problems.append(CheckProblem(None, HEADER_FILE, str(e)))
            try:
                state = self._sync()
                self._entries = self._load_index(state)  # re-read and re-authenticate even if cached
            except VaultError as e:
                problems.append(CheckProblem(None, STATE_FILE, str(e)))
                return CheckReport(False, 0, 0, tuple(problems), (), (), False, "not checked")
            for name, rec in sorted(self._entries.items()):
                try:
                    self._read_blob(rec)
                    checked += 1
                    nbytes += rec.size
                except VaultCorruptedError as e:
                    problems.append(CheckProblem(name, f"{BLOB_DIR}/{rec.blob_id.hex()}", str(e)))
            audit_ok, _, audit_message = self.audit.verify()
            if not audit_ok:
                problems.append(CheckProblem(None, AUDIT_FILE, audit_message))
            orphans, unknown = scan_files(self._path, self._entries, self._state.index_id)
        rel = lambda ps: tuple(str(p.relative_to(self._path)) for p in ps)  # noqa: E731
        return CheckReport(ok=not problems, entries_checked=checked, bytes_checked=nbytes, problems=tuple(problems),
                           orphans=rel(orphans), unknown_files=rel(unknown), audit_ok=audit_ok,
                           audit_message=audit_message)

    def gc(self) -> GcReport:
        """Remove left-overs of interrupted or superseded writes: temp files, unreferenced entry files, old index
        files. Files the vault does not recognise are never touched (``check`` lists them).

        Raises:
            VaultLockedError, VaultCorruptedError (state or index unreadable: nothing is removed).
        """
        removed = freed = 0
        with self._lock:
            self._sync()
            orphans, _ = scan_files(self._path, self._entries, self._state.index_id)
            for p in orphans:
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                if remove_quietly(p):
                    removed += 1
                    freed += size
            if removed:
                fsync_dir(self._path)
                fsync_dir(self._path / BLOB_DIR)
                self.audit.append("gc", user=self._user, details={"removed_files": removed, "freed_bytes": freed})
        return GcReport(removed_files=removed, freed_bytes=freed)
