"""The meta-learning math against explicit references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_cli.data.sinusoid import SinusoidTasks
from maml_cli.engine.scoring import summarize
from maml_cli.meta.batching import STRATEGIES, map_tasks
from maml_cli.meta.inner import adapt, constant_rates, sgd
from maml_cli.meta.losses import make_task_loss
from maml_cli.models import Network
from tests.conftest import make_cfg
from tests.meta_problem import algorithm_for, episodes_for, flat, init, loss_fn, meta_gradient, one_task


def _finite_differences(f, meta_params, eps=1e-6):
    vec, unravel = jax.flatten_util.ravel_pytree(meta_params)
    f = jax.jit(f)
    return np.array(
        [(f(unravel(vec.at[i].add(eps))) - f(unravel(vec.at[i].add(-eps)))) / (2 * eps) for i in range(vec.size)]
    )


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("maml", ["algorithm.inner_steps=1"]),
        ("maml", []),
        ("anil", []),
        ("metasgd", []),
        ("mamlpp", ["algorithm.multi_step_loss=false"]),
        ("mamlpp", []),  # multi-step loss and learned per-step rates
    ],
)
def test_second_order_meta_gradient_matches_finite_differences(name, overrides):
    """Every gradient-based algorithm's meta-gradient, learned step sizes included, is the true
    derivative of its meta-loss (float64, central differences)."""
    with jax.enable_x64(True):
        algorithm = algorithm_for(name, *overrides)
        episodes = episodes_for(dtype=jnp.float64)
        meta_params, meta_state = init(algorithm, jnp.float64)
        f = loss_fn(algorithm, episodes, step=100)
        grads, _, _ = meta_gradient(algorithm, meta_params, meta_state, episodes, step=100)
        fd = _finite_differences(f, meta_params)
        np.testing.assert_allclose(np.asarray(jax.flatten_util.ravel_pytree(grads)[0]), fd, rtol=1e-5, atol=1e-8)
        # And the first-order gradient is measurably different: the test can tell them apart.
        fo = algorithm.phase(100)._replace(first_order=True)
        fo_grads = jax.jit(jax.grad(loss_fn(algorithm, episodes, step=100, phase=fo)))(meta_params)
        assert np.max(np.abs(np.asarray(jax.flatten_util.ravel_pytree(fo_grads)[0]) - fd)) > 1e-4


def test_second_order_matches_explicit_hessian_formula():
    """One inner step: d L_q(theta - a g_s(theta)) / d theta = (I - a H_s(theta)) grad L_q(theta')."""
    with jax.enable_x64(True):
        algorithm = algorithm_for("maml", "algorithm.inner_steps=1", "algorithm.inner_lr=0.05")
        episodes = episodes_for(num_tasks=1, dtype=jnp.float64)
        meta_params, _ = init(algorithm, jnp.float64)
        task = jax.tree.map(lambda a: a[0], episodes)
        vec, unravel = jax.flatten_util.ravel_pytree(meta_params["model"])
        loss = algorithm.task_loss.loss
        support_loss = lambda f: loss(unravel(f), task.support_x, task.support_y)[0]  # noqa: E731
        query_loss = lambda f: loss(unravel(f), task.query_x, task.query_y)[0]  # noqa: E731
        adapted = vec - 0.05 * jax.jit(jax.grad(support_loss))(vec)
        expected = (jnp.eye(vec.size) - 0.05 * jax.jit(jax.hessian(support_loss))(vec)) @ jax.jit(jax.grad(query_loss))(
            adapted
        )
        got = jax.jit(jax.grad(loss_fn(algorithm, episodes)))(meta_params)["model"]
        np.testing.assert_allclose(jax.flatten_util.ravel_pytree(got)[0], expected, rtol=1e-10, atol=1e-12)


def test_first_order_equals_stop_gradient_reference():
    algorithm = algorithm_for("fomaml")
    episodes = episodes_for()
    meta_params, _ = init(algorithm)
    got = jax.grad(loss_fn(algorithm, episodes))(meta_params)["model"]
    loss = algorithm.task_loss.loss

    def reference(p):  # FOMAML: the query gradient at the adapted parameters, averaged over tasks
        def one(task):
            adapted = p
            for _ in range(2):
                adapted = jax.tree.map(
                    lambda w, g: w - 0.1 * g,
                    adapted,
                    jax.grad(lambda q: loss(q, task.support_x, task.support_y)[0])(adapted),
                )
            return jax.grad(lambda q: loss(q, task.query_x, task.query_y)[0])(adapted)

        return jax.tree.map(lambda g: g.mean(0), jax.vmap(one)(episodes))

    # atol: float32 rounding of a sum whose terms reach ~1.6 (the two orders of summation differ there)
    np.testing.assert_allclose(flat(got), flat(reference(meta_params["model"])), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["maml", "metasgd", "mamlpp"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_task_batching_strategies_match_a_per_task_loop(strategy, name):
    episodes = episodes_for(num_tasks=4)
    algorithm = algorithm_for(name, task_batching=strategy)
    meta_params, _ = init(algorithm)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn(algorithm, episodes)))(meta_params)

    # Reference: a Python loop over tasks, one un-batched meta-loss each, averaged.
    single = algorithm_for(name, task_batching="unroll")
    one = jax.jit(lambda mp, task: jax.value_and_grad(loss_fn(single, task))(mp))
    per_task = [one(meta_params, jax.tree.map(lambda a: a[i : i + 1], episodes)) for i in range(4)]
    np.testing.assert_allclose(float(loss), np.mean([float(v[0]) for v in per_task]), rtol=1e-5)
    ref_grads = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *[v[1] for v in per_task])
    np.testing.assert_allclose(flat(grads), flat(ref_grads), rtol=1e-4, atol=1e-6)


def test_remat_gives_the_same_meta_gradient():
    episodes = episodes_for()
    plain, remat = (algorithm_for("maml", "algorithm.inner_steps=3", remat=r) for r in (False, True))
    meta_params, _ = init(plain)
    a = jax.grad(loss_fn(plain, episodes))(meta_params)
    b = jax.grad(loss_fn(remat, episodes))(meta_params)
    np.testing.assert_allclose(flat(a), flat(b), rtol=1e-5, atol=1e-7)


def test_map_tasks_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="unknown task batching"):
        map_tasks(lambda t: t, jnp.zeros((2, 1)), "pmap-please")


def _support_loss(algorithm, task):
    return lambda p, s: algorithm.task_loss.loss(p, task.support_x, task.support_y)


def test_one_inner_step_lowers_the_support_loss():
    algorithm = algorithm_for("maml")
    episodes = episodes_for(num_tasks=5)
    meta_params, _ = init(algorithm)
    params = meta_params["model"]
    for i in range(5):
        task = jax.tree.map(lambda a: a[i], episodes)
        loss = _support_loss(algorithm, task)
        adapted, _, _ = adapt(
            loss, params, rule=sgd(lambda s: constant_rates(params, 0.01)), inner_steps=1, first_order=False
        )
        assert loss(adapted, 0)[0] < loss(params, 0)[0]


def test_adaptation_trace_reports_each_step():
    algorithm = algorithm_for("maml")
    meta_params, meta_state = init(algorithm)
    task = one_task()
    trace = algorithm.adaptation_trace(meta_params, meta_state, task, None, 3)
    assert trace.shape == (4,)
    params = meta_params["model"]
    for k in range(4):
        adapted, _, _ = adapt(
            _support_loss(algorithm, task),
            params,
            rule=sgd(lambda s: constant_rates(params, 0.1)),
            inner_steps=k,
            first_order=False,
        )
        np.testing.assert_allclose(trace[k], algorithm.task_loss.metric(adapted, task.query_x, task.query_y), rtol=1e-5)


def test_zero_inner_steps_is_plain_pretraining():
    algorithm = algorithm_for("maml", "algorithm.inner_steps=0")
    episodes = episodes_for()
    meta_params, _ = init(algorithm)
    expected = np.mean(
        [
            float(algorithm.task_loss.loss(meta_params["model"], episodes.query_x[i], episodes.query_y[i])[0])
            for i in range(3)
        ]
    )
    np.testing.assert_allclose(float(loss_fn(algorithm, episodes)(meta_params)), expected, rtol=1e-6)


def test_classification_loss_and_accuracy():
    class Identity:  # logits are the inputs
        def apply(self, variables, x, *args, **kwargs):
            return x, {}

    task_loss = make_task_loss(Network(Identity()), "classification")
    logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    labels = jnp.array([0, 1, 1])
    assert float(task_loss.metric({}, logits, labels)) == pytest.approx(2 / 3)
    expected = -np.mean(np.log(np.take_along_axis(np.asarray(jax.nn.softmax(logits)), labels[:, None], 1)))
    assert float(task_loss.loss({}, logits, labels)[0]) == pytest.approx(expected, rel=1e-6)


def test_ci95_as_in_the_papers():
    values = np.array([[1.0, 0.5], [3.0, 0.7], [2.0, 0.9], [6.0, 0.1]])
    rows = summarize({"metric": values, "loss": values})
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
    wider = SinusoidTasks(cfg.dataset).sample(None, jax.random.PRNGKey(0), "train", 3, shots=7, query_shots=2)
    assert wider.support_x.shape == (3, 7, 1) and wider.query_x.shape == (3, 2, 1)
