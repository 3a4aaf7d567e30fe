"""The outer loop: the training state, the outer optimizer and the jitted outer step, the same for
every algorithm (``meta/algorithms``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from maml_cli.backend.sharding import sharded_meta_gradient


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue exactly where it stopped: what a checkpoint holds."""

    step: jax.Array  # outer steps taken
    meta_params: Any  # what the outer optimizer updates: {"model": initialisation, ...learned step sizes}
    opt_state: Any
    meta_state: Any  # carried, not optimised: running batch-norm statistics, Reptile's inner Adam moments
    rng: jax.Array  # raw key data; the tasks of step s are drawn from fold_in(rng, s)


def make_optimizer(
    learning_rate,
    grad_clip: float | None = None,
    grad_clip_value: float | None = None,
    kind: str = "adam",
    clip_scope: str = "all",
) -> optax.GradientTransformation:
    """Adam (or SGD, for Reptile) on the meta-gradient, optionally clipped by value (as the
    original MAML code did for MiniImageNet) and/or by global norm. ``clip_scope="model"`` clips
    the network's gradients alone, not those of learned step sizes (as the MAML++ code does).
    ``learning_rate`` is a number or an optax schedule."""
    clips = ([optax.clip(grad_clip_value)] if grad_clip_value else []) + (
        [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
    )
    if clips and clip_scope == "model":
        clips = [optax.masked(optax.chain(*clips), lambda params: {k: k == "model" for k in params})]
    base = optax.adam(learning_rate) if kind == "adam" else optax.sgd(learning_rate)
    return optax.chain(*clips, base) if clips else base


def init_state(algorithm, input_shape: tuple, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    init_key, task_key = jax.random.split(jax.random.PRNGKey(seed))
    params, batch_stats = algorithm.network.init(init_key, input_shape)
    meta_params = algorithm.init(params, jax.random.fold_in(init_key, 1))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        meta_params=meta_params,
        opt_state=optimizer.init(meta_params),
        meta_state=algorithm.init_state(meta_params, batch_stats),
        rng=task_key,
    )


def make_train_step(
    sample: Callable,
    algorithm,
    optimizer: optax.GradientTransformation,
    meta_batch_size: int,
    metric_name: str,
    mesh=None,
) -> Callable:
    """``train_step(state, data, phase) -> (state, metrics)``: draw tasks on the device from
    ``data`` (the sampler's arrays), one outer update. With a ``mesh``, the tasks are split over
    its devices (``maml_cli/backend/sharding.py``); the update is the same."""

    def train_step(state: TrainState, data, phase):
        task_key, algorithm_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
        if mesh is None:
            episodes = sample(data, task_key, "train", meta_batch_size, shots=algorithm.train_shots)
            grads, meta_state, out = algorithm.meta_gradient(
                state.meta_params, state.meta_state, episodes, algorithm_key, state.step, phase
            )
        else:
            grads, meta_state, out = sharded_meta_gradient(mesh, sample, algorithm, meta_batch_size, phase)(
                state.meta_params, state.meta_state, data, task_key, algorithm_key, state.step
            )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.meta_params)
        new_state = state.replace(
            step=state.step + 1,
            meta_params=optax.apply_updates(state.meta_params, updates),
            opt_state=opt_state,
            meta_state=meta_state,
        )
        return new_state, {
            "train/query_loss": out["query_loss"],
            f"train/query_{metric_name}": out["query_metric"],
            "train/grad_norm": optax.tree.norm(grads),
        }

    return train_step


def make_multi_step(train_step: Callable) -> Callable:
    """``multi_step(state, data, length, phase) -> (state, metrics stacked over the steps)``, jitted,
    with the state donated; one program per (length, phase). Fusing steps with ``lax.scan`` keeps
    the host out of the way of small models."""

    @partial(jax.jit, static_argnums=(2, 3), donate_argnums=0)
    def multi_step(state: TrainState, data, length: int, phase):
        return jax.lax.scan(lambda s, _: train_step(s, data, phase), state, None, length=length)

    return multi_step
