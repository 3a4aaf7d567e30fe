"""Per-task loss and metric, built from a model's apply function and the kind of task."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TaskLoss(NamedTuple):
    """``loss(params, x, y)`` is what the inner and outer loops differentiate (a mean over the
    examples, never a sum: the step size then does not depend on the number of shots);
    ``metric(params, x, y)`` is what is reported (MSE or accuracy as a fraction)."""

    loss: Callable[..., jax.Array]
    metric: Callable[..., jax.Array]


def make_task_loss(apply_fn: Callable, kind: str) -> TaskLoss:
    def predict(params, x):
        return apply_fn({"params": params}, x)

    if kind == "regression":

        def mse(params, x, y):
            return jnp.mean((predict(params, x) - y) ** 2)

        return TaskLoss(loss=mse, metric=mse)

    if kind == "classification":

        def cross_entropy(params, x, y):
            return optax.softmax_cross_entropy_with_integer_labels(predict(params, x), y).mean()

        def accuracy(params, x, y):
            return jnp.mean(jnp.argmax(predict(params, x), axis=-1) == y)

        return TaskLoss(loss=cross_entropy, metric=accuracy)

    raise ValueError(f"unknown task kind {kind!r}")
