"""The outer loop: meta-loss over a batch of tasks and the jitted outer step built from it."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from maml_cli.data.episodes import Episodes
from maml_cli.meta.batching import map_tasks
from maml_cli.meta.inner import adapt
from maml_cli.meta.losses import TaskLoss


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue exactly where it stopped: what a checkpoint holds."""

    step: jax.Array  # outer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # raw key data; the tasks of step s are drawn from fold_in(rng, s)


def make_meta_loss(task_loss: TaskLoss, *, inner_lr: float, inner_steps: int, first_order: bool,
                   task_batching: str = "vmap", remat: bool = False) -> Callable:
    """``meta_loss(params, episodes) -> (mean query loss, mean query metric)`` over the tasks."""

    def one_task(params, episode: Episodes):
        adapted = adapt(task_loss.loss, params, episode.support_x, episode.support_y,
                        inner_lr=inner_lr, inner_steps=inner_steps, first_order=first_order, remat=remat)
        return (task_loss.loss(adapted, episode.query_x, episode.query_y),
                task_loss.metric(adapted, episode.query_x, episode.query_y))

    def meta_loss(params, episodes: Episodes):
        losses, metrics = map_tasks(partial(one_task, params), episodes, task_batching)
        return jnp.mean(losses), jnp.mean(metrics)

    return meta_loss


def make_optimizer(outer_lr: float, grad_clip: float | None = None,
                   grad_clip_value: float | None = None) -> optax.GradientTransformation:
    """Adam on the meta-gradient, optionally clipped by value (as the original MAML code did for
    MiniImageNet) and/or by global norm."""
    clips = ([optax.clip(grad_clip_value)] if grad_clip_value else []) + \
        ([optax.clip_by_global_norm(grad_clip)] if grad_clip else [])
    return optax.chain(*clips, optax.adam(outer_lr)) if clips else optax.adam(outer_lr)


def init_state(model, input_shape: tuple, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    init_key, task_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.zeros((1, *input_shape)))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=task_key)


def make_train_step(sample: Callable, meta_loss: Callable, optimizer: optax.GradientTransformation,
                    meta_batch_size: int, metric_name: str) -> Callable:
    """``train_step(state, data) -> (state, metrics)``: draw tasks on the device from ``data``
    (the sampler's arrays), one outer update."""

    def train_step(state: TrainState, data):
        episodes = sample(data, jax.random.fold_in(state.rng, state.step), "train", meta_batch_size)
        (loss, metric), grads = jax.value_and_grad(meta_loss, has_aux=True)(state.params, episodes)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=opt_state)
        return new_state, {"train/query_loss": loss, f"train/query_{metric_name}": metric,
                           "train/grad_norm": optax.global_norm(grads)}

    return train_step


def make_multi_step(train_step: Callable) -> Callable:
    """``multi_step(state, data, length) -> (state, metrics stacked over the steps)``, jitted, with
    the state donated. Fusing steps with ``lax.scan`` keeps the host out of the way of small models."""

    @partial(jax.jit, static_argnums=2, donate_argnums=0)
    def multi_step(state: TrainState, data, length: int):
        return jax.lax.scan(lambda s, _: train_step(s, data), state, None, length=length)

    return multi_step
