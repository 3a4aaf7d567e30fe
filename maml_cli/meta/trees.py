"""Splitting a nested parameter dict in two and putting it back: the inner loop adapts one part
(all but batch norm, or ANIL's head) and holds the other fixed."""

from __future__ import annotations

from collections.abc import Callable

from flax.traverse_util import flatten_dict, unflatten_dict


def partition(tree: dict, keep: Callable[[tuple], bool]) -> tuple[dict, dict]:
    """(the leaves whose path ``keep`` accepts, the rest), each a nested dict."""
    flat = flatten_dict(tree)
    kept = {path: leaf for path, leaf in flat.items() if keep(path)}
    rest = {path: leaf for path, leaf in flat.items() if not keep(path)}
    return unflatten_dict(kept), unflatten_dict(rest)


def merge(a: dict, b: dict) -> dict:
    """The union of two nested dicts; where both hold a leaf, ``b``'s."""
    return unflatten_dict({**flatten_dict(a), **flatten_dict(b)})
