"""Helpers for the reproduction and benchmark scripts: machine description and doc sections."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path


def cpu() -> str:
    """The processor's model name and its cores, e.g. 'AMD EPYC, 2 cores'."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def machine() -> str:
    import jax

    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return f"{cpu()}, jax {jax.__version__} on {jax.default_backend()} ({devices}), Python {platform.python_version()}"


def today() -> str:
    return _dt.date.today().isoformat()


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between <!-- begin NAME --> and <!-- end NAME --> in ``path`` (appended if absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)
