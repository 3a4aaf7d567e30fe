"""Every file the tool produces is written whole or not at all: into a temporary file beside it,
flushed to disk, then renamed over the old one (``os.replace`` is atomic on POSIX). A reader, or a
process killed mid-write, sees the old content or the new, never a part. The one helper for
predictions, eval records, reports, plots, run records and arrays.

A temporary left by a process that was killed (``.NAME.tmpPID``) is removed by the next write of
the same file once its process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from maml_cli import stop_signals
from maml_cli.errors import UserError


class WriteError(UserError):
    """A file the tool produces could not be written (a folder in its place, a read-only or full
    disk); whatever was there before is unchanged."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


NAME_MAX = 255  # bytes in one file name, on Linux's file systems


def _temporary(path: Path) -> Path:
    """``.NAME.tmpPID`` beside ``path``; for a name too long to take the prefix and suffix, a
    hash of it stands in (a legal name is never refused for its temporary's sake)."""
    return path.with_name(f"{_prefix(path)}{os.getpid()}")


def _prefix(path: Path) -> str:
    prefix = f".{path.name}.tmp"
    if len(prefix.encode("utf-8", "surrogateescape")) + 10 > NAME_MAX:
        prefix = f".{hashlib.sha1(path.name.encode('utf-8', 'surrogateescape')).hexdigest()}.tmp"
    return prefix


def _remove_stale(path: Path) -> None:
    prefix = _prefix(path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
            if rest.isascii() and rest.isdigit() and int(rest) != os.getpid() and not _alive(int(rest)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def describe_os_error(error: OSError) -> str:
    """The reason an OSError gives, in words a user can act on."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason += ": free some space"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += ": make it writable or write elsewhere"
    return reason


def check_replaceable(paths) -> None:
    """Before writing files that go together (a record and its plot, a report's three files): each
    can be replaced, so that none is written when a later one would fail (a folder in its place, a
    folder that cannot be written). A full disk can still stop one half-way: each is whole or
    unchanged."""
    for path in map(Path, paths):
        if path.is_dir():
            raise WriteError(f"cannot write {path}: it is a folder; remove it or write elsewhere; nothing was written")
        folder = path.parent
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise WriteError(f"cannot write {path}: {folder} cannot be written; nothing was written")
        if path.exists() and not os.access(path, os.W_OK) and not os.access(folder, os.W_OK):
            raise WriteError(f"cannot write {path}: it is read-only; nothing was written")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """A file object whose content replaces ``path`` whole when the block ends without an error.
    ``mode``: "w" (text) or "wb". An error while writing leaves ``path`` as it was and raises
    ``WriteError`` for an OSError (full or read-only disk, a folder in the way)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {path}: it is a folder; remove it or write elsewhere")
    tmp = _temporary(path)
    _LIVE.add(tmp)
    try:
        _remove_stale(path)
        with open(tmp, mode, **({"newline": newline} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError(f"cannot write {path} ({describe_os_error(e)}); it is unchanged") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        _LIVE.discard(tmp)


_LIVE: set[Path] = set()  # temporaries being written now, removed if a stop signal ends the process


def _remove_live() -> None:
    for tmp in list(_LIVE):
        with contextlib.suppress(OSError):
            tmp.unlink()


stop_signals.before_exit(_remove_live)


def write_text(path: str | Path, text: str) -> Path:
    """``text`` into ``path``, whole or not at all."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` into ``path``, whole or not at all."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
