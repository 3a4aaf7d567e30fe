"""Where preprocessed datasets are cached, and how a cache is built when several jobs share it.

Jobs of a sweep start together on the same ``MAML_CLI_CACHE``. Each cache entry is built by one of
them while the others wait (an ``flock`` on ``<entry>.lock``, which the kernel drops if the builder
dies, even by SIGKILL), into a temporary name that is renamed into place only when whole: a reader
sees a whole entry or none, and a builder killed midway leaves only a temporary that nothing reads
(the next builder removes it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from maml_cli.atomic import describe_os_error
from maml_cli.errors import UserError
from maml_cli.paths import CACHE_ENV

log = logging.getLogger(__name__)

T = TypeVar("T")


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"pid {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def build_lock(entry: Path) -> Iterator[None]:
    """Hold the exclusive right to build ``entry``. The lock file is removed before it is
    released, so a waiter that then locks a removed file tries again on the path's new file."""
    lock = entry.with_name(entry.name + ".lock")
    waited = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited:
                log.warning("waiting for %s, which is building the cache %s", _holder(lock), entry)
                waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # the file at the path is the one locked
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it on release: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _as_cache_errors(entry: Path, what: str) -> Iterator[None]:
    """An OSError while building ``entry`` as one line: the cache's folder (full, read-only) or,
    when the error names another file, the source being read."""
    try:
        yield
    except OSError as e:
        reason = describe_os_error(e)
        if e.filename and not str(e.filename).startswith(str(entry.parent)):
            raise UserError(f"cannot read {e.filename} ({reason}) while building the {what} {entry}") from e
        raise UserError(
            f"cannot write the {what} {entry} ({reason}); or set {CACHE_ENV}=DIR "
            "(dataset.cache_dir for this dataset alone)"
        ) from e


_BUILT: list[Path] = []  # the entries this process built, in order (a dry run says which)


def built_entries() -> list[Path]:
    """The cache entries this process built and published (not those it found whole), oldest
    first: what a run that promises to write nothing did write."""
    return list(_BUILT)


def cached(entry: Path, read: Callable[[Path], T], build: Callable[[Path], None], what: str = "cache") -> T:
    """``read(entry)`` of a whole, readable entry; else build it once and read it.

    ``read`` raises on an entry it cannot use (damaged, stale), which is then rebuilt.
    ``build(tmp)`` writes the entry (a file or a folder) at ``tmp``, which is renamed to ``entry``
    when ``build`` returns."""
    entry = Path(entry)
    if entry.exists():
        try:
            return read(entry)
        except Exception as e:  # damaged: rebuilt below, under the lock
            log.warning("rebuilding the damaged %s %s (%s)", what, entry, e)
    with _as_cache_errors(entry, what):
        entry.parent.mkdir(parents=True, exist_ok=True)
        with build_lock(entry):
            if entry.exists():  # another job built it while this one waited, or it is the damaged one
                try:
                    return read(entry)
                except Exception:
                    _remove(entry)
            for stale in entry.parent.glob(entry.name + ".tmp*"):  # left by a builder that was killed
                _remove(stale)
            tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}{entry.suffix}")
            try:
                build(tmp)
                os.replace(tmp, entry)  # the publish: atomic, a file or a whole folder
                _BUILT.append(entry)
            except BaseException:  # a bad input, a full disk or Ctrl-C: leave no half-written entry behind
                _remove(tmp)
                raise
    return read(entry)
