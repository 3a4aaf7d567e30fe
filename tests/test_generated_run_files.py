"""Generated damage to a run directory: any file or folder of a real run (made by the installed
maml-train, then scored by maml-eval) is deleted, cut short, filled with random bytes, made invalid
YAML and JSON, replaced by a folder (or a folder by a file), or made unwritable; then a resume,
maml-eval, maml-adapt or maml-report runs on it.

The invariants, whatever the damage:
- exit 0 or 2, never a traceback or an internal error (exit 70);
- on exit 2: one ``error:`` line, and nothing in the run or the workspace created or changed;
- on exit 0: what the command wrote is whole (strict JSON, a checkpoint of the last step), the
  readers changed nothing in the run but their own records, nothing was written outside the run,
  ``out_dir`` and the report folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import maml_cli as mc
from tests.conftest import run_command, run_in_process
from tests.generated import examples, fuzzing

TRAIN = ("experiment=sinusoid_tiny", "train.progress=false", "train.plots=false")
DAMAGES = ("delete", "truncate", "random bytes", "invalid text", "swap file and folder", "unwritable")
COMMANDS = ("resume", "maml-eval", "maml-adapt", "maml-report")
READER_RECORDS = ("eval", ".eval")  # what maml-eval may write into a run: eval*.json/png and their temporaries


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A whole run as the commands leave it: train.log, checkpoints, metrics, eval.json (and .hydra/)."""
    root = tmp_path_factory.mktemp("template")
    if fuzzing():  # the installed command: .hydra/ too
        trained = run_command("maml-train", *TRAIN, f"hydra.run.dir={root / 'run'}", cwd=root)
        assert trained.returncode == 0, trained.stderr
    else:  # the library call it stands on, in this process (seconds less)
        mc.train("sinusoid_tiny", list(TRAIN[1:]), run_dir=root / "run")
    scored = run_in_process("maml-eval", f"run_dir={root / 'run'}", "eval.episodes=8")
    assert scored.returncode == 0, scored.stderr
    return root / "run"


def paths_of(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def contents(folder: Path) -> dict:
    """Every entry's bytes (files) or kind (folders), by path."""
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink() or not p.exists():
            out[key] = "link"
        elif p.is_dir():
            out[key] = "folder"
        else:
            try:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as e:
                out[key] = f"unreadable: {e.errno}"
    return out


def chattr(flag: str, path: Path) -> bool:
    """Make ``path`` immutable (+i) or not (-i): unwritable even for root. False where unsupported."""
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def release(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        if not p.is_symlink():
            chattr("-i", p)


def damage(run: Path, target: str, kind: str, junk: bytes) -> None:
    path = run / target
    if kind == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif kind == "swap file and folder":
        if path.is_dir():
            shutil.rmtree(path)
            path.write_bytes(junk)
        else:
            path.unlink()
            path.mkdir()
            (path / "junk").write_bytes(junk)
    elif kind == "unwritable":
        assume(chattr("+i", path))
    else:
        assume(path.is_file())
        if kind == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "random bytes":
            path.write_bytes(junk)
        else:  # invalid YAML and invalid JSON at once
            path.write_text('{"step": [unclosed: \x00 : - ]\n\tkey: "')


def resume(workspace: Path, run: Path) -> tuple[int, str, str]:
    """maml-train on the run again, ten steps longer: in the fuzz profile the installed command,
    in the default one the library call it stands on (a process costs seconds)."""
    args = (*TRAIN, "train.steps=30")
    if fuzzing():
        out = run_command("maml-train", *args, f"hydra.run.dir={run}", cwd=workspace)
        return out.returncode, out.stderr, out.stdout
    try:
        mc.train("sinusoid_tiny", [a for a in args if not a.startswith("experiment=")], run_dir=run)
    except mc.UserError as e:
        return 2, f"maml-train: error: {e}", ""
    return 0, "", ""


def run(command: str, workspace: Path, run_dir: Path) -> tuple[int, str, str]:
    if command == "resume":
        return resume(workspace, run_dir)
    if command == "maml-eval":
        out = run_in_process("maml-eval", f"run_dir={run_dir}", "eval.episodes=8", cwd=workspace)
    elif command == "maml-adapt":
        out = run_in_process(
            "maml-adapt",
            f"run_dir={run_dir}",
            f"support={workspace / 'support.csv'}",
            "query=-2:2:5",
            f"out_dir={workspace / 'out'}",
            cwd=workspace,
        )
    else:
        out = run_in_process("maml-report", str(run_dir.parent), "--out", str(workspace / "report"), cwd=workspace)
    return out.returncode, out.stderr, out.stdout


def check_written_whole(command: str, workspace: Path, run_dir: Path, stdout: str) -> None:
    if command == "maml-eval":
        written = re.search(r"^wrote (\S+\.json)", stdout, flags=re.M)
        assert written, stdout
        record = json.loads(Path(written.group(1)).read_text())  # strict JSON: no NaN
        assert record["per_step"] and record["episodes"] == 8
    elif command == "maml-adapt":
        record = json.loads((workspace / "out" / "predictions.json").read_text())
        assert len(record["predictions"]) == 5
        rows = (workspace / "out" / "predictions.csv").read_text().splitlines()
        assert len(rows) == 6  # header and the 5 query points, whole
    elif command == "maml-report":
        assert (workspace / "report" / "report.md").read_text().startswith("# ")
    else:
        steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        assert steps and steps[-1] == 30, steps
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        logged = [json.loads(line)["step"] for line in lines]
        assert logged == sorted(set(logged)) and logged[-1] == 30


@pytest.mark.generated
@examples(ci=4, fuzz=300)
@given(data=st.data(), kind=st.sampled_from(DAMAGES), command=st.sampled_from(COMMANDS))
def test_a_damaged_run_gives_a_clear_answer_and_loses_nothing(template, data, kind, command):
    target = data.draw(st.sampled_from(paths_of(template)), label="target")
    junk = data.draw(st.binary(min_size=0, max_size=512), label="junk")
    workspace = Path(tempfile.mkdtemp(prefix="maml-cli-damaged-"))
    try:
        runs = workspace / "runs"
        runs.mkdir()
        run_dir = Path(shutil.copytree(template, runs / "run", symlinks=True))
        (workspace / "support.csv").write_text("x,y\n-1,0.5\n0,0.1\n1,-0.4\n")
        damage(run_dir, target, kind, junk)
        before, around = contents(run_dir), set(os.listdir(workspace))

        code, stderr, stdout = run(command, workspace, run_dir)

        assert code in (0, 2), stderr
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        after = contents(run_dir)
        if code == 2:
            assert stderr.count(": error: ") == 1, stderr
            assert after == before, f"{command} refused yet changed the run"
            assert set(os.listdir(workspace)) == around, "refused, yet created something"
            return
        check_written_whole(command, workspace, run_dir, stdout)
        made = set(os.listdir(workspace)) - around
        assert made <= {"out", "report"}, f"written outside the run, out_dir and the report: {made}"
        if command != "resume":
            changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
            assert all(k.startswith(READER_RECORDS) for k in changed), f"{command} changed the run: {changed}"
    finally:
        release(workspace)
        shutil.rmtree(workspace, ignore_errors=True)
