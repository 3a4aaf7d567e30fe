"""The task batch that flows from a sampler into the meta-learning math."""

from __future__ import annotations

from typing import NamedTuple

import jax


class Episodes(NamedTuple):
    """A batch of tasks, each array with a leading task axis.

    Classification: ``support_x`` is [tasks, ways * shots, H, W, C] and ``support_y`` integer labels
    [tasks, ways * shots]. Regression: ``support_x`` [tasks, shots, 1] and ``support_y`` the same.
    One task is the same structure without the leading axis.
    """

    support_x: jax.Array
    support_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array


class TaskSpec(NamedTuple):
    """What a model and a loss need to know about a dataset's tasks."""

    input_shape: tuple  # shape of one example
    output_dim: int  # regression outputs, or classes per task
    kind: str  # "regression" | "classification"

    @property
    def metric(self) -> str:
        return "mse" if self.kind == "regression" else "accuracy"
