"""The paths a user gives (run directories, outputs, data and support folders), checked once for
what the file system or the libraries underneath cannot take: a name that is not UTF-8 (Orbax and
TensorStore encode paths as UTF-8), a name longer than the file system allows, a link to nothing
on the way. Refused with one line naming the key, before anything is written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from maml_cli.atomic import describe_os_error
from maml_cli.errors import UserError

NAME_MAX = 255  # bytes in one name, on Linux's file systems
PATH_MAX = 4096
CACHE_ENV = "MAML_CLI_CACHE"  # the folder of the data and compilation caches


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


def default_cache_dir() -> Path:
    """``$MAML_CLI_CACHE``, else ~/.cache/maml-cli (``dataset.cache_dir`` overrides both), made
    absolute. A variable that is set but empty is refused: it would put the cache in the working
    directory."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        try:
            home = Path.home()
        except RuntimeError:  # no HOME and no entry in the password database
            raise UserError(
                f"the home folder is unknown (HOME is not set): set HOME, or {CACHE_ENV}=DIR for the cache"
            ) from None
        given = os.environ.get("HOME")
        if given is not None and not os.path.isabs(given):  # "" means "/" to Python; relative, the working dir
            raise UserError(f"HOME={given!r} is not an absolute path: set HOME, or {CACHE_ENV}=DIR for the cache")
        return home / ".cache" / "maml-cli"
    if not value.strip():
        raise UserError(
            f"{CACHE_ENV} is set but empty: unset it (the cache is then ~/.cache/maml-cli) or set it to a folder"
        )
    return Path(value).expanduser().absolute()


def check_writable_dir(path: Path, what: str) -> Path:
    """Refuse a cache folder that cannot hold files: a file in its place, a read-only or full
    disk. The check writes and removes a small probe in the folder (or in its nearest existing
    parent, creating nothing)."""
    path = Path(path).expanduser().absolute()
    probe_dir = path
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        if probe_dir.is_symlink():  # a dangling link: creating the folder would fail
            raise UserError(f"{what}={path}: {probe_dir} is a link to nothing; point {what} to a folder")
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"{what}={path}: {probe_dir} is a file, not a folder; point {what} to a folder")
    probe = probe_dir / f".maml-cli-probe{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(
            f"{what}={path} cannot be written ({describe_os_error(e)}), or point {what} elsewhere"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return path
