"""Your own model and your own task family, by config (model=custom, dataset=function): through the
Python API and through the commands; a run that names code is not imported without trust_code."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maml_cli as mc
from tests.conftest import REPO, run_command, run_in_process

HERE = "tests.test_custom_code"
CUSTOM = [
    "model=custom",
    f"model.target={HERE}:make_net",
    "model.kwargs.width=12",
    "dataset=function",
    f"dataset.target={HERE}:sample_line",
    "dataset.kwargs.slope_max=2.0",
    "dataset.shots=5",
    "train.steps=10",
    "train.meta_batch_size=4",
    "train.log_every=5",
    "train.eval_every=5",
    "train.checkpoint_every=5",
    "train.steps_per_call=5",
    "eval.episodes=12",
    "eval.val_episodes=8",
    "eval.inner_steps=2",
    "train.progress=false",
    "train.plots=false",
]


# --- the user's code: a network and a task family ------------------------------------------------


class TwoLayer(nn.Module):
    output_dim: int
    width: int = 16

    def setup(self):
        self.body = nn.Dense(self.width)
        self.head = nn.Dense(self.output_dim)  # what ANIL adapts

    def features(self, x):
        return nn.tanh(self.body(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


def make_net(output_dim: int, width: int = 16) -> nn.Module:
    return TwoLayer(output_dim=output_dim, width=width)


def sample_line(key, num_points: int, slope_max: float = 1.0):
    """One task: y = a x with a ~ U[-slope_max, slope_max], x ~ U[-1, 1]."""
    k_slope, k_x = jax.random.split(key)
    slope = jax.random.uniform(k_slope, (), minval=-slope_max, maxval=slope_max)
    x = jax.random.uniform(k_x, (num_points, 1), minval=-1.0, maxval=1.0)
    return x, slope * x


class NoHead(nn.Module):
    output_dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.output_dim)(x)


class KeepsRunningStats(nn.Module):
    output_dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.output_dim)(nn.BatchNorm(use_running_average=False)(x))


def make_no_head(output_dim, **unused):
    return NoHead(output_dim=output_dim)


def make_running_stats(output_dim, **unused):
    return KeepsRunningStats(output_dim=output_dim)


def make_wrong_width(output_dim, **unused):
    return NoHead(output_dim=output_dim + 1)


def not_a_module(output_dim, **unused):
    return "a string"


def sample_wrong_shape(key, num_points, **unused):
    return jnp.zeros((num_points,)), jnp.zeros((num_points, 1))


# --- tests ---------------------------------------------------------------------------------------


def test_custom_model_and_tasks_train_evaluate_and_adapt_through_the_api(tmp_path):
    cfg = mc.compose(None, CUSTOM)
    run = mc.train(cfg, run_dir=tmp_path / "run")
    assert run.summary.step == 10 and (tmp_path / "run" / "train.log").is_file()
    record = run.evaluate(episodes=12)
    steps = record["per_step"]
    assert [r["step"] for r in steps] == [0, 1, 2] and record["metric"] == "mse"
    assert steps[2]["mean"] < steps[0]["mean"]  # adaptation helps on the user's tasks

    # A new task of the family: adapting fits its line better than the initialisation does.
    x = np.linspace(-1, 1, 5, dtype=np.float32)[:, None]
    learner = run.adapt(x, 1.5 * x, inner_steps=5)
    query = np.linspace(-1, 1, 9, dtype=np.float32)[:, None]
    after, before = learner.predict(query), learner.predict(query, adapted=False)
    assert after.shape == (9, 1)
    assert np.mean((after - 1.5 * query) ** 2) < np.mean((before - 1.5 * query) ** 2)

    # A run that names code is not imported from disk unless trusted.
    with pytest.raises(mc.UserError, match="trust_code=true"):
        mc.load_run(tmp_path / "run")
    again = mc.load_run(tmp_path / "run", trust_code=True).evaluate(episodes=12)
    assert again["per_step"] == record["per_step"]


def test_custom_code_through_the_commands_and_trust_code(tmp_path):
    run_dir = tmp_path / "run"
    train = run_command("maml-train", *CUSTOM, "algorithm=anil", f"hydra.run.dir={run_dir}", cwd=REPO)
    assert train.returncode == 0, train.stderr

    refused = run_in_process("maml-eval", f"run_dir={run_dir}")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "trust_code=true" in refused.stderr and not (run_dir / "eval.json").exists()

    scored = run_in_process("maml-eval", f"run_dir={run_dir}", "trust_code=true", cwd=REPO)
    assert scored.returncode == 0, scored.stderr
    assert (run_dir / "eval.json").is_file()

    points = tmp_path / "points.csv"
    points.write_text("x,y\n-1,-2\n0,0\n1,2\n")
    adapt = run_in_process(
        "maml-adapt",
        f"run_dir={run_dir}",
        f"support={points}",
        "query=-1:1:5",
        "trust_code=true",
        f"out_dir={tmp_path / 'out'}",
        cwd=REPO,
    )
    assert adapt.returncode == 0, adapt.stderr
    assert (tmp_path / "out" / "predictions.csv").is_file()
    refused = run_in_process("maml-adapt", f"run_dir={run_dir}", f"support={points}", "query=-1:1:5")
    assert refused.returncode == 2 and "trust_code=true" in refused.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.target=no_such_module:make"], "cannot import no_such_module"),
        ([f"model.target={HERE}:nothing_here"], "has no nothing_here"),
        (["model.target=3d:net"], "needs model.target=module.path:name"),
        ([f"model.target={HERE}:not_a_module"], "must return a flax.linen Module"),
        ([f"model.target={HERE}:make_wrong_width"], "it must give [batch, 1]"),
        ([f"model.target={HERE}:make_running_stats"], "keeps variables besides params (batch_stats)"),
        ([f"model.target={HERE}:make_no_head", "algorithm=anil"], "needs a submodule named head"),
        ([f"dataset.target={HERE}:sample_wrong_shape"], "must return x [10, inputs]"),
    ],
)
def test_custom_code_mistakes_are_caught_before_compiling(tmp_path, overrides, message):
    """Each mistake: one UserError naming it, raised while the experiment is built (nothing is
    compiled and no run directory is written)."""
    from maml_cli.engine.experiment import build_experiment

    with pytest.raises(mc.UserError) as error:
        build_experiment(mc.compose(None, [*CUSTOM, *overrides]))
    assert message in str(error.value) and "\n" not in str(error.value)
