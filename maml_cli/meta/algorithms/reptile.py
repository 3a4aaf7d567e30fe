"""Reptile (Nichol et al. 2018, "On first-order meta-learning algorithms"): no meta-gradient
through adaptation. Each task of a meta-batch is trained for ``inner_steps`` steps of Adam
(beta1 = 0) on mini-batches of ``inner_batch_size`` of its ``train_shots`` examples per class; the
initialisation then moves towards the mean of the adapted weights,
``theta <- theta + step_size * mean(adapted - theta)``, with the step size annealed linearly from
``outer_step_size`` to ``outer_step_size_final`` over ``train.steps``.

That update is SGD on the pseudo-gradient ``theta - mean(adapted)``, so Reptile feeds it to the
same optax machinery as the others. As in the authors' code, the inner Adam moments are not reset
between tasks: they live in the meta-state, every task of a meta-batch starts from them, and their
mean over the tasks is carried on; evaluation starts from them too and does not change them.
Every parameter is adapted, batch norm included (its scale and offset would otherwise never move).
``algorithm.transductive`` chooses how the query set is scored (the paper reports both).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from maml_cli.meta.algorithms.base import Algorithm
from maml_cli.meta.batching import map_tasks
from maml_cli.meta.inner import adapt, optax_rule
from maml_cli.meta.outer import make_optimizer


def minibatch_loss(task_loss, x, y, batch_size: int, key):
    """``loss(params, step)`` on mini-batch ``step``: consecutive slices of one shuffle of the
    task's examples, wrapping around (so a batch larger than the task repeats examples)."""
    order = jax.random.permutation(key, x.shape[0])

    def loss(params, step):
        idx = order[(step * batch_size + jnp.arange(batch_size)) % x.shape[0]]
        return task_loss.loss(params, x[idx], y[idx], step=step)

    return loss


class Reptile(Algorithm):
    @property
    def train_shots(self):
        return self.cfg.train_shots

    def _inner_optimizer(self):
        return optax.chain(optax.scale_by_adam(b1=0.0, b2=0.999, eps=1e-8), optax.scale(-self.cfg.inner_lr))

    def init_state(self, meta_params, batch_stats) -> dict:
        return {
            **super().init_state(meta_params, batch_stats),
            "inner_opt": self._inner_optimizer().init(meta_params["model"]),
        }

    def phase(self, step: int):
        return ()  # one program throughout

    def optimizer(self):
        c, t = self.cfg, self.train_cfg
        step_size = optax.linear_schedule(c.outer_step_size, c.outer_step_size_final, max(t.steps, 1))
        return make_optimizer(step_size, t.grad_clip, t.grad_clip_value, kind="sgd", clip_scope=t.grad_clip_scope)

    def _adapt(self, params, inner_state, x, y, key, steps: int, batch_size: int, observe=None):
        loss = minibatch_loss(self.task_loss, x, y, batch_size, key)
        return adapt(
            loss,
            params,
            rule=optax_rule(self._inner_optimizer()),
            inner_steps=steps,
            first_order=True,
            observe=observe,
            rule_state=inner_state,
        )

    def meta_gradient(self, meta_params, meta_state, episodes, key, step, phase):
        params = meta_params["model"]

        def one_task(task):
            episode, task_key = task
            adapted, inner_state, _ = self._adapt(
                params,
                meta_state["inner_opt"],
                episode.support_x,
                episode.support_y,
                task_key,
                self.cfg.inner_steps,
                self.cfg.inner_batch_size,
            )
            loss, (metric, _) = self.task_loss.loss_and_metric(adapted, episode.query_x, episode.query_y)
            return adapted, inner_state, loss, metric

        num_tasks = episodes.support_x.shape[0]
        adapted, inner_state, losses, metrics = map_tasks(
            one_task, (episodes, jax.random.split(key, num_tasks)), self.execution.task_batching
        )
        mean = lambda tree: jax.tree.map(lambda a: jnp.mean(a, 0).astype(a.dtype), tree)  # noqa: E731
        pseudo_grad = jax.tree.map(lambda p, a: p - a, params, mean(adapted))
        grads = {"model": pseudo_grad}  # Reptile learns nothing besides the initialisation
        meta_state = {**meta_state, "inner_opt": mean(inner_state)}
        return grads, meta_state, {"query_loss": jnp.mean(losses), "query_metric": jnp.mean(metrics)}

    def query_outputs(self, params, episode):
        """The network's outputs on the query set. Transductive (as the authors' ``--transductive``):
        the query images in one batch, so batch norm uses their statistics. Otherwise each query
        image is scored in a batch with the support set and normalised with their statistics, as
        their non-transductive evaluation does; no query image sees another."""
        if self.cfg.transductive:
            return self.network.apply(params, episode.query_x)[0]

        def one(x):
            batch = jnp.concatenate([episode.support_x, x[None]])
            return self.network.apply(params, batch)[0][-1]

        return jax.vmap(one)(episode.query_x)

    def adaptation_outputs(self, meta_params, meta_state, episode, key, inner_steps: int):
        def predict(p, s):
            return self.query_outputs(p, episode)

        _, _, (_, after) = self._adapt(
            meta_params["model"],
            meta_state["inner_opt"],
            episode.support_x,
            episode.support_y,
            key,
            inner_steps,
            self.cfg.eval_inner_batch_size,
            observe=predict,
        )
        before = predict(meta_params["model"], 0)[None]
        return before if after is None else jnp.concatenate([before, after])

    def adapt_to_task(self, meta_params, meta_state, episode, key, inner_steps: int):
        adapted, _, _ = self._adapt(
            meta_params["model"],
            meta_state["inner_opt"],
            episode.support_x,
            episode.support_y,
            key,
            inner_steps,
            self.cfg.eval_inner_batch_size,
        )
        return adapted
