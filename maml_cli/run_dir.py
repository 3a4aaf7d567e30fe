"""The run directory as a shared resource: one training process at a time (a lock the kernel drops
when its holder dies, even by SIGKILL), files replaced whole or not at all, a record of what
produced the run, and no empty folders left by a run that never started."""

from __future__ import annotations

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
from pathlib import Path

from maml_cli.errors import UserError

LOCK_NAME = ".lock"
RUN_DATA = "data.json"  # what the run was trained on: dataset, input shape, source (Experiment.data_record)
# What Hydra writes into a run directory before our code runs: a folder holding only these is no run.
HYDRA_ONLY = {".hydra", "train.log", LOCK_NAME}


class RunDirError(UserError):
    """The run directory cannot be used: busy, or not writable."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it, so a reader (or a
    process killed mid-write) sees the old content or the new, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"{self.path.parent} is being trained by {_holder(self.path)}: wait for it to finish "
                "(or stop it), or pick another hydra.run.dir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
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


def is_being_trained(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock."""
    if not (Path(run_dir) / LOCK_NAME).exists():
        return False
    try:
        RunLock(run_dir).acquire().release()
        return False
    except RunDirError:
        return True


def check_usable(run_dir: Path) -> None:
    """Before Hydra creates anything: refuse a run directory another process trains, or one that
    cannot be written (read-only, full), while the files already there stay as they are."""
    run_dir = Path(run_dir)
    lock = run_dir / LOCK_NAME
    if lock.exists():
        RunLock(run_dir).acquire().release()  # raises RunDirError while a live process holds it
    probe_dir = run_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise RunDirError(f"cannot create the run directory {run_dir}: {probe_dir} is a file")
    try:
        probe = probe_dir / f".maml-cli-write-test{os.getpid()}"
        probe.write_text("x")
        probe.unlink()
    except OSError as e:
        raise RunDirError(
            f"cannot write to {probe_dir} ({e.strerror}): pick another hydra.run.dir, "
            "or make it writable" + (" (free some space)" if e.errno == errno.ENOSPC else "")
        ) from None


def _checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of the finished checkpoints in ``run_dir/checkpoints`` (Orbax renames a step's folder
    to its bare number when the save is whole), oldest first."""
    checkpoints = Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) if checkpoints.is_dir() else []


def check_resumable(run_dir: Path, cfg) -> None:
    """A run directory that holds a run may only be resumed with the same experiment."""
    from omegaconf import OmegaConf

    from maml_cli.config import resume_conflicts

    saved, checkpoints = Path(run_dir) / "config.yaml", Path(run_dir) / "checkpoints"
    steps = _checkpoint_steps(run_dir)
    if not steps:
        return  # nothing trained yet: nothing to mix
    if not saved.is_file():
        raise UserError(
            f"{run_dir} holds checkpoints but no config.yaml: it was deleted. Put it back, or train in another "
            "hydra.run.dir (resuming without it could mix two experiments)"
        )
    from maml_cli.checkpoints import check_provenance

    # A config.yaml edited by hand, or a checkpoint copied in from another run: refused as they are
    # (training on would later delete the copied one with the old checkpoints).
    run_id, saved_cfg = run_id_of(run_dir), OmegaConf.load(saved)
    for step in reversed(steps):
        check_provenance(checkpoints / str(step), saved_cfg, run_id)
    conflicts = resume_conflicts(OmegaConf.load(saved), cfg)
    if conflicts:
        raise UserError(
            f"{run_dir} holds a run with a different config; resuming would mix two experiments. "
            "Use another hydra.run.dir, or the same settings. Differences:\n  " + "\n  ".join(conflicts)
        )


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
                ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """What produced a result: versions, backend and devices, Python, the code's commit, the
    command line."""
    from importlib.metadata import PackageNotFoundError, version

    import jax

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


def run_id_of(run_dir: Path) -> str | None:
    """The run's id: the one environment.json records, else the one its newest checkpoint with a
    provenance record carries (environment.json deleted); None for a run that has neither."""
    from maml_cli.checkpoints import read_provenance

    recorded = recorded_run_id(run_dir)
    if recorded is not None:
        return recorded
    for step in reversed(_checkpoint_steps(run_dir)):
        found = (read_provenance(Path(run_dir) / "checkpoints" / str(step)) or {}).get("run_id")
        if found:
            return found
    return None


def record_session(run_dir: Path, start_step: int, run_id: str | None = None) -> dict:
    """Append this process's environment to ``<run_dir>/environment.json`` (one entry per
    session: a resumed run may continue on another machine)."""
    path = Path(run_dir) / "environment.json"
    sessions = _sessions(run_dir)
    env = {**environment(), "start_step": int(start_step), "run_id": run_id}
    sessions.append(env)
    atomic_write_text(path, json.dumps({"sessions": sessions}, indent=2) + "\n")
    return env
