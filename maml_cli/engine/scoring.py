"""Scoring a meta-learned initialisation on fresh tasks, and the confidence interval as the papers
compute it: mean over episodes +- 1.96 * std / sqrt(episodes) (std with ddof=0, as in Finn et al.'s
code).

A mean hides a blow-up: one task whose adaptation diverges can make the mean of 600 meaningless.
So each step also reports the median and the number of tasks that diverged: a task has diverged
at a step when its query loss there is not finite or more than ``DIVERGED_FACTOR`` times its
query loss before adaptation (``DIVERGED_RULE``). The count is always reported; the step is
*flagged* (its mean not to be quoted bare) only when the diverged tasks move the mean by more than
the 95% CI of the mean over the other tasks, or the mean is not finite (``FLAG_RULE``): a few
diverged tasks whose scores sit among the others' leave the mean as it was, and are only counted.

Several checkpoints can be scored as one ensemble (``checkpoint=best:N``): each adapts to the
task on its own, and their query outputs (logits, or predictions for regression) are averaged
before the loss and metric are computed, as the MAML++ authors score their best models.

Episode i of a split is drawn from ``fold_in(eval_key(seed, split), i)``, whatever the batch it is
scored in, so ``eval.batch_size`` changes the speed of an evaluation, never which tasks it scores.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from maml_cli.backend.sharding import replicate, sharded_over_tasks
from maml_cli.meta.batching import map_tasks
from maml_cli.run.metrics import mean_and_ci95
from maml_cli.run.records import is_flagged


def make_scorer(
    sample: Callable,
    algorithm,
    *,
    inner_steps: int,
    split: str,
    task_batching: str = "vmap",
    query_shots: int | None = None,
    mesh=None,
    ensemble: bool = False,
) -> Callable:
    """``score(meta_params, meta_state, data, keys) -> {"loss", "metric"}``, each
    ``[len(keys), inner_steps + 1]``: the query loss and metric before and after each inner step of
    the task drawn from each key. ``ensemble``: ``meta_params`` and ``meta_state`` hold several
    checkpoints stacked on a leading axis, whose query outputs are averaged. With a ``mesh`` the
    keys are split over its devices (their number must divide ``len(keys)``: ``Experiment.eval_batch``)."""
    task_loss = algorithm.task_loss

    def one_episode(meta_params, meta_state, data, key):
        task_key, adapt_key = jax.random.split(key)
        episode = jax.tree.map(lambda a: a[0], sample(data, task_key, split, 1, query_shots=query_shots))

        def outputs_of(params, state):
            return algorithm.adaptation_outputs(params, state, episode, adapt_key, inner_steps)

        outputs = (
            jax.vmap(outputs_of)(meta_params, meta_state).mean(axis=0)
            if ensemble
            else outputs_of(meta_params, meta_state)
        )
        per_step = jax.vmap(
            lambda out: (task_loss.of_outputs(out, episode.query_y), task_loss.metric_of_outputs(out, episode.query_y))
        )
        loss, metric = per_step(outputs)
        return {"loss": loss, "metric": metric}

    def scores(meta_params, meta_state, data, keys):
        return map_tasks(partial(one_episode, meta_params, meta_state, data), keys, task_batching)

    if mesh is None:
        return jax.jit(scores)

    sharded = jax.jit(sharded_over_tasks(scores, mesh))
    return lambda meta_params, meta_state, data, keys: sharded(meta_params, meta_state, data, replicate(keys, mesh))


def episode_keys(key: jax.Array, start: int, count: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start, start + count))


def run_episodes(
    score: Callable,
    meta_params,
    meta_state,
    data,
    key: jax.Array,
    episodes: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Score episodes 0..episodes-1 in batches of ``batch_size`` (the last one padded, so one
    program serves every batch). Returns {"loss", "metric"}, each [episodes, inner_steps + 1]."""
    chunks = []
    for start in range(0, episodes, batch_size):
        values = jax.device_get(score(meta_params, meta_state, data, episode_keys(key, start, batch_size)))
        take = min(batch_size, episodes - start)
        chunks.append({k: np.asarray(v)[:take] for k, v in values.items()})
        if on_batch:
            on_batch(take)
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


DIVERGED_FACTOR = 10.0
DIVERGED_RULE = (
    f"a task has diverged at a step when its query loss there is not finite or more than "
    f"{DIVERGED_FACTOR:g} times its query loss before adaptation"
)


def diverged(losses: np.ndarray) -> np.ndarray:
    """[episodes, steps + 1] query losses -> bool, per task and step, by ``DIVERGED_RULE``."""
    losses = np.asarray(losses, dtype=float)
    before = losses[:, :1]
    with np.errstate(invalid="ignore", over="ignore"):
        return ~np.isfinite(losses) | (losses > DIVERGED_FACTOR * np.abs(before))


def summarize(values: dict) -> list:
    """{"loss", "metric"} [episodes, steps + 1] -> per step {"step", "mean", "ci95", "median",
    "diverged", "mean_without_diverged", "ci95_without_diverged", "flagged"}. ``mean`` and ``ci95``
    are over every task, as the papers compute them (not finite where a task's metric is not); the
    ``_without_diverged`` pair leaves out the tasks that diverged at that step (None if all did);
    ``flagged`` by ``FLAG_RULE``, decided here once so every reader (maml-eval's table and warning,
    maml-report) follows the same rule."""
    metric = np.asarray(values["metric"], dtype=float)
    bad = diverged(values["loss"])
    with np.errstate(invalid="ignore", over="ignore"):
        means, ci95 = mean_and_ci95(metric, axis=0)
        # A task whose metric is not a number diverged (an MSE of inf - inf): it ranks last.
        medians = np.median(np.where(np.isnan(metric), np.inf, metric), axis=0)
    rows = []
    for k in range(metric.shape[1]):
        kept = metric[~bad[:, k], k]
        with np.errstate(invalid="ignore", over="ignore"):
            m, c = mean_and_ci95(kept) if kept.size else (None, None)
        row = {
            "step": k,
            "mean": float(means[k]),
            "ci95": float(ci95[k]),
            "median": float(medians[k]),
            "diverged": int(bad[:, k].sum()),
            "mean_without_diverged": None if m is None else float(m),
            "ci95_without_diverged": None if c is None else float(c),
        }
        row["flagged"] = is_flagged(
            row["mean"], row["diverged"], row["mean_without_diverged"], row["ci95_without_diverged"]
        )
        rows.append(row)
    return rows


SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def eval_key(seed: int, split: str) -> jax.Array:
    """Fixed per (seed, split), so every checkpoint of every run is scored on the same tasks."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), SPLIT_IDS[split])


def regression_curves(
    exp, meta_params, meta_state, key: jax.Array, num_tasks: int = 3, steps=(0, 1, 10), points: int = 200
) -> list:
    """For a sinusoid run: test tasks 0..num_tasks-1 (those maml-eval scores first), each with its
    true curve, support points and the model's prediction after each of ``steps`` inner steps."""
    sampler, algorithm = exp.sampler, exp.algorithm
    c = sampler.cfg
    x = jnp.linspace(c.x_min, c.x_max, points)[:, None]
    adapt = jax.jit(algorithm.adapt_to_task, static_argnums=4)
    forward = algorithm.eval_forward(meta_state)
    curves = []
    for i in range(num_tasks):
        task_key, adapt_key = jax.random.split(jax.random.fold_in(key, i))
        episode = jax.tree.map(lambda a: a[0], sampler.sample(None, task_key, "test", 1))
        amplitude, phase = (float(v.reshape(())) for v in sampler.task_parameters(task_key, 1))
        pred = {}
        for s in steps:
            params = adapt(meta_params, meta_state, episode, adapt_key, s)
            pred[s] = np.asarray(exp.network.apply(params, x, **forward)[0][:, 0])
        curves.append(
            {
                "x": np.asarray(x[:, 0]),
                "true": amplitude * np.sin(np.asarray(x[:, 0]) - phase),
                "support_x": np.asarray(episode.support_x[:, 0]),
                "support_y": np.asarray(episode.support_y[:, 0]),
                "pred": pred,
            }
        )
    return curves
