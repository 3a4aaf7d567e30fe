"""A small sinusoid problem (tanh MLP) on which the algorithms' math is checked against references."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from maml_cli.backend.plan import Execution
from maml_cli.data.sinusoid import SinusoidTasks
from maml_cli.meta.algorithms import Phase, build_algorithm
from maml_cli.meta.losses import make_task_loss
from maml_cli.models import Network
from maml_cli.models.mlp import MLP
from tests.conftest import make_cfg


def algorithm_for(
    name: str = "maml",
    *overrides: str,
    task_batching: str = "vmap",
    remat: bool = False,
    network: Network | None = None,
    kind: str = "regression",
):
    cfg = make_cfg(f"algorithm={name}", "algorithm.inner_lr=0.1", "algorithm.inner_steps=2", *overrides)
    network = network or Network(MLP(hidden_sizes=(8,), output_dim=1, activation="tanh"))
    return build_algorithm(
        cfg.algorithm, make_task_loss(network, kind), Execution(task_batching, remat, None), cfg.train
    )


def episodes_for(num_tasks=3, dtype=jnp.float32, seed=0, shots=4):
    cfg = make_cfg(f"dataset.shots={shots}")
    episodes = SinusoidTasks(cfg.dataset).sample(None, jax.random.PRNGKey(seed + 1), "train", num_tasks)
    return jax.tree.map(lambda a: a.astype(dtype), episodes)


def one_task(seed=0):
    """A single episode (no task axis), as adapt_to_task and adaptation_trace take it."""
    return jax.tree.map(lambda a: a[0], episodes_for(num_tasks=1, seed=seed))


def init(algorithm, dtype=jnp.float32, seed=0, input_shape=(1,)):
    """(meta_params, meta_state) of ``algorithm`` in ``dtype``."""
    params, batch_stats = algorithm.network.init(jax.random.PRNGKey(seed), input_shape)
    meta_params = jax.tree.map(lambda p: p.astype(dtype), algorithm.init(params, jax.random.PRNGKey(seed + 7)))
    return meta_params, algorithm.init_state(meta_params, batch_stats)


def loss_fn(algorithm, episodes, step=0, phase: Phase | None = None):
    """meta_params -> the mean query loss a gradient-based algorithm differentiates."""
    phase = phase or algorithm.phase(step)
    return lambda mp: algorithm.meta_loss(mp, episodes, step, phase)[0]


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def meta_gradient(algorithm, meta_params, meta_state, episodes, key=None, step: int = 0):
    """``algorithm.meta_gradient`` at outer step ``step``, jitted (eager dispatch is slow)."""
    phase = algorithm.phase(step)
    fn = jax.jit(lambda mp, ms, ep, k: algorithm.meta_gradient(mp, ms, ep, k, step, phase))
    return fn(meta_params, meta_state, episodes, key)
