"""Models, found by ``model.name``. Each is a Flax module whose parameters are the pytree that
MAML adapts; models hold no mutable state, so ``apply`` is a pure function of (params, inputs)."""

from __future__ import annotations

from maml_cli.config import UserError
from maml_cli.data.episodes import TaskSpec
from maml_cli.models.conv4 import BATCH_NORM_MODES, CONV_IMPLS, Conv4
from maml_cli.models.mlp import ACTIVATIONS, MLP


def _mlp(cfg, spec: TaskSpec, conv_impl=None):
    if cfg.activation not in ACTIVATIONS:
        raise UserError(
            f"model.activation must be one of {', '.join(ACTIVATIONS)} (got {cfg.activation!r})"
        )
    return MLP(hidden_sizes=tuple(cfg.hidden_sizes), output_dim=spec.output_dim, activation=cfg.activation)


def _conv4(cfg, spec: TaskSpec, conv_impl: str):
    for key, allowed, value in (("batch_norm", BATCH_NORM_MODES, cfg.batch_norm),
                                ("conv_impl", ("auto", *CONV_IMPLS), cfg.conv_impl),
                                ("downsample", ("stride", "maxpool"), cfg.downsample),
                                ("head", ("mean", "flatten"), cfg.head)):
        if value not in allowed:
            raise UserError(f"model.{key} must be one of {', '.join(allowed)} (got {value!r})")
    if spec.kind != "classification":
        raise UserError("model=conv4 is for image classification datasets")
    return Conv4(output_dim=spec.output_dim, filters=cfg.filters, downsample=cfg.downsample, head=cfg.head,
                 batch_norm=cfg.batch_norm, conv_impl=conv_impl)


BUILDERS = {"mlp": _mlp, "conv4": _conv4}


def build_model(model_cfg, spec: TaskSpec, conv_impl: str | None = None):
    """``conv_impl``: how convolutions are computed, as resolved by ``maml_cli.execution``."""
    try:
        builder = BUILDERS[model_cfg.name]
    except KeyError:
        raise UserError(f"unknown model {model_cfg.name!r}; known: {', '.join(sorted(BUILDERS))}") from None
    return builder(model_cfg, spec, conv_impl)
