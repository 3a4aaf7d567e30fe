"""JSON that every parser reads: a non-finite float (NaN, inf) becomes ``null``, and the writer is
told how many there were, so a record can say so instead of holding a bare ``NaN`` that strict
parsers (and ``jq``) reject."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite_or_none(value: Any) -> tuple[Any, int]:
    """(``value`` with every non-finite float replaced by None, how many were replaced)."""
    if isinstance(value, (float, np.floating)):
        return (float(value), 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, np.integer):
        return int(value), 0
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    if isinstance(value, dict):
        out, count = {}, 0
        for k, v in value.items():
            out[k], n = finite_or_none(v)
            count += n
        return out, count
    if isinstance(value, (list, tuple)):
        items = [finite_or_none(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of ``value`` with non-finite floats as null (never NaN or Infinity)."""
    clean, _ = finite_or_none(value)
    return json.dumps(clean, allow_nan=False, **kwargs)
