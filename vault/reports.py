"""Records returned by the vault API (frozen dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EntryInfo:
    """What the index knows about one entry. ``size_bytes`` is the plaintext size; ``sha256`` its hex digest;
    ``created``/``modified`` are UTC ISO-8601 (created = first version); ``version`` counts writes of this name."""

    name: str
    kind: str
    size_bytes: int
    sha256: str
    created: str
    modified: str
    version: int
    entry_id: str
    meta: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class CheckProblem:
    """One problem found by :meth:`Vault.check`: the entry name (None for vault files), the file, and what to do."""

    name: str | None
    file: str
    problem: str


@dataclass(frozen=True)
class CheckReport:
    """Result of :meth:`Vault.check`. ``ok`` is False if any problem was found; ``orphans`` (left-overs of
    interrupted writes, removed by ``gc``) and ``unknown_files`` do not make it fail."""

    ok: bool
    entries_checked: int
    bytes_checked: int
    problems: tuple[CheckProblem, ...]
    orphans: tuple[str, ...]
    unknown_files: tuple[str, ...]
    audit_ok: bool
    audit_message: str

    def summary(self) -> str:
        """Plain-text report for the CLI and the app."""
        lines = [f"{'OK' if self.ok else 'PROBLEMS FOUND'}: {self.entries_checked} entries, "
                 f"{self.bytes_checked} bytes verified; audit log: {self.audit_message}"]
        lines += [f"  problem: {p.file}" + (f" ({p.name})" if p.name else "") + f": {p.problem}"
                  for p in self.problems]
        if self.orphans:
            lines.append(f"  {len(self.orphans)} left-over file(s) from interrupted writes; run `gc` to remove them")
        lines += [f"  unknown file (not touched): {f}" for f in self.unknown_files]
        return "\n".join(lines)


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Vault.gc` removed."""

    removed_files: int
    freed_bytes: int
