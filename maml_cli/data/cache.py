"""Where preprocessed datasets are cached."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_HOME = Path.home() / ".cache" / "maml-cli"  # datasets and compiled programs, by default


def default_cache_dir() -> Path:
    """``$MAML_CLI_CACHE``, else ~/.cache/maml-cli (``dataset.cache_dir`` overrides both)."""
    return Path(os.environ.get("MAML_CLI_CACHE", CACHE_HOME))
