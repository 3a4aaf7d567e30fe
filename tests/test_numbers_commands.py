"""What the commands say and keep (issue 30, item 7): maml-eval keeps a record per set of options,
a dry run names the cache entry it wrote and compiles nothing to disk, and the end of training
says how to open the TensorBoard curves."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from maml_cli.engine.training import Summary, train_and_evaluate
from tests.conftest import BIN, TINY, make_cfg, run_in_process
from tests.omniglot_fakes import fake_sets, write_npz


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("records") / "run"
    train_and_evaluate(make_cfg(*TINY), run)
    return run


def _eval(run, *args, expect=0):
    done = run_in_process("maml-eval", f"run_dir={run}", "progress=false", *args)
    assert done.returncode == expect, done.stderr
    return done


def test_each_set_of_options_keeps_its_own_record(trained):
    run = trained
    _eval(run)
    default = (run / "eval.json").read_bytes()
    assert json.loads(default)["options"] == {}
    other = _eval(run, "split=val", "checkpoint=best")
    record = run / "eval_split-val_checkpoint-best.json"
    assert f"wrote {record} and eval_split-val_checkpoint-best.png" in other.stdout
    assert json.loads(record.read_text())["options"] == {"split": "val", "checkpoint": "best"}
    assert (run / "eval_split-val_checkpoint-best.png").stat().st_size > 0  # beside its record
    _eval(run, "eval.inner_steps=2", "eval.seed=3")  # the seed alone names no file: the steps do
    assert json.loads((run / "eval_inner_steps-2.json").read_text())["options"] == {"inner_steps": "2", "seed": "3"}
    assert (run / "eval.json").read_bytes() == default  # the defaults' record, untouched by the others
    again = _eval(run, "eval.episodes=20")  # sinusoid_tiny's own eval.episodes: the defaults again
    assert "replaced" not in again.stderr and json.loads((run / "eval.json").read_text())["options"] == {}
    other_tasks = _eval(run, "eval.seed=5")  # the same thing scored on other tasks: eval.json, said so
    assert other_tasks.stderr.count(f"replaced {run / 'eval.json'}, a record of other options (seed 0 -> 5)") == 1
    assert sorted(p.name for p in run.glob("eval*.json")) == [
        "eval.json",
        "eval_inner_steps-2.json",
        "eval_split-val_checkpoint-best.json",
    ]


def test_output_says_what_it_replaces_and_refuses_what_it_cannot_write(trained, tmp_path):
    mine = tmp_path / "mine.json"
    _eval(trained, f"output={mine}")
    replaced = _eval(trained, f"output={mine}", "split=val")
    assert replaced.stderr.count(f"maml-eval: replaced {mine}, a record of other options (split test -> val)") == 1
    assert json.loads(mine.read_text())["split"] == "val" and (tmp_path / "mine.png").is_file()
    same = _eval(trained, f"output={mine}", "split=val")
    assert "replaced" not in same.stderr  # the same options again: a fresh score of the same thing
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    for output, says in [
        (tmp_path, "is a folder; name a file in it"),
        (tmp_path / "nowhere" / "x.json", "does not exist; create it"),
        (notes, "is not a maml-eval record; replacing it would lose it"),
        (tmp_path / "x.png", "names the plot"),
    ]:
        refused = _eval(trained, f"output={output}", expect=2)
        assert refused.stderr.startswith(f"maml-eval: error: output={output}") and says in refused.stderr
        assert refused.stderr.count("\n") == 1 and "inner step" not in refused.stdout  # refused before scoring
    assert notes.read_text() == '{"my": "notes"}' and not (tmp_path / "nowhere").exists()


def test_a_dry_run_names_the_cache_entry_it_built_and_compiles_nothing_to_disk(tmp_path):
    write_npz(tmp_path / "omniglot", fake_sets(background=10, evaluation=8, drawers=4))
    cache, compiled = tmp_path / "cache", tmp_path / "compiled"
    args = [
        "experiment=omniglot_tiny",
        f"dataset.path={tmp_path / 'omniglot'}",
        f"dataset.cache_dir={cache}",
        "dataset.train_classes=12",
        "dataset.val_classes=4",
        "train.dry_run=true",
    ]
    env = {**os.environ, "MAML_CLI_COMPILE_CACHE": str(compiled)}
    first = subprocess.run(
        [str(BIN / "maml-train"), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert first.returncode == 0, first.stderr
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    last = first.stdout.splitlines()[-1]
    assert last == (
        f"# dry run: config and data are fine; nothing was trained; written: the data cache entry {entry} "
        "(reused by training)"
    )
    assert not compiled.exists() or not any(compiled.iterdir())  # nothing compiled into the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "omniglot"]
    second = run_in_process("maml-train", *args, cwd=tmp_path)  # the entry is there: nothing written
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "# dry run: config and data are fine; nothing was trained or written"


def _summary(run_dir: Path, logger: str) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"logger": {"name": logger}}))
    return Summary(run_dir, 0, 20, 20, 6.0, {"val/mse": 0.5}, "mse").text()


def test_the_summary_names_the_tensorboard_command_when_the_run_logged_there(tmp_path):
    text = _summary(tmp_path / "tb", "tensorboard")
    command = f"tensorboard --logdir {tmp_path / 'tb'}"
    viewer = importlib.util.find_spec("tensorboard") is not None
    assert f"   curves     {command}" in text if viewer else f'pip install "maml-cli[tensorboard]" && {command}' in text
    assert "tensorboard" not in _summary(tmp_path / "csv", "csv")
