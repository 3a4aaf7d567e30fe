"""The paths a user gives (run directories, outputs, data and support folders), checked once for
what the file system or the libraries underneath cannot take: a name that is not UTF-8 (Orbax and
TensorStore encode paths as UTF-8), a name longer than the file system allows, a link to nothing
on the way. Refused with one line naming the key, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from maml_cli.errors import UserError

NAME_MAX = 255  # bytes in one name, on Linux's file systems
PATH_MAX = 4096


def shown_path(path) -> str:
    """A path as it can be printed and stored: a name that is not UTF-8 shows its bytes escaped."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_utf8(path) -> Path | None:
    """The first folder or file along ``path`` (made absolute: the working directory's name counts)
    whose name is not UTF-8 text, or None."""
    full = Path(path).absolute()
    for part in [*reversed(full.parents), full]:
        try:
            part.name.encode("utf-8")
        except UnicodeEncodeError:
            return part
    return None


def checked_path(value, key: str) -> Path:
    """``value`` as a Path, or a UserError saying why it cannot be used as ``key``."""
    path = Path(os.fsdecode(value) if isinstance(value, bytes) else str(value))
    text = str(path)
    bad = not_utf8(path)
    if bad is not None:
        raise UserError(
            f"{key}={shown_path(path)}: {shown_path(bad)} has a name that is not UTF-8 text: rename it "
            "(convmv -f latin1 -t utf-8 -r --notest DIR renames a whole folder)"
        )
    if len(os.fsencode(text)) > PATH_MAX:
        raise UserError(f"{key}: the path is longer than {PATH_MAX} bytes: pick a shorter one")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(f"{key}: the name {part[:40]}... is longer than {NAME_MAX} bytes: pick a shorter one")
    absolute = path.expanduser().absolute()
    for p in [absolute, *absolute.parents]:
        if p.is_symlink() and not p.exists():
            raise UserError(f"{key}={path}: {p} is a link to nothing (its target {os.readlink(p)} is gone)")
    return path
