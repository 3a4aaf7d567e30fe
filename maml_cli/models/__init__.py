"""Models, found by ``model.name``. Each is a Flax module whose parameters are the pytree that
MAML adapts; models hold no mutable state, so ``apply`` is a pure function of (params, inputs)."""

from __future__ import annotations

from maml_cli.config import UserError
from maml_cli.data.episodes import TaskSpec
from maml_cli.models.mlp import ACTIVATIONS, MLP


def _mlp(cfg, spec: TaskSpec):
    if cfg.activation not in ACTIVATIONS:
        raise UserError(
            f"model.activation must be one of {', '.join(ACTIVATIONS)} (got {cfg.activation!r})"
        )
    return MLP(hidden_sizes=tuple(cfg.hidden_sizes), output_dim=spec.output_dim, activation=cfg.activation)


BUILDERS = {"mlp": _mlp}


def build_model(model_cfg, spec: TaskSpec):
    try:
        builder = BUILDERS[model_cfg.name]
    except KeyError:
        raise UserError(f"unknown model {model_cfg.name!r}; known: {', '.join(sorted(BUILDERS))}") from None
    return builder(model_cfg, spec)
