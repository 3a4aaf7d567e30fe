"""The one boundary every command runs inside: whatever goes wrong ends as one line on stderr and a
documented exit code, never as a traceback.

- Bad input (``UserError``): ``maml-X: error: ...``, exit 2.
- The environment refusing a path (too long a name, a loop of links, a read-only or full disk, no
  permission): the same, naming the path. These are the user's files and machine, not our code.
- Anything else is a bug of ours: ``maml-X: internal error: TYPE: message (traceback in FILE);
  please report it``, exit 70, the traceback written to ``$MAML_CLI_CACHE/errors/`` (or the
  system's temporary folder). The generated tests fail on exit 70, so bugs still surface.

Light on purpose (the standard library and ``maml_cli.errors``): the console scripts' entry points
use it before JAX and Hydra are imported.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from maml_cli.atomic import describe_os_error
from maml_cli.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_REQUEUE = 75  # sysexits.h EX_TEMPFAIL: "try again later"
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug of ours

# An OSError with one of these, naming a file, is about the user's paths and machine.
PATH_ERRNOS = {
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.ENOTDIR,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EMFILE,
    errno.ENFILE,
}
# ... and one of these, naming none, is the terminal's streams (stdout to /dev/full, a closed pipe).
STREAM_ERRNOS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EBADF, errno.EDQUOT}


def guarded(name: str) -> Callable:
    """Wrap a console script's ``main(argv)`` in the boundary."""

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None):
            try:
                return main(argv)
            except SystemExit:
                raise
            except KeyboardInterrupt:  # Ctrl-C where the console script's handlers are not in place
                _say(f"{name}: interrupted")
                sys.exit(EXIT_INTERRUPTED)
            except Exception as e:
                sys.exit(report(name, e))

        return run

    return wrap


def report(name: str, error: BaseException) -> int:
    """Say ``error`` in one line on stderr; returns the exit code."""
    if isinstance(error, UserError):
        _say(f"{name}: error: {error}")
        return EXIT_USER_ERROR
    if isinstance(error, OSError) and error.filename is not None and error.errno in PATH_ERRNOS:
        _say(f"{name}: error: cannot use {error.filename} ({describe_os_error(error)})")
        return EXIT_USER_ERROR
    setting = _jax_setting_in(error)
    if setting:
        _say(f"{name}: error: JAX refused {setting}: {(str(error).strip().splitlines() or [''])[0]}")
        return EXIT_USER_ERROR
    if isinstance(error, OSError) and error.filename is None and error.errno in STREAM_ERRNOS:
        _say(f"{name}: error: cannot write the output ({error.strerror}); the work itself is done or not begun")
        return EXIT_USER_ERROR
    return internal_error(name, error)


def _say(line: str) -> None:
    """A line on stderr, if stderr takes it."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(line, file=sys.stderr, flush=True)


def error_folder() -> Path:
    """Where tracebacks go: ``$MAML_CLI_CACHE/errors`` (default ~/.cache/maml-cli/errors), else
    the system's temporary folder."""

    cache = os.environ.get("MAML_CLI_CACHE", "").strip()
    try:
        folder = Path(cache).absolute() if cache else Path.home() / ".cache" / "maml-cli"
        folder = folder / "errors"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except (OSError, RuntimeError):
        return Path(tempfile.gettempdir())


def internal_error(name: str, error: BaseException) -> int:
    """Write the traceback of an unexpected error to a file and say one line naming it; returns
    the exit code (70)."""
    text = "".join(traceback.format_exception(error))
    first = (str(error).strip().splitlines() or [""])[0][:300]
    what = f"{type(error).__name__}" + (f": {first}" if first else "")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        path = error_folder() / f"{name}-{stamp}-{os.getpid()}.txt"
        command = " ".join([name, *sys.argv[1:]])
        path.write_text(f"{command}\n\n{text}", errors="backslashreplace")
        where = f"traceback in {path}"
    except OSError as e:  # nowhere to write it: the traceback is shown rather than lost
        _say(text)
        where = f"traceback above: it could not be written to a file ({e.strerror})"
    _say(f"{name}: internal error: {what} ({where}); please report it")
    return EXIT_INTERNAL


def _jax_setting_in(error: BaseException) -> str | None:
    """``NAME=value`` of the JAX environment variable whose flag ``error`` names (JAX reads
    JAX_DEFAULT_MATMUL_PRECISION into its flag jax_default_matmul_precision), or None."""
    text = str(error).lower()
    for variable in os.environ:
        if variable.startswith("JAX_") and variable.lower() in text:
            return f"{variable}={os.environ[variable]}"
    return None


def jax_settings() -> str:
    """The environment variables that set how JAX and XLA start, as ``NAME=value`` (or "")."""
    names = sorted(k for k in os.environ if k.startswith(("JAX_", "XLA_")) or k == "TF_CPP_MIN_LOG_LEVEL")
    return ", ".join(f"{k}={os.environ[k]}" for k in names if k != "TF_CPP_MIN_LOG_LEVEL")
