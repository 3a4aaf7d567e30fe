"""What a run made from the shell leaves behind and shows: plots (read back as images), the
environment it ran in, absolute data paths that let maml-eval run from anywhere (and be told where
the data moved), the dataset's source in the log, a closing summary, no progress-bar carriage
returns in a redirected log, and no eval.log in the caller's folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import BIN, TINY, run_in_process
from tests.omniglot_fakes import fake_sets, write_npz


def _run(tool: str, *args: str, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    """maml-train in a process of its own, as a user runs it (a Hydra app); the other commands run
    their main in this process (what they print and write is the same, minus a process start)."""
    if tool != "maml-train":
        out = run_in_process(tool, *args, cwd=cwd)
    else:
        out = subprocess.run(
            [str(BIN / tool), *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    assert out.returncode == expect, out.stderr
    return out


def assert_picture(path: Path, min_size=(300, 200)) -> None:
    """A PNG that opens, has a sensible size and is not blank."""
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 5, f"{path} looks blank"


def test_sinusoid_run_draws_learning_curves_adaptation_and_eval(tmp_path):
    plain = [a for a in TINY if a != "train.plots=false"]
    train = _run("maml-train", *plain, "train.progress=true", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    assert_picture(run / "plots" / "learning_curves.png", (800, 600))
    assert_picture(run / "plots" / "adaptation.png", (800, 200))
    assert "\r" not in train.stderr  # stderr is not a terminal: no progress bar
    summary = train.stderr[train.stderr.index("== maml-train done") :]
    for text in ("steps      20 of 20", "val mse", f"run dir    {run}", f"next       maml-eval run_dir={run}"):
        assert text in summary, summary
    assert (run / "train.log").is_file() and (run / ".hydra" / "config.yaml").is_file()
    ev = _run("maml-eval", f"run_dir={run}", "eval.episodes=10", cwd=tmp_path)
    assert "test mse over 10 tasks" in ev.stdout
    assert json.loads((run / "eval.json").read_text())["episodes"] == 10
    assert_picture(run / "eval.png")
    assert not (tmp_path / "eval.log").exists()


@pytest.mark.slow  # a whole Omniglot run, moved and evaluated: the sinusoid tests check the same records
def test_omniglot_run_records_where_and_how_it_ran_and_follows_moved_data(tmp_path):
    write_npz(tmp_path / "src", fake_sets(background=10, evaluation=8, drawers=4))
    (tmp_path / "a").mkdir()
    args = [
        "experiment=omniglot_tiny",
        "dataset.path=../src",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "dataset.train_classes=12",
        "dataset.val_classes=4",
        "hydra.run.dir=run",
    ]
    _run("maml-train", *args, cwd=tmp_path / "a")
    run = tmp_path / "a" / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["dataset"]["path"] == str(tmp_path / "src")  # absolute, not ../src
    log = (run / "train.log").read_text()
    assert f"data: {tmp_path / 'src'}" in log and "(npz)" in log
    env = json.loads((run / "environment.json").read_text())["sessions"][0]
    assert set(env["versions"]) >= {"maml-cli", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core"}
    assert env["backend"] == "cpu" and env["python"] and env["command"][0] == "maml-train"
    assert "dataset.path=../src" in env["command"] and "git_commit" in env
    assert_picture(run / "plots" / "learning_curves.png", (800, 600))
    assert not (run / "plots" / "adaptation.png").exists()  # a regression figure

    # From another folder, after the data moved: refused with the path, then told where it is.
    shutil.move(tmp_path / "src", tmp_path / "moved")
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "b").mkdir()
    lost = _run("maml-eval", f"run_dir={run}", cwd=tmp_path / "b", expect=2)
    assert f"dataset.path={tmp_path / 'src'} does not exist" in lost.stderr
    _run(
        "maml-eval",
        f"run_dir={run}",
        "dataset.path=../moved",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "eval.episodes=8",
        cwd=tmp_path / "b",
    )
    record = json.loads((run / "eval.json").read_text())
    assert record["dataset"]["path"] == str(tmp_path / "moved")
    assert record["metric"] == "accuracy" and record["batch_norm"] == "transductive"
    assert [r["step"] for r in record["per_step"]] == [0, 1, 2]
    assert all(0.0 <= r["mean"] <= 1.0 for r in record["per_step"])
    assert record["environment"]["versions"]["jax"] and record["environment"]["command"][0] == "maml-eval"
    assert_picture(run / "eval.png")
    assert list((tmp_path / "b").iterdir()) == []  # maml-eval wrote nothing where it was called


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_blow_up_is_flagged_and_every_json_file_stays_strict(tmp_path):
    """Adapting with too large a step makes the query loss infinite after a few steps: the run
    still finishes, maml-eval flags those steps and says so on stderr, and every JSON file in the
    run directory parses with a parser that rejects NaN and Infinity."""
    _run("maml-train", *TINY, "algorithm.inner_lr=0.5", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    ev = _run("maml-eval", "run_dir=run", "progress=false", cwd=tmp_path)
    assert "tasks diverged" in ev.stderr and len([ln for ln in ev.stderr.splitlines() if "diverged" in ln]) == 1
    rows = [ln for ln in ev.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert any("!" in ln for ln in rows)
    for ln in rows:  # no value above 1e3 printed without its flag
        numbers = [
            float(v)
            for v in ln.replace("%", "").split()[1:]
            if v.replace(".", "", 1).replace("e+", "").replace("-", "").isdigit()
        ]
        assert "!" in ln or all(abs(v) <= 1e3 for v in numbers), ln
    record = _strict((run / "eval.json").read_text())
    assert record["nonfinite_values"] > 0 and record["per_step"][-1]["diverged"] > 0
    files = list(run.rglob("*.json")) + [run / "metrics.jsonl"]
    for path in files:
        if path.suffix == ".jsonl":
            lines = [_strict(ln) for ln in path.read_text().splitlines()]
            assert any("nonfinite" in r for r in lines)  # the nulled values are named
        else:
            _strict(path.read_text())
