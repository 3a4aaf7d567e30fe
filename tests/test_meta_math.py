"""The meta-learning math against explicit references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_cli.data.sinusoid import SinusoidTasks
from maml_cli.evaluation import summarize
from maml_cli.meta.batching import STRATEGIES, map_tasks
from maml_cli.meta.inner import adapt, adaptation_trace
from maml_cli.meta.losses import make_task_loss
from maml_cli.meta.outer import make_meta_loss
from maml_cli.models.mlp import MLP
from tests.conftest import make_cfg


def _small_problem(num_tasks=3, dtype=jnp.float32, seed=0):
    cfg = make_cfg("dataset.shots=4")
    model = MLP(hidden_sizes=(8,), output_dim=1, activation="tanh")
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 1), dtype))["params"]
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    episodes = SinusoidTasks(cfg.dataset).sample(None, jax.random.PRNGKey(seed + 1), "train", num_tasks)
    episodes = jax.tree.map(lambda a: a.astype(dtype), episodes)
    return make_task_loss(model.apply, "regression"), params, episodes


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(inner_steps):
    with jax.enable_x64(True):
        task_loss, params, episodes = _small_problem(dtype=jnp.float64)
        meta_loss = make_meta_loss(task_loss, inner_lr=0.1, inner_steps=inner_steps, first_order=False)
        loss = jax.jit(lambda p: meta_loss(p, episodes)[0])
        grads = _flat(jax.grad(loss)(params))
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        eps = 1e-6
        fd = np.array([
            (loss(unravel(flat.at[i].add(eps))) - loss(unravel(flat.at[i].add(-eps)))) / (2 * eps)
            for i in range(flat.size)
        ])
        np.testing.assert_allclose(np.asarray(grads), fd, rtol=1e-5, atol=1e-8)
        # And the first-order gradient is measurably different: the test can tell them apart.
        fo = make_meta_loss(task_loss, inner_lr=0.1, inner_steps=inner_steps, first_order=True)
        fo_grads = _flat(jax.grad(lambda p: fo(p, episodes)[0])(params))
        assert np.max(np.abs(np.asarray(fo_grads) - fd)) > 1e-4


def test_second_order_matches_explicit_hessian_formula():
    """One inner step: d L_q(theta - a g_s(theta)) / d theta = (I - a H_s(theta)) grad L_q(theta')."""
    with jax.enable_x64(True):
        task_loss, params, episodes = _small_problem(num_tasks=1, dtype=jnp.float64)
        task = jax.tree.map(lambda a: a[0], episodes)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        support_loss = lambda f: task_loss.loss(unravel(f), task.support_x, task.support_y)  # noqa: E731
        query_loss = lambda f: task_loss.loss(unravel(f), task.query_x, task.query_y)  # noqa: E731
        lr = 0.05
        adapted = flat - lr * jax.grad(support_loss)(flat)
        expected = (jnp.eye(flat.size) - lr * jax.hessian(support_loss)(flat)) @ jax.grad(query_loss)(adapted)
        meta_loss = make_meta_loss(task_loss, inner_lr=lr, inner_steps=1, first_order=False)
        got = _flat(jax.grad(lambda p: meta_loss(p, episodes)[0])(params))
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_first_order_equals_stop_gradient_reference():
    task_loss, params, episodes = _small_problem()
    meta_loss = make_meta_loss(task_loss, inner_lr=0.1, inner_steps=2, first_order=True)
    got = jax.grad(lambda p: meta_loss(p, episodes)[0])(params)

    def reference(p):  # FOMAML: the query gradient at the adapted parameters, averaged over tasks
        def one(task):
            adapted = adapt(task_loss.loss, p, task.support_x, task.support_y, inner_lr=0.1, inner_steps=2,
                            first_order=False)
            return jax.grad(task_loss.loss)(adapted, task.query_x, task.query_y)
        return jax.tree.map(lambda g: g.mean(0), jax.vmap(one)(episodes))

    np.testing.assert_allclose(_flat(got), _flat(reference(params)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_task_batching_strategies_match_a_per_task_loop(strategy):
    task_loss, params, episodes = _small_problem(num_tasks=4)
    meta_loss = make_meta_loss(task_loss, inner_lr=0.1, inner_steps=2, first_order=False, task_batching=strategy)
    (loss, metric), grads = jax.jit(jax.value_and_grad(meta_loss, has_aux=True))(params, episodes)

    # Reference: a Python loop over tasks, one un-batched meta-loss each, averaged.
    single = make_meta_loss(task_loss, inner_lr=0.1, inner_steps=2, first_order=False, task_batching="unroll")
    per_task = [jax.value_and_grad(single, has_aux=True)(params, jax.tree.map(lambda a: a[i:i + 1], episodes))
                for i in range(4)]
    ref_loss = np.mean([float(v[0][0]) for v in per_task])
    ref_grads = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *[v[1] for v in per_task])
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(_flat(grads), _flat(ref_grads), rtol=1e-4, atol=1e-6)


def test_remat_gives_the_same_meta_gradient():
    task_loss, params, episodes = _small_problem()
    plain, remat = (make_meta_loss(task_loss, inner_lr=0.1, inner_steps=3, first_order=False, remat=r)
                    for r in (False, True))
    a = jax.grad(lambda p: plain(p, episodes)[0])(params)
    b = jax.grad(lambda p: remat(p, episodes)[0])(params)
    np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-5, atol=1e-7)


def test_map_tasks_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="unknown task batching"):
        map_tasks(lambda t: t, jnp.zeros((2, 1)), "pmap-please")


def test_one_inner_step_lowers_the_support_loss():
    task_loss, params, episodes = _small_problem(num_tasks=5)
    for i in range(5):
        task = jax.tree.map(lambda a: a[i], episodes)
        before = task_loss.loss(params, task.support_x, task.support_y)
        adapted = adapt(task_loss.loss, params, task.support_x, task.support_y, inner_lr=0.01, inner_steps=1,
                        first_order=False)
        assert task_loss.loss(adapted, task.support_x, task.support_y) < before


def test_adaptation_trace_reports_each_step():
    task_loss, params, episodes = _small_problem(num_tasks=1)
    task = jax.tree.map(lambda a: a[0], episodes)
    trace = adaptation_trace(task_loss, params, task, inner_lr=0.01, inner_steps=3)
    assert trace.shape == (4,)
    for k in range(4):
        adapted = adapt(task_loss.loss, params, task.support_x, task.support_y, inner_lr=0.01, inner_steps=k,
                        first_order=False)
        np.testing.assert_allclose(trace[k], task_loss.metric(adapted, task.query_x, task.query_y), rtol=1e-5)


def test_zero_inner_steps_is_plain_pretraining():
    task_loss, params, episodes = _small_problem()
    meta_loss = make_meta_loss(task_loss, inner_lr=0.1, inner_steps=0, first_order=False)
    expected = np.mean([float(task_loss.loss(params, episodes.query_x[i], episodes.query_y[i])) for i in range(3)])
    np.testing.assert_allclose(float(meta_loss(params, episodes)[0]), expected, rtol=1e-6)


def test_classification_loss_and_accuracy():
    apply = lambda variables, x: x  # noqa: E731  logits are the inputs
    task_loss = make_task_loss(apply, "classification")
    logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    labels = jnp.array([0, 1, 1])
    assert float(task_loss.metric(None, logits, labels)) == pytest.approx(2 / 3)
    expected = -np.mean(np.log(np.take_along_axis(np.asarray(jax.nn.softmax(logits)), labels[:, None], 1)))
    assert float(task_loss.loss(None, logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_ci95_as_in_the_papers():
    values = np.array([[1.0, 0.5], [3.0, 0.7], [2.0, 0.9], [6.0, 0.1]])
    rows = summarize(values)
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["mean"] == pytest.approx(3.0)
    assert rows[0]["ci95"] == pytest.approx(1.96 * np.std([1, 3, 2, 6]) / 2)
    assert rows[1]["ci95"] == pytest.approx(1.96 * np.std([0.5, 0.7, 0.9, 0.1]) / 2)


def test_sinusoid_tasks_follow_the_paper_distribution():
    cfg = make_cfg("dataset.shots=5")
    ep = SinusoidTasks(cfg.dataset).sample(None, jax.random.PRNGKey(0), "train", 2000)
    assert ep.support_x.shape == (2000, 5, 1) and ep.query_x.shape == (2000, 5, 1)
    x = np.concatenate([ep.support_x, ep.query_x], 1)
    y = np.concatenate([ep.support_y, ep.query_y], 1)
    assert x.min() >= -5 and x.max() <= 5
    assert np.abs(y).max() <= 5.0
    # the same key gives the same tasks; another key other tasks
    again = SinusoidTasks(cfg.dataset).sample(None, jax.random.PRNGKey(0), "train", 2000)
    np.testing.assert_array_equal(ep.support_x, again.support_x)
    other = SinusoidTasks(cfg.dataset).sample(None, jax.random.PRNGKey(1), "train", 2000)
    assert not np.allclose(ep.support_x, other.support_x)
