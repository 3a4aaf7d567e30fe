"""Evaluation that never hides a blow-up: the divergence rule, the per-step summary, strict JSON,
and the ensemble of checkpoints (the mean of their query outputs)."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_cli import strict_json
from maml_cli.engine.scoring import DIVERGED_FACTOR, diverged, make_scorer, summarize
from maml_cli.meta.outer import make_optimizer
from maml_cli.run.records import diverged_warning, format_table
from maml_cli.run.selection import parse_checkpoint, ranking_score
from tests.meta_problem import algorithm_for, init, one_task


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (and jq) do."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_task_diverges_when_its_loss_is_not_finite_or_far_above_its_start():
    losses = np.array([[1.0, 0.5, 0.4, 0.3], [2.0, 1.0, 30.0, np.inf], [1.0, 0.2, np.nan, 0.1]])
    got = diverged(losses)
    expected = np.array([[False] * 4, [False, False, True, True], [False, False, True, False]])
    np.testing.assert_array_equal(got, expected)
    assert not diverged(np.array([[1.0, DIVERGED_FACTOR * 1.0]])).any()  # the factor itself is not divergence


def test_summary_reports_median_diverged_and_the_mean_without_them():
    metric = np.array([[3.0, 0.2], [3.0, 0.3], [3.0, 1e30], [3.0, 0.1]])
    rows = summarize({"metric": metric, "loss": metric})
    last = rows[1]
    assert last["diverged"] == 1 and rows[0]["diverged"] == 0
    assert last["median"] == pytest.approx(0.25)
    assert last["mean"] == pytest.approx(np.mean(metric[:, 1]))  # every task, as the papers compute it
    assert last["mean_without_diverged"] == pytest.approx(0.2)
    assert last["ci95_without_diverged"] == pytest.approx(1.96 * np.std([0.2, 0.3, 0.1]) / np.sqrt(3))


def test_the_table_flags_a_diverged_step_and_stderr_says_so():
    metric = np.array([[3.0, 0.2], [3.0, 0.3], [3.0, 5e28], [3.0, 0.1]])
    record = {
        "metric": "mse",
        "split": "test",
        "episodes": 4,
        "checkpoint_step": 7,
        "per_step": summarize({"metric": metric, "loss": metric}),
        "diverged_rule": "the rule",
    }
    table = format_table(record)
    large = [
        line
        for line in table.splitlines()
        if any(abs(float(v)) > 1e3 for v in re.findall(r"-?\d+\.\d+(?:e[+-]?\d+)?", line))
    ]
    assert large and all("!" in line for line in large)  # no value above 1e3 is printed unflagged
    assert table.splitlines()[-1].startswith("! the rule")
    assert "1 of 4 tasks diverged (from inner step 1)" in diverged_warning(record)
    healthy = dict(record, per_step=summarize({"metric": metric[[0, 1, 3]], "loss": metric[[0, 1, 3]]}))
    assert "!" not in format_table(healthy) and diverged_warning(healthy) is None


def test_every_json_written_is_strict_and_counts_what_it_nulled():
    record = {"a": float("nan"), "b": [1.0, float("inf"), np.float32(2.0)], "c": {"d": -np.inf}, "e": np.int64(3)}
    clean, count = strict_json.finite_or_none(record)
    assert count == 3
    assert strict_loads(strict_json.dumps(record)) == {"a": None, "b": [1.0, None, 2.0], "c": {"d": None}, "e": 3}
    with pytest.raises(ValueError):
        strict_loads('{"x": NaN}')  # the check itself rejects what json.dumps writes by default


def test_an_ensemble_scores_the_mean_of_its_members_outputs():
    algorithm = algorithm_for("maml")
    meta_params, meta_state = init(algorithm)
    other = jax.tree.map(lambda a: a * 0.5 + 0.1, meta_params)
    task = one_task()

    def sample(data, key, split, n, query_shots=None):
        return jax.tree.map(lambda a: a[None], task)

    single = make_scorer(sample, algorithm, inner_steps=2, split="test")
    ensemble = make_scorer(sample, algorithm, inner_steps=2, split="test", ensemble=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), meta_params, other)
    states = jax.tree.map(lambda *xs: jnp.stack(xs), meta_state, meta_state)
    got = ensemble(stacked, states, None, keys)
    outputs = [algorithm.adaptation_outputs(p, meta_state, task, None, 2) for p in (meta_params, other)]
    mean = (outputs[0] + outputs[1]) / 2
    expected = [float(algorithm.task_loss.metric_of_outputs(mean[k], task.query_y)) for k in range(3)]
    np.testing.assert_allclose(np.asarray(got["metric"][0]), expected, rtol=1e-5)
    # One member alone is the single scorer.
    np.testing.assert_allclose(
        np.asarray(single(meta_params, meta_state, None, keys)["metric"][0]),
        np.asarray(algorithm.adaptation_trace(meta_params, meta_state, task, None, 2)),
        rtol=1e-5,
    )


def test_checkpoint_choices_parse_and_bad_ones_are_refused():
    assert parse_checkpoint(None) == ("latest", None)
    assert parse_checkpoint("latest") == ("latest", None)
    assert parse_checkpoint(5000) == ("step", 5000)
    assert parse_checkpoint("best") == ("best", 1)
    assert parse_checkpoint("best:3") == ("best", 3)
    from maml_cli.config import UserError

    for bad in ("best:0", "best:x", "worst", "-3"):
        with pytest.raises(UserError, match="is not a checkpoint"):
            parse_checkpoint(bad)
    assert ranking_score(0.9, "accuracy") > ranking_score(0.8, "accuracy")
    assert ranking_score(0.1, "mse") > ranking_score(0.2, "mse")
    assert ranking_score(float("nan"), "mse") == ranking_score(None, "accuracy") == -np.inf


def test_clipping_the_model_alone_leaves_learned_step_sizes_unclipped():
    grads = {"model": {"w": jnp.array([50.0, -0.5])}, "inner_lr": {"w": jnp.array([30.0])}}
    params = jax.tree.map(jnp.zeros_like, grads)
    for scope, expected_lr in (("all", 1.0), ("model", 30.0)):
        opt = make_optimizer(1.0, grad_clip_value=1.0, kind="sgd", clip_scope=scope)
        updates, _ = opt.update(grads, opt.init(params), params)
        np.testing.assert_allclose(-np.asarray(updates["model"]["w"]), [1.0, -0.5])
        np.testing.assert_allclose(-np.asarray(updates["inner_lr"]["w"]), [expected_lr])
