"""Fully connected network, as in the MAML paper's sinusoid experiments (1-40-40-1, ReLU)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu}


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    output_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden_sizes:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.output_dim)(x)
