"""3x3 'SAME' convolutions and 2x2 max-pooling, in the forms the execution plan chooses between.

All forms compute the same numbers (tests/test_convolution.py compares values, gradients and
second-order gradients); they differ in what XLA is asked to run, which matters on CPU
(``maml_cli/backend/plan.py`` decides, docs/performance.md has the measurements):

- ``lax``: ``lax.conv_general_dilated`` with JAX's own derivatives. Differentiated twice (MAML's
  meta-gradient), the kernel gradient's derivative is a convolution with batch and features
  swapped, which XLA:CPU runs on a slow generic path (a MiniImageNet step took 51 s, not 4).
- ``lax_vjp``: the same forward convolution, with a derivative rule of our own that keeps every
  derivative, at every order, one of three well-trodden forms: a plain convolution, a plain
  convolution with the kernel flipped (the input gradient), and XLA's kernel gradient. Stride 1.
- ``im2col``: nine strided slices and one matmul. Under ``vmap`` over tasks with their own weights
  a batched matmul, where XLA:CPU would run grouped convolutions; on small images the fastest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CONV_IMPLS = ("lax", "lax_vjp", "im2col")
_DIMS = ("NHWC", "HWIO", "NHWC")


def conv3x3_lax(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=_DIMS)


def conv3x3_im2col(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """'SAME' 3x3 convolution as nine strided slices and one matmul."""
    n, h, w, c = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    ph, pw = max((oh - 1) * stride + 3 - h, 0), max((ow - 1) * stride + 3 - w, 0)
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    patches = [
        jax.lax.slice(
            x, (0, i, j, 0), (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c), (1, stride, stride, 1)
        )
        for i in range(3)
        for j in range(3)
    ]
    return jnp.concatenate(patches, axis=-1) @ kernel.reshape(9 * c, kernel.shape[-1])


def _flip(kernel: jax.Array) -> jax.Array:
    """The kernel whose convolution is the transpose of ``kernel``'s (stride 1, 'SAME', 3x3)."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


@jax.custom_vjp
def _conv(x, kernel):
    return conv3x3_lax(x, kernel)


@jax.custom_vjp
def _kernel_grad(x, g, kernel):
    """d<conv(x, k), g>/dk: itself a convolution, of x (channels as the batch, images as features)
    with g (images as input features). Written out in the standard layout: left to XLA, this
    convolution kept its swapped layout inside the training step, and XLA:CPU ran it on a slow path
    (9 s, not 60 ms). ``kernel`` gives the result its type under ``shard_map`` and nothing else."""
    del kernel
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    y = jax.lax.conv_general_dilated(
        jnp.pad(x.transpose(3, 1, 2, 0), pad), g.transpose(1, 2, 0, 3), (1, 1), "VALID", dimension_numbers=_DIMS
    )
    return y.transpose(1, 2, 0, 3)


def _varying(x) -> frozenset:
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)  # jax 0.10; earlier releases called it vma
    return frozenset(mat.varying if mat is not None else getattr(aval, "vma", ()))


def _typed_like(cotangent, primal):
    """``cotangent`` with the varying-ness of ``primal`` under ``shard_map``, as JAX's own rules give
    it: summed over the axes along which the primal is replicated, marked varying along the others."""
    have, want = _varying(cotangent), _varying(primal)
    if extra := tuple(sorted(have - want)):
        cotangent = jax.lax.psum(cotangent, extra)
    if missing := tuple(sorted(want - have)):
        pcast = getattr(jax.lax, "pcast", None)
        cotangent = pcast(cotangent, missing, to="varying") if pcast else jax.lax.pvary(cotangent, missing)
    return cotangent


def _conv_bwd(res, g):
    x, kernel = res
    return _typed_like(_conv(g, _flip(kernel)), x), _typed_like(_kernel_grad(x, g, kernel), kernel)


def _kernel_grad_bwd(res, dk):
    x, g, kernel = res
    return _typed_like(_conv(g, _flip(dk)), x), _typed_like(_conv(x, dk), g), jnp.zeros_like(kernel)


_conv.defvjp(lambda x, k: (_conv(x, k), (x, k)), _conv_bwd)
_kernel_grad.defvjp(lambda x, g, k: (_kernel_grad(x, g, k), (x, g, k)), _kernel_grad_bwd)

_MIN_CHANNELS = 4  # XLA:CPU runs a 3-channel convolution slower than the same one padded to 4 (84x84 RGB: 79 ms, 53)


def conv3x3_lax_vjp(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    if stride != 1:
        raise ValueError("conv_impl=lax_vjp is for stride 1 (downsample=maxpool); use lax or im2col")
    if x.shape[-1] < _MIN_CHANNELS:
        extra = _MIN_CHANNELS - x.shape[-1]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, extra), (0, 0)))
    return _conv(x, kernel)


CONVOLUTIONS = {"lax": conv3x3_lax, "lax_vjp": conv3x3_lax_vjp, "im2col": conv3x3_im2col}


def _corners(x):
    """The four positions of each 2x2 window of ``x`` (even height and width)."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c)
    return [x[:, :, i, :, j] for i in range(2) for j in range(2)]


@jax.custom_vjp
def _pool(x):
    a, b, c, d = _corners(x)
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _pool_bwd(x, g):
    a, b, c, d = _corners(x)
    # The first position holding its window's maximum, from comparisons among the window's own values.
    is_a = (a >= b) & (a >= c) & (a >= d)
    is_b = ~is_a & (b >= c) & (b >= d)
    is_c = ~is_a & ~is_b & (c >= d)
    is_d = ~is_a & ~is_b & ~is_c
    parts = [jnp.where(jax.lax.stop_gradient(m), g, 0) for m in (is_a, is_b, is_c, is_d)]
    n, h2, w2, ch = g.shape
    dx = jnp.stack([jnp.stack(parts[:2], axis=3), jnp.stack(parts[2:], axis=3)], axis=2)  # [n, h2, 2, w2, 2, c]
    return (dx.reshape(n, 2 * h2, 2 * w2, ch),)


_pool.defvjp(lambda x: (_pool(x), x), _pool_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling, stride 2, 'VALID' (an odd last row or column is dropped), with its own
    derivative: the gradient goes to the first position of each window holding the maximum (as with
    ``reduce_window``), found by comparing the window's four values with each other, in one
    elementwise pass. ``reduce_window``'s gradient is a select-and-scatter that XLA:CPU runs slowly,
    and its second derivative more slowly still. ``jnp.max`` over a reshape is fast, but its
    derivative compares each value with the maximum computed elsewhere: XLA may fuse the producer
    of ``x`` into two consumers that round differently, and the gradient is then lost (measured:
    meta-gradients off by 10% under some plans)."""
    n, h, w, c = x.shape
    return _pool(x[:, : h // 2 * 2, : w // 2 * 2])
