"""The property that defines each member of the family, checked against an explicit reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict

from maml_cli.backend.plan import Execution
from maml_cli.data.episodes import TaskSpec, sample_classification_episodes
from maml_cli.meta.algorithms import build_algorithm
from maml_cli.meta.algorithms.mamlpp import multi_step_loss_weights
from maml_cli.meta.losses import make_task_loss
from maml_cli.models import build_model
from tests.conftest import make_cfg
from tests.meta_problem import algorithm_for, episodes_for, flat, init, loss_fn, meta_gradient, one_task


def _changed(before: dict, after: dict) -> set:
    a, b = flatten_dict(before), flatten_dict(after)
    return {path for path in a if not np.allclose(a[path], b[path])}


# --- ANIL ------------------------------------------------------------------------------------------


def test_anil_inner_loop_changes_only_the_head():
    algorithm = algorithm_for("anil")
    meta_params, meta_state = init(algorithm)
    task = one_task()
    adapted = algorithm.adapt_to_task(meta_params, meta_state, task, None, 3)
    changed = _changed(meta_params["model"], adapted)
    assert changed == {("head", "kernel"), ("head", "bias")}
    maml = algorithm_for("maml")  # whereas MAML adapts the body too
    assert len(_changed(meta_params["model"], maml.adapt_to_task(meta_params, meta_state, task, None, 3))) == 4


def test_anil_meta_gradient_equals_maml_with_a_frozen_body():
    """ANIL computes the body's features once; the reference adapts the head through the full
    network. Same meta-gradient, and the body still gets one (second order, through the head's
    inner gradients and the query features)."""
    with jax.enable_x64(True):
        algorithm = algorithm_for("anil")
        episodes = episodes_for(dtype=jnp.float64)
        meta_params, _ = init(algorithm, jnp.float64)
        loss = algorithm.task_loss.loss

        def reference(params):
            def one(task):
                def with_head(head, x, y):
                    return loss({**params, "head": head}, x, y)[0]

                head = params["head"]
                for _ in range(2):
                    g = jax.grad(with_head)(head, task.support_x, task.support_y)
                    head = jax.tree.map(lambda w, d: w - 0.1 * d, head, g)
                return with_head(head, task.query_x, task.query_y)

            return jnp.mean(jax.vmap(one)(episodes))

        got = jax.jit(jax.grad(loss_fn(algorithm, episodes)))(meta_params)["model"]
        want = jax.jit(jax.grad(reference))(meta_params["model"])
        np.testing.assert_allclose(flat(got), flat(want), rtol=1e-9, atol=1e-12)
        assert float(jnp.abs(got["hidden_0"]["kernel"]).max()) > 1e-3


# --- Meta-SGD --------------------------------------------------------------------------------------


def test_metasgd_rates_are_shaped_like_the_parameters_and_start_as_configured():
    algorithm = algorithm_for("metasgd", "algorithm.lr_init_range=[0.005,0.1]")
    meta_params, _ = init(algorithm)
    assert jax.tree.map(jnp.shape, meta_params["inner_lr"]) == jax.tree.map(jnp.shape, meta_params["model"])
    rates = flat(meta_params["inner_lr"])
    assert float(rates.min()) >= 0.005 and float(rates.max()) <= 0.1 and float(rates.std()) > 0.01
    constant, _ = init(algorithm_for("metasgd"))
    assert set(np.unique(flat(constant["inner_lr"]))) == {np.float32(0.1)}


def test_metasgd_one_step_is_theta_minus_alpha_times_grad_elementwise():
    algorithm = algorithm_for("metasgd", "algorithm.lr_init_range=[0.005,0.1]")
    meta_params, meta_state = init(algorithm)
    task = one_task()
    adapted = algorithm.adapt_to_task(meta_params, meta_state, task, None, 1)
    grad = jax.grad(lambda p: algorithm.task_loss.loss(p, task.support_x, task.support_y)[0])(meta_params["model"])
    expected = jax.tree.map(lambda w, a, g: w - a * g, meta_params["model"], meta_params["inner_lr"], grad)
    np.testing.assert_allclose(flat(adapted), flat(expected), rtol=1e-6, atol=1e-7)


def test_metasgd_rates_receive_meta_gradients():
    algorithm = algorithm_for("metasgd", "algorithm.inner_steps=1")
    episodes = episodes_for()
    meta_params, meta_state = init(algorithm)
    grads, _, _ = meta_gradient(algorithm, meta_params, meta_state, episodes)
    rate_grads = flat(grads["inner_lr"])
    assert rate_grads.shape == flat(meta_params["model"]).shape
    assert float(jnp.mean(jnp.abs(rate_grads) > 0)) > 0.9  # (nearly) every entry gets its own gradient


# --- MAML++ ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
def test_mamlpp_multi_step_weights_sum_to_one_and_anneal_to_the_last_step(inner_steps):
    k, anneal = inner_steps, 1000
    weights = [np.asarray(multi_step_loss_weights(s, k, anneal)) for s in (0, 250, 500, 999, 1000, 5000)]
    for w in weights:
        assert w.shape == (k,) and w.sum() == pytest.approx(1.0, abs=1e-6) and (w > 0).all()
    np.testing.assert_allclose(weights[0], np.full(k, 1.0 / k), rtol=1e-6)
    if k > 1:
        finals = [w[-1] for w in weights]
        assert finals == sorted(finals) and finals[0] < finals[-1]  # the last step gains weight
        np.testing.assert_allclose(weights[-1][:-1], 0.03 / k, rtol=1e-5)  # the authors' floor
    phases = algorithm_for("mamlpp", "algorithm.multi_step_loss_steps=1000")
    assert phases.phase(999).multi_step_loss and not phases.phase(1000).multi_step_loss  # then the last step only


def test_mamlpp_derivative_order_annealing_switches_at_the_configured_step():
    algorithm = algorithm_for(
        "mamlpp", "algorithm.first_order_steps=5", "algorithm.multi_step_loss=false", "algorithm.learn_inner_lr=false"
    )
    assert [algorithm.phase(s).first_order for s in (0, 4, 5, 100)] == [True, True, False, False]
    assert 5 in algorithm.boundaries()
    episodes = episodes_for()
    meta_params, meta_state = init(algorithm)

    def grads_at(step):
        return flat(meta_gradient(algorithm, meta_params, meta_state, episodes, step=step)[0]["model"])

    fomaml, maml = algorithm_for("fomaml"), algorithm_for("maml")  # same inner loop, fixed step sizes
    # meta_gradient averages per-task gradients, the reference differentiates the average: the same
    # number up to float reassociation (1.3e-7 measured on an entry of 6.5e-4).
    np.testing.assert_allclose(
        grads_at(4), flat(jax.grad(loss_fn(fomaml, episodes))(meta_params)["model"]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        grads_at(5), flat(jax.grad(loss_fn(maml, episodes))(meta_params)["model"]), rtol=1e-5, atol=1e-6
    )


def test_mamlpp_learned_rates_are_per_tensor_and_per_step():
    algorithm = algorithm_for("mamlpp", "algorithm.inner_steps=3")
    meta_params, meta_state = init(algorithm)
    assert {leaf.shape for leaf in jax.tree.leaves(meta_params["inner_lr"])} == {(3,)}
    grads, _, _ = meta_gradient(algorithm, meta_params, meta_state, episodes_for())
    assert all(float(jnp.abs(g).min()) > 0 for g in jax.tree.leaves(grads["inner_lr"]))


def _conv_mamlpp(*overrides):
    cfg = make_cfg(
        "experiment=omniglot_tiny",
        "algorithm=mamlpp",
        "model.filters=4",
        "algorithm.inner_steps=1",
        "algorithm.multi_step_loss=false",
        "model.bn_momentum=1.0",
        *overrides,
    )
    network = build_model(cfg.model, TaskSpec((8, 8, 1), 3, "classification"), "lax", inner_steps=1)
    algorithm = build_algorithm(
        cfg.algorithm, make_task_loss(network, "classification"), Execution("vmap", False, "lax"), cfg.train
    )
    images = (jax.random.uniform(jax.random.PRNGKey(0), (10, 6, 8, 8, 1)) * 255).astype(jnp.uint8)
    episodes = sample_classification_episodes(
        images, jnp.arange(10), jax.random.PRNGKey(1), 2, ways=3, shots=2, query_shots=2
    )
    return algorithm, episodes


def test_per_step_batch_norm_accumulates_the_statistics_of_training():
    """With momentum 1 the running statistics after one step are exactly that step's: for step 0,
    the mean over tasks of the support set's statistics before the update and the query set's after."""
    algorithm, episodes = _conv_mamlpp()
    meta_params, meta_state = init(algorithm, input_shape=(8, 8, 1))
    params, net, loss = meta_params["model"], algorithm.network, algorithm.task_loss
    _, new_state, _ = meta_gradient(algorithm, meta_params, meta_state, episodes)

    def expected_for(task):
        grads = jax.grad(lambda p: loss.loss(p, task.support_x, task.support_y, step=0)[0])(params)
        adapted = {
            k: v if k.startswith("norms_") else jax.tree.map(lambda w, g: w - 0.4 * g, v, grads[k])
            for k, v in params.items()
        }  # batch norm is not adapted (adapt_batch_norm=false)
        support = net.apply(params, task.support_x, step=0)[1]
        query = net.apply(adapted, task.query_x, step=0)[1]
        return jax.tree.map(lambda s, q: (s + q) / 2, support, query)

    expected = jax.tree.map(lambda a: a.mean(0), jax.jit(jax.vmap(expected_for))(episodes))
    for layer in ("norms_0", "norms_3"):
        for stat in ("mean", "var"):
            np.testing.assert_allclose(
                new_state["batch_stats"][layer][stat][0], expected[layer][stat], rtol=1e-4, atol=1e-6
            )
    assert not np.allclose(new_state["batch_stats"]["norms_0"]["var"], meta_state["batch_stats"]["norms_0"]["var"])


@pytest.mark.parametrize("eval_stats", ["running", "batch"])
def test_per_step_batch_norm_evaluates_with_the_running_statistics(eval_stats):
    algorithm, episodes = _conv_mamlpp(f"model.bn_eval_stats={eval_stats}")
    meta_params, meta_state = init(algorithm, input_shape=(8, 8, 1))
    _, trained_state, _ = meta_gradient(algorithm, meta_params, meta_state, episodes)
    task = jax.tree.map(lambda a: a[0], episodes)
    trace = jax.jit(lambda s: algorithm.adaptation_trace(meta_params, s, task, None, 2))
    traces = [trace(s) for s in (meta_state, trained_state)]
    # Running statistics: the result depends on them, and a query image's prediction does not
    # depend on the other images it is scored with. Batch statistics: the reverse.
    predict = jax.jit(
        lambda state, x: algorithm.network.apply(meta_params["model"], x, **algorithm.eval_forward(state))[0]
    )
    alone = predict(trained_state, task.query_x[:1])
    together = predict(trained_state, task.query_x)[:1]
    if eval_stats == "running":
        assert not np.allclose(traces[0], traces[1]) or not np.allclose(
            predict(meta_state, task.query_x), predict(trained_state, task.query_x)
        )
        np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(traces[0], traces[1])
        assert not np.allclose(alone, together, atol=1e-4)


# --- Reptile ---------------------------------------------------------------------------------------


def test_reptile_outer_update_is_step_size_times_mean_of_adapted_minus_initial():
    algorithm = algorithm_for(
        "reptile",
        "algorithm.inner_steps=3",
        "algorithm.inner_batch_size=3",
        "algorithm.eval_inner_batch_size=3",
        "algorithm.outer_step_size=0.5",
        "train.steps=4",
    )
    episodes = episodes_for(num_tasks=4)
    meta_params, meta_state = init(algorithm)
    key = jax.random.PRNGKey(3)
    grads, new_state, _ = meta_gradient(algorithm, meta_params, meta_state, episodes, key)
    keys = jax.random.split(key, 4)
    adapt = jax.jit(lambda task, k: algorithm.adapt_to_task(meta_params, meta_state, task, k, 3))
    adapted = [adapt(jax.tree.map(lambda a: a[i], episodes), keys[i]) for i in range(4)]
    step = jax.tree.map(lambda p, *a: jnp.mean(jnp.stack(a), 0) - p, meta_params["model"], *adapted)
    assert float(jnp.abs(flat(step)).max()) > 1e-4  # the tasks did move the weights
    optimizer = algorithm.optimizer()
    opt_state = optimizer.init(meta_params)
    for _t, fraction in enumerate((1.0, 0.75, 0.5, 0.25)):  # annealed linearly to 0 over train.steps
        updates, opt_state = optimizer.update(grads, opt_state, meta_params)
        np.testing.assert_allclose(flat(updates["model"]), 0.5 * fraction * flat(step), rtol=1e-5, atol=1e-8)
    # The inner Adam moments are carried on: every task took 3 steps from the same state.
    assert int(new_state["inner_opt"][0].count) == int(meta_state["inner_opt"][0].count) + 3


def test_reptile_inner_loop_is_adam_on_minibatches():
    algorithm = algorithm_for(
        "reptile", "algorithm.inner_steps=2", "algorithm.eval_inner_batch_size=2", "algorithm.inner_lr=0.01"
    )
    episodes = episodes_for(num_tasks=1, shots=4)
    meta_params, meta_state = init(algorithm)
    task = jax.tree.map(lambda a: a[0], episodes)
    key = jax.random.PRNGKey(0)
    got = algorithm.adapt_to_task(meta_params, meta_state, task, key, 2)
    order = jax.random.permutation(key, 4)
    params, adam = meta_params["model"], optax.chain(optax.scale_by_adam(b1=0.0), optax.scale(-0.01))
    state = adam.init(params)
    for s in range(2):
        idx = order[2 * s : 2 * s + 2]
        g = jax.grad(lambda p: algorithm.task_loss.loss(p, task.support_x[idx], task.support_y[idx])[0])(params)
        updates, state = adam.update(g, state)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(flat(got), flat(params), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("transductive", [True, False])
def test_reptile_scores_queries_together_or_each_with_the_support_set(transductive):
    """The paper's two evaluations: transductive, the query images normalised together; otherwise
    each query image in one batch with the support set (their _test_predictions)."""
    cfg = make_cfg(
        "experiment=omniglot_tiny",
        "algorithm=reptile",
        "model.filters=4",
        f"algorithm.transductive={str(transductive).lower()}",
    )
    network = build_model(cfg.model, TaskSpec((8, 8, 1), 3, "classification"), "lax")
    algorithm = build_algorithm(
        cfg.algorithm, make_task_loss(network, "classification"), Execution("vmap", False, "lax"), cfg.train
    )
    images = (jax.random.uniform(jax.random.PRNGKey(0), (10, 6, 8, 8, 1)) * 255).astype(jnp.uint8)
    task = jax.tree.map(
        lambda a: a[0],
        sample_classification_episodes(
            images, jnp.arange(10), jax.random.PRNGKey(1), 1, ways=3, shots=2, query_shots=2
        ),
    )
    meta_params, meta_state = init(algorithm, input_shape=(8, 8, 1))
    params = meta_params["model"]
    got = algorithm.adaptation_outputs(meta_params, meta_state, task, jax.random.PRNGKey(2), 0)[0]
    together = network.apply(params, task.query_x)[0]
    each = jnp.stack(
        [
            network.apply(params, jnp.concatenate([task.support_x, task.query_x[i : i + 1]]))[0][-1]
            for i in range(task.query_x.shape[0])
        ]
    )
    np.testing.assert_allclose(got, together if transductive else each, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together, each, atol=1e-3)  # the two differ: batch norm sees other images
