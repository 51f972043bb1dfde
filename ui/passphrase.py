"""Rules and a strength hint for a new vault passphrase, and the user-name check (pure Python: no Streamlit).

The app asks for at least :data:`MIN_CHARS` characters (stricter than the vault's own floor of 10) and shows a hint
built from the length and the character classes used. The hint is guidance, not an entropy estimate: a long phrase
of ordinary words is strong even in one class.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

from analysis.errors import CrystalQCError

#: Fewest characters the app accepts for a new passphrase.
MIN_CHARS = 12
#: From this length on a passphrase counts as strong whatever its classes.
LONG_CHARS = 20
#: Most characters (the vault's own ceiling).
MAX_CHARS = 1024


class InputRejectedError(CrystalQCError, ValueError):
    """A name or new passphrase typed on the lock screen was refused (empty, too short, too long, or the two
    passphrase entries differ)."""


@dataclass(frozen=True)
class PassphraseStrength:
    """``length`` in characters; ``classes`` = how many of lower case, upper case, digits, other (space,
    punctuation, non-ASCII) occur; ``level`` 0 = refused, 1 = weak, 2 = fair, 3 = strong; ``hint`` = one sentence."""

    length: int
    classes: int
    level: int
    hint: str


def _classes(passphrase: str) -> int:
    lower = any(c.islower() for c in passphrase)
    upper = any(c.isupper() for c in passphrase)
    digit = any(c in string.digits for c in passphrase)
    other = any(not (c.isalpha() or c in string.digits) for c in passphrase)
    return int(lower) + int(upper) + int(digit) + int(other)


def passphrase_strength(passphrase: str) -> PassphraseStrength:
    """Length, character classes and a hint for ``passphrase`` (never stores or logs it)."""
    n = len(passphrase)
    k = _classes(passphrase)
    if n < MIN_CHARS:
        return PassphraseStrength(n, k, 0, f"Too short: {n} of at least {MIN_CHARS} characters. Several words"
                                           " are easier to remember than symbols.")
    if n >= LONG_CHARS or (n >= 16 and k >= 3):
        return PassphraseStrength(n, k, 3, f"Strong: {n} characters, {k} character class(es).")
    if k >= 3:
        return PassphraseStrength(n, k, 2, f"Fair: {n} characters, {k} character classes. Longer is better:"
                                           f" {LONG_CHARS}+ characters is strong.")
    return PassphraseStrength(n, k, 1, f"Weak: {n} characters, only {k} character class(es). Add words, or mix"
                                       " upper case, digits and punctuation.")


def check_new_passphrase(passphrase: str, repeat: str) -> None:
    """Accept a new passphrase typed twice, or say why not.

    Raises:
        InputRejectedError: not text, fewer than MIN_CHARS or more than MAX_CHARS characters, or the two
        entries differ (the message never contains the passphrase).
    """
    if not isinstance(passphrase, str) or not isinstance(repeat, str):
        raise InputRejectedError("The passphrase must be text.")
    if len(passphrase) < MIN_CHARS:
        raise InputRejectedError(f"Choose a passphrase of at least {MIN_CHARS} characters (you typed"
                                      f" {len(passphrase)}); several words are easier to remember.")
    if len(passphrase) > MAX_CHARS:
        raise InputRejectedError(f"A passphrase may have at most {MAX_CHARS} characters.")
    if passphrase != repeat:
        raise InputRejectedError("The two passphrases differ; type the same passphrase twice.")


def check_user_name(name: str) -> str:
    """The user name to record in the audit log: stripped, 1..128 printable characters.

    Raises:
        InputRejectedError: empty, too long or with control characters.
    """
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise InputRejectedError("Type your name: it is recorded in the audit log with everything you do.")
    if len(name) > 128 or not name.isprintable():
        raise InputRejectedError("Your name may have at most 128 printable characters.")
    return name
