"""The error a user's bad input raises, and the did-you-mean help its messages give.

Kept apart from the config machinery so that the math, the data and the models can raise it
without importing Hydra or OmegaConf."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: reported as one clear message and a non-zero exit, no traceback."""


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be, or None."""
    candidates = list(candidates)
    leaf = word.rsplit(".", 1)[-1]
    close = [c for c in candidates if "." in c and c.rsplit(".", 1)[-1] == leaf and c != word]  # wrong section
    # A key of a section (train.steps) is not a misspelt top-level key (transductive), nor the reverse.
    same_depth = [c for c in candidates if c.count(".") == word.count(".")]
    close = close or difflib.get_close_matches(word, same_depth, n=1, cutoff=0.6)
    if not close:  # a misspelling under the wrong section: compare the last parts
        last = {c.rsplit(".", 1)[-1]: c for c in candidates}
        hit = difflib.get_close_matches(leaf, list(last), n=1, cutoff=0.75)
        close = [last[hit[0]]] if hit else []
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the candidate nearest to ``word``, or ""."""
    hit = nearest(word, candidates)
    return f" (did you mean {hit}?)" if hit else ""


def one_of(key: str, value, allowed) -> str:
    """The message for a value outside ``allowed``."""
    hit = nearest(str(value), allowed)
    return f"{key} must be one of {', '.join(allowed)} (got {value!r}" + (f"; did you mean {hit}?)" if hit else ")")
