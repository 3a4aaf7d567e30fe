"""The four-block convolutional net of the MAML paper (after Vinyals et al. 2016).

Each block: 3x3 convolution -> batch norm -> ReLU, downsampling by stride 2 (Omniglot, 64
filters) or by 2x2 max-pool after the block (MiniImageNet, 32 filters); then a linear head over
the spatial mean (Omniglot) or the flattened features (MiniImageNet).

Batch norm ``transductive`` is what the original code does: every call normalises with the mean
and variance of the batch at hand (the support set in the inner loop, the query set when scoring),
in training and in evaluation alike, with learned scale and offset and no running statistics.
The model therefore has no state besides its parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("lax", "im2col")
BATCH_NORM_MODES = ("transductive", "none")


def conv3x3_im2col(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """'SAME' 3x3 convolution as nine strided slices and one matmul.

    Same result as ``lax.conv_general_dilated``. Under ``vmap`` over tasks whose weights differ,
    this becomes a batched matmul, where XLA:CPU would turn the convolution into a slow grouped one.
    """
    n, h, w, c = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    ph, pw = max((oh - 1) * stride + 3 - h, 0), max((ow - 1) * stride + 3 - w, 0)
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    patches = [
        jax.lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                      (1, stride, stride, 1))
        for i in range(3) for j in range(3)
    ]
    return jnp.concatenate(patches, axis=-1) @ kernel.reshape(9 * c, kernel.shape[-1])


class Conv3x3(nn.Module):
    features: int
    stride: int = 1
    impl: str = "lax"

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.glorot_uniform(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.impl == "im2col":
            y = conv3x3_im2col(x, kernel, self.stride)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


class BatchStatNorm(nn.Module):
    """Batch norm with the statistics of the batch at hand, always (no running averages)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        offset = self.param("offset", nn.initializers.zeros, (x.shape[-1],))
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes)
        var = jnp.mean(jnp.square(x - mean), axes)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + offset


class Conv4(nn.Module):
    output_dim: int
    filters: int = 64
    downsample: str = "stride"  # stride | maxpool
    head: str = "mean"  # mean | flatten
    batch_norm: str = "transductive"
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x):
        for _ in range(4):
            x = Conv3x3(self.filters, stride=2 if self.downsample == "stride" else 1, impl=self.conv_impl)(x)
            if self.batch_norm == "transductive":
                x = BatchStatNorm()(x)
            x = nn.relu(x)
            if self.downsample == "maxpool":
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = jnp.mean(x, axis=(1, 2)) if self.head == "mean" else x.reshape(x.shape[0], -1)
        return nn.Dense(self.output_dim)(x)
