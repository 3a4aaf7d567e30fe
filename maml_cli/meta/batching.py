"""How a function of one task is mapped over a meta-batch. Which strategy a run uses is decided
in ``maml_cli/backend/plan.py`` (``train.task_batching=auto``).

All strategies compute the same thing (tests check it); they differ in what XLA is asked to build:
- ``vmap``: one batched program: large kernels, the choice for GPUs and small dense models.
- ``map``: ``lax.map``, a loop of per-task programs: one task's tensors stay in cache, the
  faster choice for convolutional models on CPU.
- ``unroll``: a Python loop inside jit, one copy of the per-task program per task; compile time
  grows with the meta-batch. Used as the reference in tests.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

STRATEGIES = ("vmap", "map", "unroll")


def map_tasks(fn: Callable, tasks, strategy: str = "vmap"):
    """Apply ``fn(task)`` to every task along the leading axis of the pytree ``tasks``."""
    if strategy == "vmap":
        return jax.vmap(fn)(tasks)
    if strategy == "map":
        return jax.lax.map(fn, tasks)
    if strategy == "unroll":
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        outs = [fn(jax.tree.map(lambda a, i=i: a[i], tasks)) for i in range(num_tasks)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    raise ValueError(f"unknown task batching strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
