"""What an algorithm supplies to the shared outer step, and the gradient-based kin of MAML.

An algorithm is a handful of pure functions over the shared inner loop (``meta/inner.py``), task
batching (``meta/batching.py``) and the jitted outer step (``meta/outer.py``):

- ``init(params, key) -> meta_params``: the pytree the outer optimizer owns, ``{"model": the
  initialisation, ...}`` plus any learned inner step sizes;
- ``init_state(meta_params, batch_stats) -> meta_state``: what is carried between outer steps
  without being optimised (per-step batch-norm running statistics, Reptile's inner Adam moments);
- ``meta_gradient(meta_params, meta_state, episodes, key, step, phase) -> (grads, meta_state,
  metrics)``: a true gradient for MAML's kin, Reptile's pseudo-gradient for Reptile, fed to the same
  optax chain;
- ``adaptation_outputs(meta_params, meta_state, episode, key, inner_steps)``: the network's query
  outputs (logits or predictions) before and after each inner step on one task, from which
  evaluation and validation compute the query loss and metric of each step (and an ensemble of
  checkpoints averages them); ``adaptation_trace`` is the metric alone;
- ``phase(step)``: the compile-time switches of the step at outer step ``step`` (first or second
  order, multi-step loss on or off) and ``boundaries()``, the steps where they change: the loop
  compiles one program per phase rather than paying for both branches at every step.

Every function is pure, so checkpoints, resume, ``maml-eval``, validation and the benchmark work
for each algorithm unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from maml_cli.meta.batching import map_tasks
from maml_cli.meta.inner import adapt, constant_rates, sgd
from maml_cli.meta.outer import make_optimizer
from maml_cli.meta.trees import merge, partition


class Phase(NamedTuple):
    """The static switches of an outer step (each value compiles its own program)."""

    first_order: bool
    multi_step_loss: bool = False


class Algorithm:
    """Defaults shared by every algorithm; subclasses override what makes them what they are."""

    train_shots: int | None = None  # support examples per class of a meta-training task (None: the dataset's)

    def __init__(self, cfg, task_loss, execution, train_cfg):
        self.cfg = cfg  # the algorithm.* config
        self.task_loss = task_loss
        self.network = task_loss.network
        self.execution = execution
        self.train_cfg = train_cfg

    def init(self, params, key) -> dict:
        return {"model": params}

    def init_state(self, meta_params, batch_stats) -> dict:
        return {"batch_stats": batch_stats} if batch_stats else {}

    def phase(self, step: int) -> Phase:
        return Phase(first_order=bool(self.cfg.get("first_order", False)))

    def boundaries(self) -> tuple:
        return ()

    def optimizer(self):
        t = self.train_cfg
        return make_optimizer(t.outer_lr, t.grad_clip, t.grad_clip_value, clip_scope=t.grad_clip_scope)

    def eval_forward(self, meta_state) -> dict:
        """How the network normalises at evaluation: the batch at hand, or the running statistics."""
        if self.network.eval_with_running_stats:
            return {"batch_stats": meta_state["batch_stats"], "use_running": True}
        return {}

    def meta_gradient(self, meta_params, meta_state, episodes, key, step, phase: Phase):
        raise NotImplementedError

    def adaptation_outputs(self, meta_params, meta_state, episode, key, inner_steps: int):
        """[inner_steps + 1, queries, outputs]: the query outputs before and after each inner step."""
        raise NotImplementedError

    def adaptation_trace(self, meta_params, meta_state, episode, key, inner_steps: int):
        """[inner_steps + 1]: the query metric before and after each inner step."""
        outputs = self.adaptation_outputs(meta_params, meta_state, episode, key, inner_steps)
        return jax.vmap(self.task_loss.metric_of_outputs, in_axes=(0, None))(outputs, episode.query_y)

    def adapt_to_task(self, meta_params, meta_state, episode, key, inner_steps: int):
        """The model's parameters after adapting to ``episode``'s support set as at evaluation."""
        raise NotImplementedError


class GradientBased(Algorithm):
    """MAML and its kin: the meta-gradient is the gradient of the query loss after adaptation with
    SGD on the support set. Subclasses choose the step sizes (``rates``), which parameters the
    inner loop sees (``task_functions``) and the query-loss weights (``loss_weights``)."""

    def task_functions(self, model_params, episode, forward: dict):
        """``(adapted0, support, query, predict)``: the parameters the inner loop adapts, and
        ``support(p, step) -> (loss, step_stats)``, ``query(p, step) -> (loss, (metric, step_stats))``,
        ``predict(p, step) -> query outputs`` where ``p`` is what the inner loop adapts (the rest of
        the model held fixed)."""
        adapted0, fixed = partition(model_params, self.network.adapts)
        loss = self.task_loss

        def support(p, s):
            return loss.loss(merge(p, fixed), episode.support_x, episode.support_y, step=s, **forward)

        def query(p, s):
            return loss.loss_and_metric(merge(p, fixed), episode.query_x, episode.query_y, step=s, **forward)

        def predict(p, s):
            return self.network.apply(merge(p, fixed), episode.query_x, step=s, **forward)[0]

        return adapted0, support, query, predict

    def rates(self, meta_params, adapted0, step):
        """Inner step sizes at inner step ``step``, a pytree like ``adapted0``."""
        return constant_rates(adapted0, self.cfg.inner_lr)

    def loss_weights(self, step) -> jax.Array:
        """Weights of the query losses after inner steps 1..K (multi-step loss phases only)."""
        raise NotImplementedError

    def _rule(self, meta_params, adapted0):
        return sgd(lambda s: self.rates(meta_params, adapted0, s))

    def task_query_loss(self, meta_params, episode, step, phase: Phase):
        """One task's (query loss, (query metric, batch statistics per inner step))."""
        k = self.cfg.inner_steps
        adapted0, support, query, _ = self.task_functions(meta_params["model"], episode, {})
        adapted, _, (support_stats, observed) = adapt(
            support,
            adapted0,
            rule=self._rule(meta_params, adapted0),
            inner_steps=k,
            first_order=phase.first_order,
            remat=self.execution.remat,
            observe=query if phase.multi_step_loss else None,
        )
        if phase.multi_step_loss:
            losses, (metrics, query_stats) = observed
            loss, metric = jnp.sum(self.loss_weights(step) * losses), metrics[-1]
        else:
            loss, (metric, last) = query(adapted, max(k - 1, 0))
            query_stats = (
                None if support_stats is None else jax.tree.map(lambda s, q: s.at[-1].set(q), support_stats, last)
            )
        # Running statistics (per-step batch norm) at step s average every forward pass that
        # normalised with step s's weights: the support set before update s, the query after it.
        stats = {} if support_stats is None else jax.tree.map(lambda s, q: (s + q) / 2, support_stats, query_stats)
        return loss, (metric, stats)

    def meta_loss(self, meta_params, episodes, step, phase: Phase):
        """(mean query loss over the tasks, (mean query metric, mean batch statistics per inner step))."""
        losses, (metrics, stats) = map_tasks(
            partial(self.task_query_loss, meta_params, step=step, phase=phase), episodes, self.execution.task_batching
        )
        return jnp.mean(losses), (jnp.mean(metrics), jax.tree.map(lambda a: a.mean(0), stats))

    def meta_gradient(self, meta_params, meta_state, episodes, key, step, phase: Phase):
        """The gradient of ``meta_loss``, taken task by task inside the map and averaged: the same
        number, but under ``map`` the backward pass of one task runs right after its forward pass,
        so one task's activations are held at a time. Differentiating through the map instead
        stacks every task's activations first (4 MiniImageNet tasks: 271 MB for one of them)."""
        del key  # deterministic given the tasks

        def task_gradient(episode):
            return jax.value_and_grad(self.task_query_loss, has_aux=True)(meta_params, episode, step, phase)

        (losses, (metrics, stats)), grads = map_tasks(task_gradient, episodes, self.execution.task_batching)
        loss, metric, grads = jnp.mean(losses), jnp.mean(metrics), jax.tree.map(lambda g: g.mean(0), grads)
        if self.network.running_stats:
            m = self.network.running_stats_momentum
            stats = jax.tree.map(lambda a: a.mean(0), stats)
            meta_state = {
                **meta_state,
                "batch_stats": jax.tree.map(lambda old, new: (1 - m) * old + m * new, meta_state["batch_stats"], stats),
            }
        return grads, meta_state, {"query_loss": loss, "query_metric": metric}

    def _adapt_as_evaluated(self, meta_params, meta_state, episode, inner_steps: int, trace: bool):
        """(adapted parameters, query outputs before and after each step or None), as at evaluation."""
        adapted0, support, _, predict = self.task_functions(
            meta_params["model"], episode, self.eval_forward(meta_state)
        )
        adapted, _, (_, after) = adapt(
            support,
            adapted0,
            rule=self._rule(meta_params, adapted0),
            inner_steps=inner_steps,
            first_order=True,
            observe=predict if trace else None,
        )
        if not trace:
            return merge(meta_params["model"], adapted), None
        before = predict(adapted0, 0)[None]
        return merge(meta_params["model"], adapted), before if after is None else jnp.concatenate([before, after])

    def adapt_to_task(self, meta_params, meta_state, episode, key, inner_steps: int):
        return self._adapt_as_evaluated(meta_params, meta_state, episode, inner_steps, trace=False)[0]

    def adaptation_outputs(self, meta_params, meta_state, episode, key, inner_steps: int):
        return self._adapt_as_evaluated(meta_params, meta_state, episode, inner_steps, trace=True)[1]
