""""Did you mean `workers`?" for misspelt keys and values."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one choice close enough to be a likely typo of `word` (case-insensitive), or None."""
    by_lower = {choice.lower(): choice for choice in choices}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.7)
    return by_lower[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A suffix for a message: `; did you mean `workers`?`, or "" when nothing is close."""
    found = closest(word, choices)
    return f"; did you mean `{found}`?" if found else ""
