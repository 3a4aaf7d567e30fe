"""The convolution and pooling forms the execution plan chooses between compute the same numbers:
values, gradients and the second-order gradients MAML takes; and the GPU plan, forced on CPU, still
compiles for every image preset and matches the CPU plan's meta-gradient."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maml_cli as mc
from maml_cli.backend.plan import plan_execution
from maml_cli.data.episodes import TaskSpec, sample_classification_episodes
from maml_cli.meta.algorithms import build_algorithm
from maml_cli.meta.losses import make_task_loss
from maml_cli.models import build_model
from maml_cli.models.convolution import conv3x3_im2col, conv3x3_lax, conv3x3_lax_vjp, max_pool_2x2


def _close(a, b, tol=1e-5):
    a, b = jax.flatten_util.ravel_pytree(a)[0], jax.flatten_util.ravel_pytree(b)[0]
    assert np.linalg.norm(a - b) <= tol * max(np.linalg.norm(b), 1e-12)


def _first_and_second_order(conv, x, k):
    """The value, the gradient of a scalar of the output, and the gradient of a scalar of that
    gradient (for x and the kernel): what MAML's meta-gradient differentiates."""

    def f(x, k):
        return jnp.sum(jnp.sin(conv(x, k)))

    def g(x, k):
        gx, gk = jax.grad(f, (0, 1))(x, k)
        return jnp.sum(jnp.cos(gk)) + jnp.sum(jnp.cos(gx))

    return conv(x, k), jax.grad(f, (0, 1))(x, k), jax.grad(g, (0, 1))(x, k)


@pytest.mark.parametrize("channels,size", [(3, 9), (5, 8), (4, 7)])
def test_lax_vjp_matches_lax_to_second_order(channels, size):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, channels))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, channels, 6))
    ours = jax.jit(lambda x, k: _first_and_second_order(conv3x3_lax_vjp, x, k))(x, k)
    ref = jax.jit(lambda x, k: _first_and_second_order(conv3x3_lax, x, k))(x, k)
    for a, b in zip(ours, ref):
        _close(a, b)
    _close(jax.jit(lambda x, k: _first_and_second_order(lambda x, k: conv3x3_im2col(x, k, 1), x, k))(x, k), ref)


def test_lax_vjp_under_vmap_with_weights_per_task():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 6, 6, 4))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4, 5))

    def meta(conv):
        return jax.grad(lambda k: jnp.sum(jax.vmap(lambda x, k: jax.grad(lambda k: jnp.sum(conv(x, k) ** 2))(k))(x, k)))

    _close(jax.jit(meta(conv3x3_lax_vjp))(k), jax.jit(meta(conv3x3_lax))(k))


def test_lax_vjp_is_for_stride_one():
    with pytest.raises(ValueError, match="stride 1"):
        conv3x3_lax_vjp(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4)), 2)


@pytest.mark.parametrize("size", [8, 21, 5])
def test_max_pool_equals_reduce_window_with_its_gradients(size):
    """Odd sizes drop the last row and column, as 'VALID' pooling does; gradients of every order
    agree (both give a window's gradient to its first maximum)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))

    def ref(x):
        return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")

    for pool in (max_pool_2x2, ref):
        assert pool(x).shape == (2, size // 2, size // 2, 3)
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))

    def second(pool):
        inner = jax.grad(lambda x, w: jnp.sum(jnp.sin(pool(x * w))), 1)
        return jax.grad(lambda x, w: jnp.sum(inner(x, w) ** 2), (0, 1))(x, 1.3)

    _close(jax.grad(lambda x: jnp.sum(jnp.sin(max_pool_2x2(x))))(x), jax.grad(lambda x: jnp.sum(jnp.sin(ref(x))))(x))
    _close(second(max_pool_2x2), second(ref))


def test_lax_vjp_needs_stride_one_nets():
    cfg = mc.compose("omniglot_5w1s", ["model.conv_impl=lax_vjp"])
    with pytest.raises(mc.UserError, match="model.downsample=maxpool"):
        build_model(cfg.model, TaskSpec((28, 28, 1), 5, "classification"), "lax_vjp")


IMAGE_PRESETS = [
    pytest.param("omniglot_5w1s", marks=pytest.mark.slow),  # XLA's convolutions as miniimagenet's, strided
    pytest.param("omniglot_20w1s", marks=pytest.mark.slow),  # the same plan as 5w1s, at 20 ways
    "miniimagenet_5w1s",
    pytest.param("miniimagenet_5w5s", marks=pytest.mark.slow),  # the same plan as 5w1s, at 5 shots
]


@pytest.mark.parametrize("preset", IMAGE_PRESETS)
def test_gpu_plan_compiles_on_cpu_and_matches_the_cpu_plan(preset):
    """Each preset's network and algorithm (its filters, pooling, head, batch norm, inner steps and
    rates), on small images so that the test is quick: the meta-gradient under the plan a GPU gets
    equals the one under the plan this CPU gets."""
    cfg = mc.compose(preset, [])
    size = 16  # four halvings, by stride or by pooling, leave 1x1
    ways, channels = 3, (3 if "miniimagenet" in preset else 1)
    images = jax.random.uniform(jax.random.PRNGKey(0), (8, 3, size, size, channels)) * 255
    episodes = sample_classification_episodes(
        images.astype(jnp.uint8), jnp.arange(8), jax.random.PRNGKey(1), 2, ways=ways, shots=1, query_shots=2
    )
    spec = TaskSpec((size, size, channels), ways, "classification")
    inner_steps = min(cfg.algorithm.inner_steps, 2)
    algo_cfg = mc.compose(preset, [f"algorithm.inner_steps={inner_steps}"]).algorithm
    results = []
    for backend in ("cpu", "gpu"):
        execution = plan_execution(
            "conv4", backend=backend, downsample=cfg.model.downsample, inner_steps=cfg.algorithm.inner_steps
        )
        network = build_model(cfg.model, spec, execution.conv_impl, inner_steps=inner_steps)
        algorithm = build_algorithm(algo_cfg, make_task_loss(network, "classification"), execution, cfg.train)
        params, _ = network.init(jax.random.PRNGKey(2), spec.input_shape)
        meta_params = algorithm.init(params, jax.random.PRNGKey(3))
        grads, _, out = jax.jit(
            lambda mp, algorithm=algorithm: algorithm.meta_gradient(
                mp, {}, episodes, jax.random.PRNGKey(4), 0, algorithm.phase(0)
            )
        )(meta_params)
        results.append((execution, float(out["query_loss"]), grads))
    (cpu_plan, cpu_loss, cpu_grads), (gpu_plan, gpu_loss, gpu_grads) = results
    assert gpu_plan.task_batching == "vmap" and gpu_plan.conv_impl == "lax" and cpu_plan.task_batching == "map"
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-4)
    # float32, second order through batch norm at a random initialisation, compared as vectors:
    # correct plans differ by up to 1.5e-3 here (Omniglot, XLA at -O0); a pooling derivative that lost
    # its gradient under some plans was off by 8%.
    _close(gpu_grads, cpu_grads, tol=5e-3)
