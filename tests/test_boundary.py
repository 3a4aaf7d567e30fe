"""The edges every command shares: one boundary that turns any error into one line and a documented
exit code (``commands.shell.guarded``), and one helper through which every file the tool produces
is written whole or not at all (``maml_cli.atomic``), even when the writer is killed mid-write."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml_cli import atomic
from maml_cli.commands import shell
from tests.conftest import BIN, TINY, run_in_process
from tests.generated import examples


@pytest.mark.parametrize("command", ["maml-train", "maml-eval", "maml-adapt", "maml-report"])
def test_an_unexpected_error_is_one_line_exit_70_and_its_traceback_in_a_file(command, monkeypatch, tmp_path):
    monkeypatch.setenv("MAML_CLI_CACHE", str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("something we did not foresee\nsecond line")

    # The first thing each command does after reading its command line.
    target = "maml_cli.commands.report.find_runs" if command == "maml-report" else "maml_cli.commands.shell.CommandLine"
    monkeypatch.setattr(target, broken)
    out = run_in_process(command, str(tmp_path) if command == "maml-report" else "--x=1", cwd=tmp_path)
    assert out.returncode == shell.EXIT_INTERNAL == 70
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"{command}: internal error: RuntimeError: something we did not foresee (traceback in ")
    assert lines[0].endswith("); please report it")
    saved = Path(lines[0].split("(traceback in ")[1].split(")")[0])
    assert saved.parent == tmp_path / "cache" / "errors"
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "second line" in text and command in text


def test_a_user_error_is_one_line_and_exit_2(tmp_path):
    out = run_in_process("maml-eval", f"run_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("maml-eval: error: ")


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(ValueError), atomic.atomic_open(target) as f:
        f.write("half")
        raise ValueError("the writer failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["record.json"]
    (tmp_path / "folder").mkdir()
    with pytest.raises(atomic.WriteError, match="it is a folder"):
        atomic.write_text(tmp_path / "folder", "x")


WRITER = textwrap.dedent(
    """
    import sys, time
    from maml_cli.atomic import atomic_open
    path, size = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)
    with atomic_open(path, "wb") as f:
        for i in range(size // 1024):
            f.write(bytes([65 + i % 26]) * 1024)
            if i % 16 == 0:
                time.sleep(0.001)
    print("done", flush=True)
    """
)


@pytest.mark.generated
@examples(ci=4, fuzz=300)
@given(delay=st.floats(min_value=0.0, max_value=0.15), size_kb=st.integers(min_value=1, max_value=4096))
def test_a_writer_killed_at_any_moment_leaves_the_old_file_or_the_new_one(delay, size_kb):
    folder = Path(tempfile.mkdtemp(prefix="maml-cli-atomic-"))
    try:
        check_killed_writer(folder, delay, size_kb)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_killed_writer(folder: Path, delay: float, size_kb: int) -> None:
    target = folder / "predictions.csv"
    old = b"the previous version\n"
    target.write_bytes(old)
    new = b"".join(bytes([65 + i % 26]) * 1024 for i in range(size_kb))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(size_kb * 1024)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert target.read_bytes() in (old, new)
    atomic.write_bytes(target, b"next")  # the next write of the file removes a killed writer's temporary
    assert target.read_bytes() == b"next" and os.listdir(folder) == ["predictions.csv"]


@pytest.mark.parametrize(
    "case",
    ["stdout to a full device", "stdout closed", "working directory deleted", "a JAX setting JAX refuses"],
)
def test_the_installed_commands_answer_in_one_line_whatever_their_surroundings(case, tmp_path):
    """What the entry points handle before anything is imported: the streams, the working
    directory, the JAX environment."""
    command, env, cwd, stdout = [str(BIN / "maml-train"), *TINY, "train.dry_run=true"], dict(os.environ), tmp_path, None
    if case == "stdout to a full device":
        stdout = open("/dev/full", "w")  # noqa: SIM115
    elif case == "stdout closed":
        command = ["sh", "-c", '"$0" "$@" >&-', *command]
    elif case == "working directory deleted":
        cwd = tmp_path / "gone"
        cwd.mkdir()
        command = ["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(cwd), *command]
        cwd = tmp_path
    else:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = "foo"
    out = subprocess.run(command, cwd=cwd, env=env, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stdout is not None:
        stdout.close()
    expected = {
        "stdout to a full device": (2, "cannot write the output (No space left on device)"),
        "stdout closed": (0, ""),
        "working directory deleted": (2, "the working directory no longer exists"),
        "a JAX setting JAX refuses": (2, "JAX refused JAX_DEFAULT_MATMUL_PRECISION=foo"),
    }[case]
    assert out.returncode == expected[0], out.stderr
    assert "Traceback" not in out.stderr and expected[1] in out.stderr
    assert out.stderr.count("\n") <= 1
