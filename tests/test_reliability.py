"""Bad input through the installed console scripts: every row of docs/reliability.md is run here
and must exit 2 with one message (the one the document shows), no traceback, and no new folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from maml_cli.data.omniglot_source import load_omniglot
from maml_cli.engine.training import train_and_evaluate
from tests.bad_inputs import BAD_INPUTS
from tests.conftest import BIN, REPO, TINY, make_cfg, run_command, run_in_process
from tests.image_fakes import write_bad_folders, write_hostile_folders
from tests.omniglot_fakes import fake_sets, write_npz, write_zips

DOC = REPO / "docs" / "reliability.md"


def make_workspace(root: Path) -> Path:
    """The files the commands of BAD_INPUTS refer to (see tests/bad_inputs.py)."""
    root.mkdir(parents=True, exist_ok=True)
    train_and_evaluate(make_cfg(*TINY), root / "run")
    shutil.copytree(root / "run", root / "damaged")
    for f in (root / "damaged" / "checkpoints" / "20").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # cut short, as by a full disk
    shutil.copytree(root / "run", root / "coded")  # as if trained with model=custom model.target=...
    config = (root / "coded" / "config.yaml").read_text()
    (root / "coded" / "config.yaml").write_text(
        re.sub(
            r"(?ms)^model:\n(  .*?\n)+", "model:\n  name: custom\n  target: my_nets:make_net\n  kwargs: {}\n", config
        )
    )
    write_npz(root / "omniglot", fake_sets(background=10, evaluation=8, drawers=4))
    load_omniglot(str(root / "omniglot"), cache_dir=str(root / "cache"))  # reading data is no junk: cache it first
    (root / "notes.txt").write_text("not data\n")
    (root / "empty").mkdir()
    write_bad_folders(root / "folders")
    write_hostile_folders(root / "hostile")
    for name in ("empty", "cut", "bad_png"):
        write_zips(root / "zips" / name, fake_sets(background=10, evaluation=8, drawers=4))
    (root / "zips" / "empty" / "images_background.zip").write_bytes(b"")
    cut = root / "zips" / "cut" / "images_evaluation.zip"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    bad = root / "zips" / "bad_png" / "images_background.zip"
    with zipfile.ZipFile(bad) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    damaged = sorted(n for n in entries if n.endswith(".png"))[5]
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data[: len(data) // 2] if name == damaged else data)  # one image cut short
    (root / "support.csv").write_text("x,y\n0.5,0.1\n1.0,0.3\n")
    # Tampered copies of run/: config.yaml edited to another model; the newest checkpoint replaced
    # by that of another run of the same config; config.yaml deleted.
    shutil.copytree(root / "run", root / "edited")
    config = root / "edited" / "config.yaml"
    config.write_text(config.read_text().replace("hidden_sizes:\n  - 16\n  - 16", "hidden_sizes:\n  - 32\n  - 32"))
    assert "- 32" in config.read_text()
    shutil.copytree(root / "run", root / "copied")  # as if checkpoint 20 came from another run of it
    provenance = root / "copied" / "checkpoints" / "20" / "provenance" / "metadata"
    provenance.write_text(json.dumps({**json.loads(provenance.read_text()), "run_id": "0123456789ab"}))
    shutil.copytree(root / "run", root / "no_config")
    (root / "no_config" / "config.yaml").unlink()
    (root / "dangling").symlink_to(root / "gone")  # a link to a folder that is not there
    shutil.copytree(root / "run", root / "lock_folder")  # its lock file replaced by a folder
    (root / "lock_folder" / ".lock").unlink(missing_ok=True)
    (root / "lock_folder" / ".lock").mkdir()
    return root


def listing(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_case(case, workspace: Path):
    """(exit code, stderr with the workspace written as <tmp>, stdout): the console script's main,
    run in this process from ``workspace`` (every case fails before anything starts, so a process
    of its own would only add its start-up)."""
    args = [a.replace("{tmp}", str(workspace)) for a in case.command]
    saved = {key: os.environ.get(key) for key, _ in case.env}
    try:
        os.environ.update({key: value.replace("{tmp}", str(workspace)) for key, value in case.env})
        out = run_in_process(args[0], *args[1:], cwd=workspace)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out.returncode, out.stderr.replace(str(workspace), "<tmp>"), out.stdout


def documented_messages() -> dict:
    """{what: message} from docs/reliability.md's table."""
    text = DOC.read_text()
    rows = {}
    for block in re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", text, flags=re.S | re.M):
        what, body = block
        said = re.search(r"```text\n(.*?)```", body, flags=re.S)
        if said:
            rows[what.strip()] = said.group(1)
    return rows


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The cases run one after another in one workspace; each checks what it created against the
    listing just before it (a case that leaves something fails, whatever comes after it)."""
    workspace = make_workspace(tmp_path_factory.mktemp("template") / "workspace")
    found = {}
    for case in BAD_INPUTS:
        before = listing(workspace)
        code, stderr, stdout = run_case(case, workspace)
        found[case.what] = (code, stderr, stdout, listing(workspace) - before)
    return found


def test_there_are_at_least_twenty_rows():
    assert len(BAD_INPUTS) >= 20
    assert len({c.what for c in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.what for c in BAD_INPUTS])
def test_bad_input_is_one_clear_message(case, results):
    code, stderr, stdout, created = results[case.what]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    tool = case.command[0]
    assert stderr.startswith(f"{tool}: error: "), stderr
    assert stderr.count(f"{tool}: error: ") == 1
    assert case.says in stderr, stderr
    assert not created, f"left behind: {sorted(created)}"
    documented = documented_messages()
    assert case.what in documented, (
        f"docs/reliability.md has no row for {case.what!r}: run scripts/reliability_table.py"
    )
    assert documented[case.what] == stderr, "docs/reliability.md is out of date: run scripts/reliability_table.py"


def test_docs_list_no_row_that_is_not_tested():
    assert set(documented_messages()) == {c.what for c in BAD_INPUTS}


def test_help_pages_show_keys_groups_and_exit_codes():
    train = run_command("maml-train", "algorithm=mamlpp", "--help")  # one real process: the installed script
    assert train.returncode == 0 and "_schema" not in train.stdout
    for text in (
        "Usage:",
        "dataset     function, image_folder, miniimagenet, omniglot, *sinusoid",
        "*mamlpp",
        "logger      csv, mlflow, none, *tensorboard, wandb",
        "train.steps=70000",
        "outer (meta) iterations",
        "algorithm.multi_step_loss=true",
        "query loss after every inner step",
        "Exit codes: 0 done",
        "2 bad input",
        "130 interrupted",
        "a checkpoint was saved",
        "MAML_CLI_CPU_DEVICES=auto|N",
        "HOST:PORT of process 0 (null: SLURM's, or one process)",
    ):
        assert text in train.stdout, text
    assert "distributed={" not in train.stdout
    assert "model.target=???" in run_in_process("maml-train", "model=custom", "--help").stdout
    ev = run_in_process("maml-eval", "--help")
    assert ev.returncode == 0 and "_schema" not in ev.stdout and "_run" not in ev.stdout
    for text in (
        "run_dir=???",
        "a maml-train run directory",
        "dataset.path=null",
        "eval.episodes=null",
        "dataset     function, image_folder, miniimagenet, omniglot, sinusoid",
        "Exit codes",
        "nothing half-written",
        "trust_code=false",
    ):
        assert text in ev.stdout, text
    assert "checkpoint was saved" not in ev.stdout
    adapt = run_in_process("maml-adapt", "--help")
    assert adapt.returncode == 0
    for text in (
        "support=???",
        "query=???",
        "allow_single_query=false",
        "predictions.csv",
        "Exit codes",
        "trust_code=false",
    ):
        assert text in adapt.stdout, text


def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    write_npz(tmp_path / "omniglot", fake_sets(background=10, evaluation=8, drawers=4))
    args = [
        "experiment=omniglot_tiny",
        "dataset.path=omniglot",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "dataset.train_classes=12",
        "dataset.val_classes=4",
        "train.dry_run=true",
    ]
    out = subprocess.run([str(BIN / "maml-train"), *args], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"path: {tmp_path / 'omniglot'}" in out.stdout  # resolved, absolute
    assert "# plan: maml on cpu" in out.stdout and "task_batching=map" in out.stdout
    assert "data: " + str(tmp_path / "omniglot") in out.stdout
    assert not (tmp_path / "runs").exists()
    bad = subprocess.run(
        [str(BIN / "maml-train"), *args, "dataset.ways=20"], capture_output=True, text=True, cwd=tmp_path
    )
    assert bad.returncode == 2 and "fewer than dataset.ways=20" in bad.stderr
