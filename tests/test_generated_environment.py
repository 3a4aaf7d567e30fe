"""Generated environments: MAML_CLI_CACHE and MAML_CLI_COMPILE_CACHE empty, blank, relative, a
file, a link to nothing, a folder that cannot be written (immutable, even for root) or a full disk;
HOME unset, empty or missing; TMPDIR missing or a file.

The invariants: exit 0 or 2, never a traceback; on exit 2 one line naming the variable, and nothing
created; on exit 0 the run is whole, and nothing was written outside the run directory and the
caches (never into the working directory by way of an empty path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.conftest import BIN, TINY, run_in_process
from tests.generated import examples
from tests.test_generated_run_files import chattr, release

FOLDER_KINDS = ("unset", "empty", "blank", "relative", "new", "file", "dangling link", "unwritable", "full")
HOME_KINDS = ("as is", "unset", "empty", "missing")
TMPDIR_KINDS = ("as is", "missing", "file")


@contextlib.contextmanager
def full_disk(at: Path):
    """A folder on a tiny tmpfs with no space left; None where mounting is not allowed."""
    at.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(at)], capture_output=True)
    if mounted.returncode != 0:
        yield None
        return
    try:
        with contextlib.suppress(OSError), open(at / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], capture_output=True)


def folder_value(kind: str, workspace: Path, name: str, stack: contextlib.ExitStack) -> str | None:
    """The value of a cache variable of this kind (None: unset), made in ``workspace``."""
    place = workspace / name
    if kind == "unset":
        return None
    if kind == "empty":
        return ""
    if kind == "blank":
        return "   "
    if kind == "relative":
        return name
    if kind == "new":
        return str(place / "a" / "b")
    if kind == "file":
        place.write_text("not a folder\n")
    elif kind == "dangling link":
        place.symlink_to(workspace / "nowhere" / name)
    elif kind == "unwritable":
        place.mkdir()
        assume(chattr("+i", place))
    elif kind == "full":
        full = stack.enter_context(full_disk(place))
        assume(full is not None)
    return str(place)


def environment(workspace: Path, cache: str, compile_cache: str, home: str, tmpdir: str, stack) -> dict:
    env = dict(os.environ)
    for key, kind in (("MAML_CLI_CACHE", cache), ("MAML_CLI_COMPILE_CACHE", compile_cache)):
        value = folder_value(kind, workspace, key.lower(), stack)
        env.pop(key, None)
        if value is not None:
            env[key] = value
    if "MAML_CLI_CACHE" not in env:  # the default cache is the home folder's: keep it in the workspace
        env["HOME"] = str(workspace / "home")
    if home == "unset":
        env.pop("HOME", None)
        env.setdefault("MAML_CLI_CACHE", str(workspace / "home-cache"))
    elif home == "empty":
        env["HOME"] = ""
    elif home == "missing":
        env["HOME"] = str(workspace / "no" / "home")
    if tmpdir == "missing":
        env["TMPDIR"] = str(workspace / "no-tmp")
    elif tmpdir == "file":
        (workspace / "tmp-file").write_text("x")
        env["TMPDIR"] = str(workspace / "tmp-file")
    return env


def listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.is_dir() else set()


def check(code: int, stderr: str, workspace: Path, before: set) -> None:
    assert code in (0, 2), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if code == 2:
        assert stderr.count("maml-train: error: ") == 1, stderr
        assert listing(workspace) == before, "refused, yet created something"


drawn = {
    "cache": st.sampled_from(FOLDER_KINDS),
    "compile_cache": st.sampled_from((*FOLDER_KINDS, "off")),
    "home": st.sampled_from(HOME_KINDS),
    "tmpdir": st.sampled_from(TMPDIR_KINDS),
}


@pytest.mark.generated
@examples(ci=6, fuzz=400)
@given(**drawn)
def test_the_environment_is_checked_before_anything_is_written(monkeypatch, cache, compile_cache, home, tmpdir):
    """In this process, with train.dry_run=true: the checks every command makes first."""
    workspace = Path(tempfile.mkdtemp(prefix="maml-cli-env-"))
    try:
        with contextlib.ExitStack() as stack:
            env = environment(workspace, cache, compile_cache, home, tmpdir, stack)
            before = listing(workspace)
            with monkeypatch.context() as patch:
                for key in ("MAML_CLI_CACHE", "MAML_CLI_COMPILE_CACHE", "HOME", "TMPDIR"):
                    patch.delenv(key, raising=False)
                    if key in env:
                        patch.setenv(key, env[key])
                out = run_in_process(
                    "maml-train", *TINY, "train.dry_run=true", f"hydra.run.dir={workspace / 'run'}", cwd=workspace
                )
            check(out.returncode, out.stderr, workspace, before)
            unusable = ("empty", "blank", "file", "dangling link", "unwritable", "full")
            if cache in unusable or compile_cache in unusable:
                assert out.returncode == 2 and "MAML_CLI_" in out.stderr, out.stderr
    finally:
        release(workspace)
        shutil.rmtree(workspace, ignore_errors=True)


@pytest.mark.generated
@examples(ci=1, fuzz=40)
@given(**drawn)
def test_a_real_run_in_any_environment_trains_or_says_why(cache, compile_cache, home, tmpdir):
    """The installed maml-train, trained to the end in its own process."""
    workspace = Path(tempfile.mkdtemp(prefix="maml-cli-env-"))
    try:
        with contextlib.ExitStack() as stack:
            env = environment(workspace, cache, compile_cache, home, tmpdir, stack)
            before = listing(workspace)
            out = subprocess.run(
                [str(BIN / "maml-train"), *TINY, "hydra.run.dir=run"],
                capture_output=True,
                text=True,
                env=env,
                cwd=workspace,
                timeout=300,
            )
            check(out.returncode, out.stderr, workspace, before)
            if out.returncode == 0:
                assert (workspace / "run" / "checkpoints" / "20").is_dir(), out.stderr
                allowed = {"run", "home", "home-cache", "maml_cli_cache", "maml_cli_compile_cache"}
                made = {Path(p).parts[0] for p in listing(workspace) - before}
                assert made <= allowed, f"written outside the run and the caches: {made - allowed}"
    finally:
        release(workspace)
        shutil.rmtree(workspace, ignore_errors=True)
