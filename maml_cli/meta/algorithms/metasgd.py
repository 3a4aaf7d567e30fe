"""Meta-SGD (Li et al. 2017): besides the initialisation, learn a step size for every parameter
entry (same shape as the parameters, free in sign), so the inner update is
``theta - alpha * grad`` elementwise; both are meta-learned by the outer gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from maml_cli.meta.algorithms.base import GradientBased
from maml_cli.meta.trees import partition


class MetaSGD(GradientBased):
    def init(self, params, key) -> dict:
        adapted, _ = partition(params, self.network.adapts)
        low_high = self.cfg.lr_init_range
        if low_high is None:  # every rate starts at algorithm.inner_lr
            rates = jax.tree.map(lambda p: jnp.full(p.shape, self.cfg.inner_lr, p.dtype), adapted)
        else:  # uniform in [low, high], as the paper's regression experiments
            leaves, treedef = jax.tree.flatten(adapted)
            keys = jax.random.split(key, len(leaves))
            rates = jax.tree.unflatten(
                treedef,
                [jax.random.uniform(k, p.shape, p.dtype, low_high[0], low_high[1]) for k, p in zip(keys, leaves)],
            )
        return {"model": params, "inner_lr": rates}

    def rates(self, meta_params, adapted0, step):
        return meta_params["inner_lr"]
