"""The inner loop: adapt parameters to one task's support set with plain SGD steps."""

from __future__ import annotations

from typing import Callable

import jax

from maml_cli.data.episodes import Episodes
from maml_cli.meta.losses import TaskLoss


def inner_update(loss_fn: Callable, params, x, y, inner_lr: float, first_order: bool):
    """One SGD step on the support loss.

    Second order (the default) keeps the step differentiable, so the outer gradient flows through
    the inner gradient (grad-through-grad). First order stops it there: d(adapted)/d(params) is
    then the identity, which is FOMAML.
    """
    grads = jax.grad(loss_fn)(params, x, y)
    if first_order:
        grads = jax.lax.stop_gradient(grads)
    return jax.tree.map(lambda w, g: w - inner_lr * g, params, grads)


def adapt(loss_fn: Callable, params, x, y, *, inner_lr: float, inner_steps: int, first_order: bool,
          remat: bool = False):
    """``inner_steps`` SGD steps from ``params`` on (x, y); returns the adapted parameters.

    ``remat`` recomputes each step's activations in the backward pass instead of storing them
    (``jax.checkpoint``): memory stays flat in ``inner_steps`` at the price of one more forward.
    """
    if inner_steps == 0:
        return params

    def step(p, _):
        return inner_update(loss_fn, p, x, y, inner_lr, first_order), None

    if remat:
        step = jax.checkpoint(step)

    adapted, _ = jax.lax.scan(step, params, None, length=inner_steps)
    return adapted


def adaptation_trace(task_loss: TaskLoss, params, episode: Episodes, *, inner_lr: float, inner_steps: int):
    """The query metric before adaptation and after each of ``inner_steps`` steps: [inner_steps + 1]."""

    def step(p, _):
        metric = task_loss.metric(p, episode.query_x, episode.query_y)
        p = inner_update(task_loss.loss, p, episode.support_x, episode.support_y, inner_lr, True)
        return p, metric

    adapted, metrics = jax.lax.scan(step, params, None, length=inner_steps)
    last = task_loss.metric(adapted, episode.query_x, episode.query_y)
    return jax.numpy.concatenate([metrics, last[None]])
