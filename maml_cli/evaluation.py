"""Scoring a meta-learned initialisation on fresh tasks, and the confidence interval as the papers
compute it: mean over episodes +- 1.96 * std / sqrt(episodes) (std with ddof=0, as in Finn et al.'s
code).

Episode i of a split is drawn from ``fold_in(eval_key(seed, split), i)``, whatever the batch it is
scored in, so ``eval.batch_size`` changes the speed of an evaluation, never which tasks it scores.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from maml_cli.meta.batching import map_tasks


def make_scorer(sample: Callable, algorithm, *, inner_steps: int, split: str, task_batching: str = "vmap",
                query_shots: Optional[int] = None) -> Callable:
    """``score(meta_params, meta_state, data, keys) -> [len(keys), inner_steps + 1]``: the query
    metric before and after each inner step of the task drawn from each key."""

    def one_episode(meta_params, meta_state, data, key):
        task_key, adapt_key = jax.random.split(key)
        episode = jax.tree.map(lambda a: a[0], sample(data, task_key, split, 1, query_shots=query_shots))
        return algorithm.adaptation_trace(meta_params, meta_state, episode, adapt_key, inner_steps)

    @jax.jit
    def score(meta_params, meta_state, data, keys):
        return map_tasks(partial(one_episode, meta_params, meta_state, data), keys, task_batching)

    return score


def episode_keys(key: jax.Array, start: int, count: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start, start + count))


def run_episodes(score: Callable, meta_params, meta_state, data, key: jax.Array, episodes: int, batch_size: int,
                 on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Score episodes 0..episodes-1 in batches of ``batch_size`` (the last one padded, so one
    program serves every batch)."""
    chunks = []
    for start in range(0, episodes, batch_size):
        values = np.asarray(score(meta_params, meta_state, data, episode_keys(key, start, batch_size)))
        take = min(batch_size, episodes - start)
        chunks.append(values[:take])
        if on_batch:
            on_batch(take)
    return np.concatenate(chunks)


def summarize(values: np.ndarray) -> list:
    """[episodes, steps + 1] -> per step {"step", "mean", "ci95"}."""
    n = values.shape[0]
    means = values.mean(axis=0)
    ci95 = 1.96 * values.std(axis=0) / np.sqrt(n)
    return [{"step": k, "mean": float(m), "ci95": float(c)} for k, (m, c) in enumerate(zip(means, ci95))]


SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def eval_key(seed: int, split: str) -> jax.Array:
    """Fixed per (seed, split), so every checkpoint of every run is scored on the same tasks."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), SPLIT_IDS[split])
