"""Fully connected network, as in the MAML paper's sinusoid experiments (1-40-40-1, ReLU)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu}


class MLP(nn.Module):
    """``features`` is the hidden stack, ``head`` the last linear layer (what ANIL adapts)."""

    hidden_sizes: Sequence[int]
    output_dim: int
    activation: str = "relu"

    def setup(self):
        self.hidden = [nn.Dense(width) for width in self.hidden_sizes]
        self.head = nn.Dense(self.output_dim)

    def features(self, x: jax.Array, step=0, use_running: bool = False) -> jax.Array:
        del step, use_running  # no batch norm
        act = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = act(layer(x))
        return x

    def __call__(self, x: jax.Array, step=0, use_running: bool = False) -> jax.Array:
        return self.head(self.features(x))
