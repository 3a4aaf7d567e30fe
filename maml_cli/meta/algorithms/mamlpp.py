"""MAML++ (Antoniou et al. 2019, "How to train your MAML"): MAML with five changes, each its own
switch so that an ablation is one override:

- multi-step loss (``algorithm.multi_step_loss``): the query loss after every inner step, weighted;
  the weights start equal and anneal towards the last step over ``algorithm.multi_step_loss_steps``
  outer steps (the schedule of the authors' code), after which only the last step's loss is used;
- learned per-layer, per-step inner step sizes (``algorithm.learn_inner_lr``): one scalar per
  parameter tensor and inner step, starting at ``algorithm.inner_lr``;
- derivative-order annealing (``algorithm.first_order_steps``): first order for that many outer
  steps, then second order (0: second order throughout, as the authors' released configs);
- cosine annealing of the outer learning rate (``algorithm.cosine_annealing``) from
  ``train.outer_lr`` to ``algorithm.min_outer_lr`` over ``train.steps``;
- per-step batch-norm weights and running statistics: ``model.batch_norm=per_step`` (a model
  choice, so any algorithm may use it; the MAML++ presets set it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from maml_cli.meta.algorithms.base import GradientBased, Phase
from maml_cli.meta.inner import constant_rates
from maml_cli.meta.outer import make_optimizer
from maml_cli.meta.trees import partition

MIN_WEIGHT = 0.03  # the smallest weight of a non-final step, times the number of steps (authors' code)


def multi_step_loss_weights(step, inner_steps: int, anneal_steps: int) -> jax.Array:
    """Weights of the query losses after inner steps 1..K at outer step ``step``: 1/K each at
    the start; the non-final ones fall linearly to 0.03/K over ``anneal_steps`` while the last
    one rises, so they always sum to one."""
    k = inner_steps
    progress = jnp.asarray(step, jnp.float32) / anneal_steps
    non_final = jnp.maximum((1.0 - progress) / k, MIN_WEIGHT / k)
    final = jnp.minimum(1.0 / k + progress * (k - 1) / k, 1.0 - (k - 1) * MIN_WEIGHT / k)
    return jnp.concatenate([jnp.full((k - 1,), non_final), final[None]])


class MAMLPlusPlus(GradientBased):
    def init(self, params, key) -> dict:
        meta_params = {"model": params}
        if self.cfg.learn_inner_lr:
            adapted, _ = partition(params, self.network.adapts)
            steps = max(self.cfg.inner_steps, 1)
            meta_params["inner_lr"] = jax.tree.map(
                lambda _: jnp.full((steps,), self.cfg.inner_lr, jnp.float32), adapted
            )
        return meta_params

    def rates(self, meta_params, adapted0, step):
        if not self.cfg.learn_inner_lr:
            return constant_rates(adapted0, self.cfg.inner_lr)
        i = jnp.minimum(step, self.cfg.inner_steps - 1)  # evaluation may take more steps than training
        return jax.tree.map(lambda r: r[i], meta_params["inner_lr"])

    def phase(self, step: int) -> Phase:
        c = self.cfg
        return Phase(
            first_order=bool(c.first_order) or step < c.first_order_steps,
            multi_step_loss=bool(c.multi_step_loss) and step < c.multi_step_loss_steps,
        )

    def boundaries(self) -> tuple:
        c = self.cfg
        return tuple(
            sorted({s for s in (c.first_order_steps, c.multi_step_loss_steps if c.multi_step_loss else 0) if s > 0})
        )

    def loss_weights(self, step) -> jax.Array:
        return multi_step_loss_weights(step, self.cfg.inner_steps, self.cfg.multi_step_loss_steps)

    def optimizer(self):
        t, c = self.train_cfg, self.cfg
        lr = (
            optax.cosine_decay_schedule(t.outer_lr, max(t.steps, 1), alpha=c.min_outer_lr / t.outer_lr)
            if c.cosine_annealing
            else t.outer_lr
        )
        return make_optimizer(lr, t.grad_clip, t.grad_clip_value, clip_scope=t.grad_clip_scope)
