"""Stop signals, handled the same way from the first line a command runs to its exit.

SIGINT is Ctrl-C. SIGTERM is a scheduler's stop (SLURM's preemption and time limit, Kubernetes).
SIGUSR1 and SIGUSR2 are the warning SLURM sends before either when asked (submitit asks for
USR2). SIGHUP is a closed terminal or SSH session.

- While training (``flagging``): the first signal only sets a flag, which the loop reads between
  jitted calls. The state is never left half-donated, and the last completed step is saved.
- Outside a training loop (imports, config, data, restoring, the end): the first signal stops the
  command at once, with its message and exit code. Every file the tool writes is written whole or
  not at all (a temporary renamed into place), and a run survives SIGKILL at any moment, so
  stopping there loses nothing saved. Raising an exception there instead would not do: libraries
  being imported turn it into an ImportError, and Orbax's threads into a logged traceback.
- Once a stop is under way, further TERM, USR1, USR2 or HUP are noted and ignored: they wait for
  the save in progress. Only a second SIGINT stops at once, and even it waits for a checkpoint
  that is being written (``deferred``: milliseconds) so that no half-written one is left behind.

The exit codes are 130 after SIGINT and 75 (EX_TEMPFAIL: requeue me) after the others. A console
script installs the handlers before it imports anything heavy (``maml_cli.commands.entry``) and
keeps them until it exits. From Python (a notebook) only the training loop installs them, for its
own length; there a second Ctrl-C raises KeyboardInterrupt instead of ending the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_REQUEUE = 75  # sysexits.h EX_TEMPFAIL: "try again later"; a scheduler requeues on it


def exit_code(signum: int) -> int:
    """The exit code a command gives after stopping for ``signum``."""
    return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_REQUEUE


def name(signum: int) -> str:
    return signal.Signals(signum).name


class _Stops:
    def __init__(self):
        self.signum: int | None = None  # the first stop signal received, if any
        self.flagging = 0  # > 0 while a training loop reads the flag itself
        self.deferring = 0  # > 0 while a checkpoint is being written
        self.pending_exit: tuple | None = None  # (message, code) of a stop that waits for a checkpoint
        self.command: str | None = None  # the console script that installed the handlers
        self.replaced: dict = {}  # the handlers ours stand in for (submitit's among them)
        self._ignored_noted = False

    @property
    def installed(self) -> bool:
        return bool(self.replaced)

    def _exit_now(self, message: str, code: int) -> None:
        """End the process: the message, then ``os._exit`` (no exception that a library could
        catch, wrap or log). Anything being written is a temporary: ``before_exit`` removes it."""
        if self.deferring:
            self.pending_exit = (message, code)
            return
        for callback in _BEFORE_EXIT:
            with contextlib.suppress(Exception):
                callback()
        for handler in logging.getLogger().handlers + logging.getLogger("maml_cli").handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            print(message, file=sys.stderr, flush=True)
        os._exit(code)

    def _handle(self, signum, frame) -> None:
        who = self.command or "maml-cli"
        if self.signum is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now
                if self.command is None:  # in Python (a notebook): the usual KeyboardInterrupt
                    raise KeyboardInterrupt
                self._exit_now(
                    f"{who}: stopped at once by a second SIGINT; the checkpoints already saved are kept",
                    EXIT_INTERRUPTED,
                )
                return
            if not self._ignored_noted:
                self._ignored_noted = True
                log.warning("received %s while stopping: finishing the stop under way first", name(signum))
            return
        self.signum = signum
        if self.flagging:
            log.warning("received %s: stopping after the current step and saving a checkpoint", name(signum))
            return
        self._exit_now(
            f"{who}: stopped by {name(signum)}; nothing is half-written. Run the same command again to continue.",
            exit_code(signum),
        )

    def install(self, command: str | None = None) -> bool:
        """Put our handler on every stop signal; False where signals cannot be handled here (not
        the main thread)."""
        if self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        self.command = command
        self.replaced = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return True

    def uninstall(self) -> None:
        for s, handler in self.replaced.items():
            signal.signal(s, handler)
        self.__init__()


STOPS = _Stops()
_BEFORE_EXIT: list = []  # what a stop runs before it ends the process (maml_cli.atomic's temporaries)


def before_exit(callback) -> None:
    """Run ``callback`` when a stop signal ends the process at once (it must be quick and safe)."""
    _BEFORE_EXIT.append(callback)


def install(command: str) -> None:
    """For a console script: handle stop signals from now until the process exits."""
    STOPS.install(command)


def stop_pending() -> bool:
    """Whether a stop waits for a ``deferred`` block to end: the block should wrap up quickly."""
    return STOPS.pending_exit is not None


def ignore_from_now() -> None:
    """The command has done its work and the process is ending: a stop signal now is ignored.
    Python restores the default handlers (terminate) while it shuts down, which takes JAX a
    moment, and a signal then would kill the process and lose its exit code."""
    if STOPS.installed:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def flagging() -> Iterator[_Stops]:
    """While the block runs, a stop signal sets ``STOPS.signum`` instead of stopping the process;
    the block reads it between steps. Installs the handlers for the block alone if no console
    script did (a notebook, a sweep's job under submitit)."""
    owned = not STOPS.installed and STOPS.install()
    STOPS.flagging += 1
    try:
        yield STOPS
    finally:
        STOPS.flagging -= 1
        if owned:
            STOPS.uninstall()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stop that comes while the block runs (writing a checkpoint) waits for its end."""
    STOPS.deferring += 1
    try:
        yield
    finally:
        STOPS.deferring -= 1
        if not STOPS.deferring and STOPS.pending_exit is not None:
            (message, code), STOPS.pending_exit = STOPS.pending_exit, None
            STOPS._exit_now(message, code)
