"""The Python API (``import maml_cli as mc``): the same configs, checks, runs and numbers as the
commands; and the layers below it free of Hydra."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import maml_cli as mc
from tests.conftest import run_command, run_in_process

TINY = ["train.progress=false", "train.plots=false"]


def test_compose_train_evaluate_adapt_match_the_commands(tmp_path):
    cfg = mc.compose("sinusoid_tiny", TINY)
    assert cfg.train.steps == 20 and "hydra" not in cfg
    run = mc.train(cfg, run_dir=tmp_path / "run")
    assert run.checkpoints() == [10, 20] and [r["step"] for r in run.metrics][-1] == 20
    record = mc.load_run(tmp_path / "run").evaluate(episodes=30)
    assert record["episodes"] == 30 and record["metric"] == "mse"
    assert not (tmp_path / "run" / "eval.json").exists()  # the library writes nothing

    # Two runs (here the same one twice) in one maml-eval -m: scored in turn, nothing left behind.
    shell = run_command(
        "maml-eval", "-m", f"run_dir={tmp_path / 'run'},{tmp_path / 'run'}", "eval.episodes=30", cwd=tmp_path
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.count("wrote ") == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert written["per_step"] == record["per_step"]  # the same numbers

    # adapt = what maml-adapt predicts for the same support set and query points
    support = np.array([[-2.0, 1.0], [-1.0, 0.5], [0.0, 0.0], [1.0, -0.5], [2.0, -1.0]], np.float32)
    learner = run.adapt(support[:, :1], support[:, 1:])
    query = np.linspace(-3, 3, 7, dtype=np.float32)[:, None]
    predicted = learner.predict(query)[:, 0]
    (tmp_path / "support.csv").write_text("\n".join(f"{x},{y}" for x, y in support) + "\n")
    shell = run_in_process(
        "maml-adapt",
        f"run_dir={tmp_path / 'run'}",
        f"support={tmp_path / 'support.csv'}",
        "query=-3:3:7",
        f"out_dir={tmp_path / 'out'}",
    )
    assert shell.returncode == 0, shell.stderr
    from_shell = [p["y"] for p in json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"]]
    np.testing.assert_allclose(predicted, from_shell, rtol=1e-5, atol=1e-6)


def test_train_by_name_resumes_and_bad_input_raises_the_commands_errors(tmp_path):
    run = mc.train("sinusoid_tiny", [*TINY, "train.steps=10"], run_dir=tmp_path)
    assert run.summary.step == 10
    run = mc.train("sinusoid_tiny", TINY, run_dir=tmp_path)  # the same experiment, longer: resumed
    assert (run.summary.start_step, run.summary.step) == (10, 20)
    with pytest.raises(mc.UserError, match="resuming would mix two experiments"):
        mc.train("sinusoid_tiny", [*TINY, "algorithm.inner_lr=0.5"], run_dir=tmp_path)
    with pytest.raises(
        mc.UserError, match=r"train.stepz is not a maml_cli.compose config key \(did you mean train.steps"
    ):
        mc.compose("sinusoid_tiny", ["train.stepz=3"])
    with pytest.raises(mc.UserError, match="unknown experiment option 'sinusoid_tiy'"):
        mc.compose("sinusoid_tiy")
    with pytest.raises(mc.UserError, match="train.meta_batch_size must be >= 1"):
        mc.compose(None, ["train.meta_batch_size=0"])
    with pytest.raises(mc.UserError, match="not a maml-train run directory"):
        mc.load_run(tmp_path / "checkpoints")
    with pytest.raises(mc.UserError, match="split must be one of"):
        run.evaluate(split="dev")


def test_the_math_data_and_models_do_not_import_hydra():
    code = """
import importlib, pkgutil, sys
for package in ("maml_cli.meta", "maml_cli.data", "maml_cli.models"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
print(sorted({name.split(".")[0] for name in sys.modules} & {"hydra", "omegaconf"}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
