"""The run directory as a shared resource: one training process at a time (a lock the kernel drops
when its holder dies, even by SIGKILL), files replaced whole or not at all, a record of what
produced the run, and no empty folders left by a run that never started."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from maml_cli.atomic import describe_os_error, write_text
from maml_cli.errors import UserError
from maml_cli.paths import checked_path

LOCK_NAME = ".lock"
RUN_DATA = "data.json"  # what the run was trained on: dataset, input shape, source (Experiment.data_record)
# What Hydra writes into a run directory before our code runs: a folder holding only these is no run.
HYDRA_ONLY = {".hydra", "train.log", LOCK_NAME}


class RunDirError(UserError):
    """The run directory cannot be used: busy, or not writable."""


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` into ``path``, whole or not at all (``maml_cli.atomic``)."""

    write_text(path, text)


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "another process"


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` held while a process trains the run."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(_lock_unusable(self.path, e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"{self.path.parent} is being trained by {_holder(self.path)}: wait for it to finish "
                "(or stop it), or pick another hydra.run.dir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError as e:
            os.close(fd)
            raise RunDirError(_lock_unusable(self.path, e)) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, reused)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _lock_unusable(lock: Path, error: OSError) -> str:

    if lock.is_dir():
        return f"{lock} is a folder, not the run's lock file: remove it (rmdir {lock}) and run the command again"
    return f"cannot lock {lock} ({describe_os_error(error)})"


def is_being_trained(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock. Reads only: the lock file is neither created
    nor written (maml-eval and maml-report leave the run as it is)."""
    lock = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # no lock file (or none that can be opened): nobody holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the shared lock taken by the probe
    return False


def check_usable(run_dir: Path) -> None:
    """Before Hydra creates anything: refuse a run directory another process trains, or one that
    cannot be written (read-only, full), while the files already there stay as they are."""
    run_dir = Path(run_dir)
    lock = run_dir / LOCK_NAME
    if lock.is_dir() or (lock.exists() and not lock.is_file()):
        raise RunDirError(_lock_unusable(lock, OSError(errno.EISDIR, "not a file")))
    if is_being_trained(run_dir):
        raise RunDirError(
            f"{run_dir} is being trained by {_holder(lock)}: wait for it to finish (or stop it), or pick "
            "another hydra.run.dir"
        )
    probe_dir = run_dir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise RunDirError(f"cannot create the run directory {run_dir}: {probe_dir} is a file")
    check_entry_kinds(run_dir)
    check_writable_entries(run_dir)
    try:
        probe = probe_dir / f".maml-cli-write-test{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise RunDirError(
            f"cannot write to {probe_dir} ({e.strerror}): pick another hydra.run.dir, "
            "or make it writable" + (" (free some space)" if e.errno == errno.ENOSPC else "")
        ) from None


# What maml-train and the readers write into a run directory: a folder holding anything else is
# somebody's own folder, not a run.
RUN_FILES = {
    "config.yaml",
    RUN_DATA,
    "environment.json",
    "metrics.jsonl",
    "metrics.csv",
    "checkpoints",
    "damaged_checkpoints",
    "plots",
    "tensorboard",
    "wandb",
    "mlflow.db",
    "mlruns",
    "predictions.csv",
    "predictions.json",
    "adapted.png",
    *HYDRA_ONLY,
}
RUN_MARKERS = ("checkpoints", "metrics.jsonl", "environment.json")  # besides config.yaml: trained by maml-train


def _is_run_file(name: str) -> bool:
    return (
        name in RUN_FILES
        or (name.startswith("eval") and name.endswith((".json", ".png")))
        or (name.startswith("report.") and name.endswith((".md", ".csv", ".png")))
        or (name.startswith(".") and ".tmp" in name)  # a temporary left by a killed write
    )


# The kind of each entry maml-train and Hydra write into a run: a folder where a file belongs (or the
# reverse) is refused before Hydra or the trainer trips over it.
RUN_FILE_KINDS = {
    "config.yaml": "file",
    RUN_DATA: "file",
    "environment.json": "file",
    "metrics.jsonl": "file",
    "metrics.csv": "file",
    "train.log": "file",
    LOCK_NAME: "file",
    ".hydra": "folder",
    ".hydra/config.yaml": "file",  # Hydra's record of the job, rewritten by each session
    ".hydra/hydra.yaml": "file",
    ".hydra/overrides.yaml": "file",
    "checkpoints": "folder",
    "plots": "folder",
    "tensorboard": "folder",
}


def check_entry_kinds(run_dir: Path, names=None) -> None:
    """Refuse a run directory where one of the run's own files is a folder, or a folder a file (a
    link to nothing counts as neither)."""
    for name in names or RUN_FILE_KINDS:
        path = Path(run_dir) / name
        if not (path.exists() or path.is_symlink()):
            continue
        kind = RUN_FILE_KINDS[name]
        found = "a folder" if path.is_dir() else "a file" if path.is_file() else "a link to nothing"
        if found != f"a {kind}":
            raise RunDirError(
                f"{path} is {found}, where maml-train keeps its {name} {kind}: move it away (or restore "
                "it) and run the command again"
            )


def check_writable_entries(run_dir: Path) -> None:
    """Refuse, before anything is written, a run whose own files or folders cannot be replaced (a
    read-only mount, an immutable file): training would otherwise stop half-way through its first
    writes, with some files new and others old."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    entries = [run_dir]
    for name, kind in RUN_FILE_KINDS.items():
        path = run_dir / name
        if path.exists() and not path.is_symlink():
            entries.append(path)
            if kind == "folder":
                entries += [p for p in path.rglob("*") if not p.is_symlink()]
    for path in entries:
        if not os.access(path, os.W_OK):
            raise RunDirError(
                f"{path} cannot be written (read-only or immutable): make it writable (chmod, chattr -i, "
                "a writable mount) or train in another hydra.run.dir"
            )


def is_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a maml-train run: its config.yaml and one of its records."""
    run_dir = Path(run_dir)
    return (run_dir / "config.yaml").is_file() and any((run_dir / m).exists() for m in RUN_MARKERS)


def _check_not_tilde(path: Path, key: str) -> None:
    if str(path).startswith("~"):
        raise RunDirError(
            f"{key}={path} starts with ~, which is not expanded here (a folder named ~ would be made): "
            f"write $HOME{str(path)[1:]} or an absolute path"
        )


def _refuse_root_and_home(path: Path, key: str, hint: str) -> None:
    resolved = Path(path).absolute().resolve()
    if resolved == Path(resolved.anchor):
        raise RunDirError(f"{key}={path} is the root folder: {hint}")
    with contextlib.suppress(RuntimeError):
        if resolved == Path.home().resolve():
            raise RunDirError(f"{key}={path} is your home folder: {hint}")


SWEEP_FILES = {"multirun.yaml", ".submitit", "optimization_results.yaml"}  # what Hydra writes beside the jobs


def check_sweep_place(sweep_dir: Path, force: bool = False) -> None:
    """A sweep's folder holds Hydra's records and one run folder per job: never the root or the
    home folder, a run, or a folder holding somebody's own files (a checkout, a dataset)."""
    _check_not_tilde(sweep_dir, "hydra.sweep.dir")
    checked_path(sweep_dir, "hydra.sweep.dir")
    if force:
        return
    hint = "pick a new folder, or pass train.force_run_dir=true to sweep there anyway"
    _refuse_root_and_home(sweep_dir, "hydra.sweep.dir", hint)
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return
    if is_run(sweep_dir):
        raise RunDirError(f"hydra.sweep.dir={sweep_dir} is a run directory, not a sweep's folder: {hint}")

    def holds_only_run_files(folder: Path) -> bool:
        try:
            return all(_is_run_file(e.name) for e in os.scandir(folder))
        except OSError:
            return False

    try:
        entries = list(os.scandir(sweep_dir))
    except OSError as e:
        raise RunDirError(f"cannot list hydra.sweep.dir={sweep_dir} ({e.strerror})") from None
    foreign = sorted(
        e.name
        for e in entries
        if not (
            e.name in SWEEP_FILES
            or _is_run_file(e.name)
            or (e.is_dir(follow_symlinks=False) and holds_only_run_files(Path(e.path)))
        )
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunDirError(f"hydra.sweep.dir={sweep_dir} holds files that are not a sweep's ({shown}): {hint}")


def check_place(run_dir: Path, force: bool = False) -> None:
    """Refuse, before anything is written, to train in the root folder, the home folder, or a
    folder holding files that are not a run's (somebody's own folder: training would mix its files
    in and leave them there). ``force`` (train.force_run_dir=true) trains there anyway."""
    _check_not_tilde(run_dir, "hydra.run.dir")
    checked_path(run_dir, "hydra.run.dir")
    if force:
        return
    run_dir = Path(run_dir).absolute()
    hint = "pick a new or empty folder (hydra.run.dir=DIR), or pass train.force_run_dir=true to train there anyway"
    _refuse_root_and_home(run_dir, "hydra.run.dir", hint)
    if not run_dir.is_dir() or is_run(run_dir):
        return
    try:
        foreign = sorted(e.name for e in os.scandir(run_dir) if not _is_run_file(e.name))
    except OSError as e:
        raise RunDirError(f"cannot list hydra.run.dir={run_dir} ({e.strerror})") from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunDirError(f"hydra.run.dir={run_dir} holds files that are not a maml-train run ({shown}): {hint}")


def finished_steps(checkpoints: Path) -> list[int]:
    """The steps of the finished checkpoints in the folder ``checkpoints``, oldest first: a folder
    named by its step alone (Orbax renames a step's folder to its bare number when the save is whole;
    one being written has a temporary suffix). The one listing every reader and check uses."""
    try:
        names = [p.name for p in Path(checkpoints).iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if n.isascii() and n.isdigit() and (Path(checkpoints) / n).is_dir())


def remove_if_not_a_run(run_dir: Path) -> bool:
    """Delete ``run_dir`` when it holds only what Hydra wrote before a config was refused. True if
    removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _git_commit() -> str | None:
    """The commit of the maml_cli source when it runs from a git checkout (``+dirty`` when it has
    uncommitted changes); None for an installed copy."""
    source = Path(__file__).resolve().parent
    try:

        def git(*args):
            return subprocess.run(
                ["git", "-C", str(source), *args],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
                # a read that takes no lock: `git status` would otherwise create .git/index.lock,
                # failing a commit made at that moment (or leaving the lock if killed)
                env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """What produced a result: versions, backend and devices, Python, the code's commit, the
    command line."""
    import jax  # not at the top: maml-report and the commands' checks read run folders without JAX

    versions = {}
    for package in ("maml-cli", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    devices = jax.devices()
    return {
        "versions": versions,
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in devices],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": _git_commit(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _sessions(run_dir: Path) -> list:
    path = Path(run_dir) / "environment.json"
    try:
        return list(json.loads(path.read_text())["sessions"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def recorded_run_id(run_dir: Path) -> str | None:
    """The run's id (made when it started, kept in environment.json and in every checkpoint), or
    None for a run without one."""
    ids = [s.get("run_id") for s in _sessions(run_dir) if isinstance(s, dict) and s.get("run_id")]
    return ids[-1] if ids else None


def record_session(run_dir: Path, start_step: int, run_id: str | None = None) -> dict:
    """Append this process's environment to ``<run_dir>/environment.json`` (one entry per
    session: a resumed run may continue on another machine)."""
    path = Path(run_dir) / "environment.json"
    sessions = _sessions(run_dir)
    env = {**environment(), "start_step": int(start_step), "run_id": run_id}
    sessions.append(env)
    atomic_write_text(path, json.dumps({"sessions": sessions}, indent=2) + "\n")
    return env
