"""Adapting a trained run to one new task: the ``Learner`` that maml-adapt predicts with and that
``Run.adapt`` returns. It adapts exactly as evaluation does (the algorithm's ``adapt_to_task``),
so its predictions on a task are those maml-eval scores on the same task. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from maml_cli.errors import UserError


@dataclass
class Learner:
    """A model adapted to one task. ``predict(x)`` gives its outputs on ``x`` [n, *input_shape]:
    logits [n, ways] (classification; classes the task lacks get -1e9) or values [n, outputs]."""

    params: Any  # the adapted parameters (a pytree)
    meta_params: Any  # the run's meta-learned initialisation, before adaptation
    network: Any
    forward: dict  # how the network normalises (``Algorithm.eval_forward``)
    kind: str  # regression | classification
    checkpoint_step: int
    inner_steps: int
    bias: np.ndarray  # added to the outputs: -1e9 on the classes the task does not use

    def predict(self, x, adapted: bool = True) -> np.ndarray:
        """The outputs on ``x``, all of it one batch (transductive batch norm normalises over it)."""
        params = self.params if adapted else self.meta_params
        outputs = self.network.apply(params, np.asarray(x, np.float32), **self.forward)[0]
        return np.asarray(outputs) + self.bias


def restore_one(exp, run_dir, checkpoint):
    """The one checkpoint ``checkpoint=`` names (a step, latest, or best; not an ensemble), placed on
    ``exp``'s devices: what maml-adapt and ``Run.adapt`` adapt."""
    from maml_cli.runs import checkpoint_steps, parse_checkpoint, restore_state

    kind, count = parse_checkpoint(checkpoint)
    if kind == "best" and count > 1:
        raise UserError(f"adapting uses one checkpoint: use checkpoint=best, not best:{count}")
    (step,), _ = checkpoint_steps(run_dir, exp.cfg, exp.spec.metric, checkpoint)
    return restore_state(exp, run_dir, step)


def adapt(
    exp, state, support_x, support_y, inner_steps: int, seed: int = 0, used_classes: int | None = None
) -> Learner:
    """``state`` (a run's restored checkpoint) adapted to the support set with ``inner_steps`` steps.
    ``used_classes``: a classification task with fewer classes than the run's ways; the other
    outputs are masked out of the loss and the predictions."""
    import jax
    import jax.numpy as jnp

    from maml_cli.data.episodes import Episodes
    from maml_cli.meta.algorithms import build_algorithm
    from maml_cli.meta.losses import masked_task_loss

    spec, cfg = exp.spec, exp.cfg
    support_x = np.asarray(support_x, np.float32)
    support_y = np.asarray(support_y, np.int32 if spec.kind == "classification" else np.float32)
    if inner_steps < 0:
        raise UserError(f"inner_steps must be >= 0 (got {inner_steps})")
    if support_x.shape[1:] != tuple(spec.input_shape):
        raise UserError(
            f"the support examples have shape {support_x.shape[1:]}, but the run's model takes "
            f"{tuple(spec.input_shape)}"
        )
    if len(support_x) != len(support_y):
        raise UserError(f"{len(support_x)} support examples but {len(support_y)} labels")
    algorithm, bias = exp.algorithm, np.zeros(spec.output_dim, np.float32)
    if spec.kind == "classification":
        used = spec.output_dim if used_classes is None else used_classes
        if support_y.min() < 0 or support_y.max() >= used:
            raise UserError(f"support labels must be 0..{used - 1} (got {support_y.min()}..{support_y.max()})")
        if used < spec.output_dim:
            algorithm = build_algorithm(
                cfg.algorithm, masked_task_loss(exp.network, used, spec.output_dim), exp.execution, cfg.train
            )
            bias[used:] = -1e9
    elif support_y.ndim == 1:
        support_y = support_y[:, None]
    episode = Episodes(*(jnp.asarray(a) for a in (support_x, support_y, support_x, support_y)))
    run_adapt = jax.jit(algorithm.adapt_to_task, static_argnums=4)
    params = run_adapt(state.meta_params, state.meta_state, episode, jax.random.PRNGKey(seed), inner_steps)
    return Learner(
        params=params,
        meta_params=state.meta_params["model"],
        network=exp.network,
        forward=algorithm.eval_forward(state.meta_state),
        kind=spec.kind,
        checkpoint_step=int(state.step),
        inner_steps=inner_steps,
        bias=bias,
    )
