"""The console scripts' entry points. Each handles stop signals before it imports anything heavy
(JAX and Hydra take seconds to import), so a SIGTERM or Ctrl-C at any moment, start-up included,
ends with the documented message and exit code rather than a traceback or a bare kill. Then the
command's own ``main`` runs inside its boundary (``shell.guarded``)."""

from __future__ import annotations

import importlib
import logging
import sys
import threading

from maml_cli import stop_signals


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


def _run(module: str, name: str) -> None:
    stop_signals.install(name)
    _quiet_background_errors(name)
    try:
        importlib.import_module(f"maml_cli.commands.{module}").main()
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
