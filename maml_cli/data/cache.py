"""Where preprocessed datasets are cached."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$MAML_CLI_CACHE``, else ~/.cache/maml-cli (``dataset.cache_dir`` overrides both)."""
    return Path(os.environ.get("MAML_CLI_CACHE", Path.home() / ".cache" / "maml-cli"))
