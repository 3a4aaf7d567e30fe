"""A run directory someone changed by hand: maml-train, maml-eval and maml-adapt recover where the
run still says what it is (data.json deleted, metrics.jsonl cut mid-line) and refuse where it no
longer does (config.yaml edited, a checkpoint from another run, config.yaml deleted: the rows of
docs/reliability.md), and a refusal changes nothing in the folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from maml_cli.engine.training import train_and_evaluate
from maml_cli.run.checkpoints import Checkpointer
from tests.conftest import TINY, make_cfg, run_command, run_in_process

RESUME = ("maml-train", "experiment=sinusoid_tiny", "train.progress=false", "train.plots=false")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tampered")
    train_and_evaluate(make_cfg(*TINY), root / "run")
    train_and_evaluate(make_cfg(*TINY), root / "other")  # the same config, another run
    (root / "support.csv").write_text("x,y\n0.5,0.1\n1.0,0.3\n")
    return root


def copy_run(trained: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(trained / name, tmp_path / name))


def contents(folder: Path) -> dict:
    """Every file's bytes, by path (the lock file aside: its holder's pid changes, its use does not)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_a_deleted_data_json_is_recovered(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "data.json").unlink()
    scored = run_in_process("maml-eval", f"run_dir={run}", "eval.episodes=4")
    assert scored.returncode == 0, scored.stderr  # the shape comes from config.yaml
    adapted = run_in_process(
        "maml-adapt", f"run_dir={run}", f"support={trained / 'support.csv'}", "query=-1:1:5", f"out_dir={tmp_path}/o"
    )
    assert adapted.returncode == 0, adapted.stderr
    resumed = run_command(*RESUME, f"hydra.run.dir={run}")  # a process of its own: Hydra sets up logging
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "data.json").read_text())["input_shape"] == [1]  # written again


def test_metrics_cut_mid_line_are_read_past_and_repaired(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole[: len(whole) - 40])  # the last line cut, as by a crash mid-write
    best = run_in_process("maml-eval", f"run_dir={run}", "checkpoint=best", "eval.episodes=4")
    assert best.returncode == 0, best.stderr
    report = run_in_process("maml-report", str(tmp_path))
    assert report.returncode == 0, report.stderr
    longer = run_command(*RESUME, "train.steps=30", f"hydra.run.dir={run}")
    assert longer.returncode == 0, longer.stderr
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line whole again
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows}) and rows[-1]["step"] == 30


@pytest.mark.parametrize("tamper", ["edited config", "checkpoint from another run", "deleted config"])
def test_a_refused_tampered_run_is_left_as_it_was(trained, tmp_path, tamper):
    run = copy_run(trained, tmp_path)
    if tamper == "edited config":
        config = run / "config.yaml"
        config.write_text(config.read_text().replace("hidden_sizes:\n  - 16\n  - 16", "hidden_sizes:\n  - 8\n  - 8"))
        says = "was trained with another config"
    elif tamper == "checkpoint from another run":
        shutil.rmtree(run / "checkpoints" / "10")
        shutil.copytree(trained / "other" / "checkpoints" / "10", run / "checkpoints" / "10")
        says = "comes from another run"
    else:
        (run / "config.yaml").unlink()
        says = "config.yaml"
    before = contents(run)
    commands = [
        (*RESUME, f"hydra.run.dir={run}"),
        (*RESUME, "train.steps=40", f"hydra.run.dir={run}"),
        ("maml-eval", f"run_dir={run}", "checkpoint=10"),
        ("maml-adapt", f"run_dir={run}", f"support={trained / 'support.csv'}", "query=-1:1:5", "checkpoint=10"),
    ]
    for command in commands:
        refused = run_in_process(*command)
        assert refused.returncode == 2, (command, refused.stderr)
        assert "Traceback" not in refused.stderr and says in refused.stderr, refused.stderr
        assert contents(run) == before, command  # nothing overwritten, moved or added
    assert not (run / "damaged_checkpoints").exists()  # a mismatch is not damage: nothing set aside
    assert Checkpointer(run / "checkpoints", read_only=True).steps() == [10, 20]
