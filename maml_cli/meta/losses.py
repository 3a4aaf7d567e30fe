"""Per-task loss and metric of a network's outputs, for regression or classification."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from maml_cli.models import Network


def mse(outputs, y):
    return jnp.mean((outputs - y) ** 2)


def cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(logits, y):
    return jnp.mean(jnp.argmax(logits, axis=-1) == y)


KINDS = {"regression": (mse, mse), "classification": (cross_entropy, accuracy)}


@dataclass(frozen=True)
class TaskLoss:
    """``loss`` is what the inner and outer loops differentiate (a mean over the examples, never a
    sum: the step size then does not depend on the number of shots); ``metric`` is what is
    reported (MSE, or accuracy as a fraction). Keyword arguments go to ``Network.apply``
    (``step``, ``batch_stats``, ``use_running``)."""

    network: Network
    of_outputs: Callable[..., jax.Array]  # (outputs, y) -> loss
    metric_of_outputs: Callable[..., jax.Array]  # (outputs, y) -> metric

    def loss(self, params, x, y, **forward):
        """(loss, step_stats)."""
        outputs, stats = self.network.apply(params, x, **forward)
        return self.of_outputs(outputs, y), stats

    def metric(self, params, x, y, **forward):
        return self.metric_of_outputs(self.network.apply(params, x, **forward)[0], y)

    def loss_and_metric(self, params, x, y, **forward):
        """(loss, (metric, step_stats)) from one forward pass."""
        outputs, stats = self.network.apply(params, x, **forward)
        return self.of_outputs(outputs, y), (self.metric_of_outputs(outputs, y), stats)


def make_task_loss(network: Network, kind: str) -> TaskLoss:
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}")
    loss, metric = KINDS[kind]
    return TaskLoss(network, loss, metric)


def masked_task_loss(network: Network, used_classes: int, ways: int) -> TaskLoss:
    """Classification over the first ``used_classes`` of the network's ``ways`` outputs: the others
    get a logit of -1e9, so they take no probability, no loss and no prediction (maml-adapt on a
    task with fewer classes than the run was trained for)."""
    bias = jnp.where(jnp.arange(ways) < used_classes, 0.0, -1e9)
    return TaskLoss(
        network, lambda logits, y: cross_entropy(logits + bias, y), lambda logits, y: accuracy(logits + bias, y)
    )
