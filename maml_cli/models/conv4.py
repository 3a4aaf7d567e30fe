"""The four-block convolutional net of the MAML paper (after Vinyals et al. 2016).

Each block: 3x3 convolution -> batch norm -> ReLU, downsampling by stride 2 (Omniglot, 64
filters) or by 2x2 max-pool after the block (MiniImageNet, 32 filters); then a linear ``head``
over the spatial mean (Omniglot) or the flattened features (MiniImageNet). ``features`` is
everything before the head: ANIL adapts the head alone on features computed once.

Batch norm, ``batch_norm``:
- ``transductive``: every call normalises with the mean and variance of the batch at hand (the
  support set while adapting, the query set when scoring), in training and evaluation alike, with
  no running statistics: the original MAML code.
- ``per_step`` (MAML++, Antoniou et al. 2019): one scale/offset per inner step, and running
  statistics per inner step kept in the ``batch_stats`` collection. A call with
  ``use_running=False`` normalises with the batch and reports the batch statistics it used (the
  ``step_stats`` collection) so that the training step can fold them into the running averages; a
  call with ``use_running=True`` normalises with the running statistics of its step.
- ``none``.
``bn_scale`` false drops the learned scale (the original code: offset only, epsilon 1e-3).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from maml_cli.models.convolution import CONVOLUTIONS, max_pool_2x2

BATCH_NORM_MODES = ("transductive", "per_step", "none")
ACTIVATIONS = {"relu": nn.relu, "leaky_relu": nn.leaky_relu}  # leaky_relu: negative slope 0.01


class Conv3x3(nn.Module):
    features: int
    stride: int = 1
    impl: str = "lax"

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return CONVOLUTIONS[self.impl](x, kernel, self.stride) + bias


class BatchNorm(nn.Module):
    """Batch norm without hidden state: see the module docstring for the modes."""

    mode: str = "transductive"  # transductive | per_step
    steps: int = 1  # per_step: inner steps with their own scale, offset and running statistics
    use_scale: bool = True
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, step=0, use_running: bool = False):
        channels = x.shape[-1]
        per_step = self.mode == "per_step"
        shape = (self.steps, channels) if per_step else (channels,)
        offset = self.param("offset", nn.initializers.zeros, shape)
        scale = self.param("scale", nn.initializers.ones, shape) if self.use_scale else None
        if per_step:
            i = jnp.minimum(step, self.steps - 1)  # evaluation may take more steps than training did
            offset = offset[i]
            scale = None if scale is None else scale[i]
        if per_step and (use_running or self.is_initializing()):  # declared at init, read when asked
            running_mean = self.variable("batch_stats", "mean", jnp.zeros, shape)
            running_var = self.variable("batch_stats", "var", jnp.ones, shape)
        if per_step and use_running:
            mean, var = running_mean.value[i], running_var.value[i]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            if per_step:
                self.sow("step_stats", "mean", mean, reduce_fn=lambda _, new: new)
                self.sow("step_stats", "var", var, reduce_fn=lambda _, new: new)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y if scale is None else y * scale) + offset


class Conv4(nn.Module):
    output_dim: int
    filters: int = 64
    downsample: str = "stride"  # stride | maxpool
    head_input: str = "mean"  # mean | flatten
    batch_norm: str = "transductive"
    bn_scale: bool = True
    bn_epsilon: float = 1e-5
    bn_steps: int = 1  # per_step batch norm: the inner steps of meta-training
    conv_impl: str = "im2col"
    activation: str = "relu"  # relu | leaky_relu (slope 0.01, as PyTorch's default in the MAML++ code)

    def setup(self):
        stride = 2 if self.downsample == "stride" else 1
        self.convs = [Conv3x3(self.filters, stride=stride, impl=self.conv_impl) for _ in range(4)]
        self.norms = (
            []
            if self.batch_norm == "none"
            else [BatchNorm(self.batch_norm, self.bn_steps, self.bn_scale, self.bn_epsilon) for _ in range(4)]
        )
        self.head = nn.Dense(self.output_dim)

    def features(self, x, step=0, use_running: bool = False):
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x, step, use_running)
            x = ACTIVATIONS[self.activation](x)
            if self.downsample == "maxpool":
                x = max_pool_2x2(x)
        return jnp.mean(x, axis=(1, 2)) if self.head_input == "mean" else x.reshape(x.shape[0], -1)

    def __call__(self, x, step=0, use_running: bool = False):
        return self.head(self.features(x, step, use_running))
