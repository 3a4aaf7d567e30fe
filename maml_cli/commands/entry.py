"""The console scripts' entry points. Each handles stop signals before it imports anything heavy
(JAX and Hydra take seconds to import), so a SIGTERM or Ctrl-C at any moment, start-up included,
ends with the documented message and exit code rather than a traceback or a bare kill. Then the
command's own ``main`` runs inside its boundary (``shell.guarded``)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading

from maml_cli import stop_signals
from maml_cli.commands import boundary
from maml_cli.errors import UserError


def _quiet_background_errors(name: str) -> None:
    """An error that Python can only ignore (raised in a callback or thread that has nobody to report
    to) becomes one warning line, not a traceback on the terminal. Orbax's reader leaves such
    callbacks behind when it meets a damaged checkpoint ("Event loop is closed"), which the command
    has already reported in its own words: those are dropped."""

    def one_line(error: BaseException | None, where) -> None:
        if error is None or (isinstance(error, RuntimeError) and "Event loop is closed" in str(error)):
            return
        print(f"{name}: warning: ignored an error in {where}: {type(error).__name__}: {error}", file=sys.stderr)

    sys.unraisablehook = lambda unraisable: one_line(unraisable.exc_value, "a background task")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # "Task exception was never retrieved" (Orbax's)
    threading.excepthook = lambda args: one_line(args.exc_value, f"thread {getattr(args.thread, 'name', '?')}")


def _usable_streams() -> None:
    """A closed stdout or stderr (``>&-``) becomes /dev/null; text that the terminal's encoding
    cannot show (a path in ``PYTHONIOENCODING=ascii``) is escaped, not an error."""
    for stream in ("stdout", "stderr"):
        if getattr(sys, stream) is None:
            setattr(sys, stream, open(os.devnull, "w"))  # noqa: SIM115 (for the process's life)
        with contextlib.suppress(AttributeError, ValueError):
            getattr(sys, stream).reconfigure(errors="backslashreplace")


def _check_start(name: str) -> None:
    """What must hold before anything is imported: a working directory that exists (Hydra and
    relative paths read it)."""
    try:
        os.getcwd()
    except OSError:
        boundary.report(name, UserError("the working directory no longer exists: cd to a folder that does"))
        sys.exit(boundary.EXIT_USER_ERROR)


def _import_main(module: str, name: str):
    """The command's ``main``. Importing it imports JAX, which refuses some environments (a
    setting such as JAX_DEFAULT_MATMUL_PRECISION=foo): that is one line and exit 2."""
    try:
        return importlib.import_module(f"maml_cli.commands.{module}").main
    except UserError as e:  # a plugin of an installed package that does not load (maml_cli.plugins)
        sys.exit(boundary.report(name, e))
    except Exception as e:
        settings = boundary.jax_settings()
        if not settings:
            sys.exit(boundary.internal_error(name, e))
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        boundary.report(name, UserError(f"JAX could not start with {settings}: {first}"))
        sys.exit(boundary.EXIT_USER_ERROR)


def _run(module: str, name: str) -> None:
    stop_signals.install(name)
    _usable_streams()
    _quiet_background_errors(name)
    _check_start(name)
    try:
        _import_main(module, name)()
    finally:
        stop_signals.ignore_from_now()


def train() -> None:
    _run("train", "maml-train")


def evaluate() -> None:
    _run("evaluate", "maml-eval")


def adapt() -> None:
    _run("adapt", "maml-adapt")


def report() -> None:
    _run("report", "maml-report")
