"""Scoring a meta-learned initialisation on fresh tasks, and the confidence interval as the papers
compute it: mean over episodes +- 1.96 * std / sqrt(episodes) (std with ddof=0, as in Finn et al.'s
code)."""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import jax
import numpy as np

from maml_cli.meta.batching import map_tasks
from maml_cli.meta.inner import adaptation_trace
from maml_cli.meta.losses import TaskLoss


def make_scorer(sample: Callable, task_loss: TaskLoss, *, inner_lr: float, inner_steps: int, split: str,
                task_batching: str = "vmap") -> Callable:
    """``score(params, data, key, num_episodes) -> [num_episodes, inner_steps + 1]`` query metrics."""

    @partial(jax.jit, static_argnums=3)
    def score(params, data, key, num_episodes: int):
        episodes = sample(data, key, split, num_episodes)
        trace = partial(adaptation_trace, task_loss, params, inner_lr=inner_lr, inner_steps=inner_steps)
        return map_tasks(trace, episodes, task_batching)

    return score


def run_episodes(score: Callable, params, data, key: jax.Array, episodes: int, batch_size: int,
                 on_batch: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Score ``episodes`` tasks in batches; batch i draws its tasks from fold_in(key, i)."""
    chunks, done, i = [], 0, 0
    while done < episodes:
        values = np.asarray(score(params, data, jax.random.fold_in(key, i), batch_size))
        take = min(batch_size, episodes - done)
        chunks.append(values[:take])
        done += take
        i += 1
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
