"""Plugins from another package (``maml_cli.plugins``): a toy dataset and a toy algorithm, declared
through the entry-point group of a package installed in a temporary folder, are composed by name,
trained by maml-train and scored by maml-eval, and their settings are checked like the built-in
ones. The package is put on the commands' PYTHONPATH, never on this process's ``sys.path``."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import BIN

TOY = '''
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from maml_cli.config.schema import AlgorithmConfig, DatasetConfig, opt
from maml_cli.data.episodes import Episodes, TaskSpec, task_part
from maml_cli.meta.algorithms.maml import MAML
from maml_cli.meta.inner import constant_rates
from maml_cli.plugins import Plugin


@dataclass
class LineConfig(DatasetConfig):
    name: str = "line"
    shots: int = 5
    query_shots: int = 5
    slope_max: float = opt(2.0, "slopes are drawn from [-slope_max, slope_max]", ge=0, le=100)


class LineTasks:
    """y = a x + b, a task per (a, b)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = TaskSpec(input_shape=(1,), output_dim=1, kind="regression")
        self.data = None
        self.source = "generated lines"

    def check(self, shots=None, query_shots=None, shots_from=None):
        pass

    def sample(self, data, key, split, num_tasks, shots=None, query_shots=None, part=None):
        shots = self.cfg.shots if shots is None else shots
        query_shots = self.cfg.query_shots if query_shots is None else query_shots
        k_a, k_b, k_x = jax.random.split(key, 3)
        m = self.cfg.slope_max
        a = jax.random.uniform(k_a, (num_tasks, 1, 1), minval=-m, maxval=m)
        b = jax.random.uniform(k_b, (num_tasks, 1, 1), minval=-1.0, maxval=1.0)
        x = jax.random.uniform(k_x, (num_tasks, shots + query_shots, 1), minval=-1.0, maxval=1.0)
        y = a * x + b
        episodes = Episodes(support_x=x[:, :shots], support_y=y[:, :shots], query_x=x[:, shots:], query_y=y[:, shots:])
        return task_part(episodes, part)


@dataclass
class HalfStepConfig(AlgorithmConfig):
    name: str = "half_step_maml"


class HalfStepMAML(MAML):
    """MAML whose inner steps are half as long."""

    def rates(self, meta_params, adapted0, step):
        return constant_rates(adapted0, self.cfg.inner_lr / 2)


PLUGINS = [
    Plugin("dataset", "line", LineTasks, LineConfig),
    Plugin("algorithm", "half_step_maml", HalfStepMAML, HalfStepConfig),
]
'''

SETTINGS = [
    "dataset=line",
    "algorithm=half_step_maml",
    "model.hidden_sizes=[8]",
    "train.steps=6",
    "train.meta_batch_size=2",
    "train.log_every=3",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.progress=false",
    "train.plots=false",
    "eval.val_episodes=4",
    "eval.episodes=4",
    "logger=none",
]


@pytest.fixture(scope="module")
def toy_package(tmp_path_factory) -> dict:
    """A package with its dist-info (as pip installs it), and the environment that finds it."""
    site = tmp_path_factory.mktemp("site")
    (site / "maml_toy").mkdir()
    (site / "maml_toy" / "__init__.py").write_text(textwrap.dedent(TOY))
    info = site / "maml_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: maml-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[maml_cli.plugins]\ntoy = maml_toy:PLUGINS\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def run(env: dict, cwd: Path, command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_a_plugin_dataset_and_algorithm_train_and_evaluate(toy_package, tmp_path):
    train = run(toy_package, tmp_path, "maml-train", *SETTINGS, "hydra.run.dir=run")
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "6").is_dir()
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: line" in config and "slope_max: 2.0" in config and "name: half_step_maml" in config
    evaluate = run(toy_package, tmp_path, "maml-eval", "run_dir=run", "eval.episodes=4", "progress=false")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["metric"] == "mse" and record["algorithm"] == "half_step_maml"


def test_a_plugins_settings_are_checked_and_listed(toy_package, tmp_path):
    bad = run(toy_package, tmp_path, "maml-train", *SETTINGS, "dataset.slope_max=-1", "hydra.run.dir=run")
    assert bad.returncode == 2 and bad.stderr.startswith("maml-train: error: "), bad.stderr
    assert "dataset.slope_max" in bad.stderr and not (tmp_path / "run").exists()
    unknown = run(toy_package, tmp_path, "maml-train", "dataset=lines", "hydra.run.dir=run")
    assert unknown.returncode == 2 and "line" in unknown.stderr, unknown.stderr
    shown = run(toy_package, tmp_path, "maml-train", "dataset=line", "--help")
    assert shown.returncode == 0 and "slope_max" in shown.stdout, shown.stdout[-2000:]


def test_without_the_package_the_name_is_unknown(tmp_path):
    out = run(dict(os.environ), tmp_path, "maml-train", "dataset=line", "hydra.run.dir=run")
    assert out.returncode == 2 and "dataset=line" in out.stderr or "line" in out.stderr, out.stderr


def test_a_plugin_that_does_not_load_is_one_line(tmp_path):
    """An installed package whose plugin fails to import: every command says which, exit 2."""
    site = tmp_path / "site"
    (site / "maml_broken").mkdir(parents=True)
    (site / "maml_broken" / "__init__.py").write_text("import a_module_that_is_not_installed\n")
    info = site / "maml_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: maml-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[maml_cli.plugins]\nbroken = maml_broken:PLUGINS\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    for command in ("maml-train", "maml-eval"):
        out = run(env, tmp_path, command, "hydra.run.dir=run" if command == "maml-train" else "run_dir=run")
        assert out.returncode == 2, (command, out.stderr)
        assert out.stderr == (
            f"{command}: error: the maml_cli plugin broken (maml_broken:PLUGINS) cannot be loaded: "
            "No module named 'a_module_that_is_not_installed'\n"
        )
