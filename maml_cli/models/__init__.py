"""Models, found by ``model.name``, each wrapped in a ``Network``: the pure functions of explicit
parameters that the meta-learning math calls. Running statistics (per-step batch norm) are passed
in and reported out, never held, so every function here can be differentiated and mapped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from maml_cli import plugins
from maml_cli.data.episodes import TaskSpec
from maml_cli.errors import UserError, one_of
from maml_cli.models.conv4 import ACTIVATIONS as CONV_ACTIVATIONS
from maml_cli.models.conv4 import BATCH_NORM_MODES, Conv4
from maml_cli.models.convolution import CONV_IMPLS
from maml_cli.models.custom import build_custom
from maml_cli.models.mlp import ACTIVATIONS, MLP

HEAD = "head"  # the name of every model's last linear layer in its parameters
NORM_PREFIX = "norms_"  # conv4's batch-norm layers


@dataclass(frozen=True)
class Network:
    module: nn.Module
    adapt_batch_norm: bool = True  # the inner loop adapts batch-norm scale/offset
    running_stats: bool = False  # the model keeps running statistics (per_step batch norm)
    eval_with_running_stats: bool = False  # evaluation normalises with them instead of the batch
    running_stats_momentum: float = 0.1  # weight of each outer step's batch statistics in the running averages
    plain: bool = False  # the module's methods take x alone (a user's module: models/custom.py)

    def init(self, rng, input_shape: tuple) -> tuple[Any, Any]:
        """(params, batch_stats); batch_stats is {} unless the model keeps running statistics."""
        variables = self.module.init(rng, jnp.zeros((1, *input_shape)))
        return variables["params"], dict(variables.get("batch_stats", {}))

    def _apply(self, method, params, x, step, batch_stats, use_running):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        args = (x,) if self.plain else (x, step, use_running)
        out, state = self.module.apply(variables, *args, method=method, mutable=["step_stats"])
        return out, dict(state.get("step_stats", {}))

    def apply(self, params, x, *, step=0, batch_stats=None, use_running=False):
        """(outputs, step_stats): step_stats holds the batch statistics a per-step batch norm
        normalised with ({} otherwise), for the running averages."""
        return self._apply(None, params, x, step, batch_stats, use_running)

    def features(self, params, x, *, step=0, batch_stats=None, use_running=False):
        """Like ``apply`` but stops before the head."""
        return self._apply("features", params, x, step, batch_stats, use_running)

    def head(self, head_params, features):
        return self.module.apply({"params": {HEAD: head_params}}, features, method=lambda m, f: m.head(f))

    def adapts(self, path: tuple) -> bool:
        """Whether the inner loop adapts the parameter at ``path`` (a tuple of names)."""
        return self.adapt_batch_norm or not path[0].startswith(NORM_PREFIX)


def _mlp(cfg, spec: TaskSpec, conv_impl=None, inner_steps: int = 1) -> Network:
    if cfg.activation not in ACTIVATIONS:
        raise UserError(one_of("model.activation", cfg.activation, ACTIVATIONS))
    if len(spec.input_shape) != 1:
        raise UserError(
            f"model=mlp takes vectors, but this dataset's examples are {spec.input_shape} images: use model=conv4"
        )
    return Network(MLP(hidden_sizes=tuple(cfg.hidden_sizes), output_dim=spec.output_dim, activation=cfg.activation))


def _conv4(cfg, spec: TaskSpec, conv_impl: str, inner_steps: int = 1) -> Network:
    for key, allowed, value in (
        ("batch_norm", BATCH_NORM_MODES, cfg.batch_norm),
        ("bn_eval_stats", ("running", "batch"), cfg.bn_eval_stats),
        ("conv_impl", ("auto", *CONV_IMPLS), cfg.conv_impl),
        ("downsample", ("stride", "maxpool"), cfg.downsample),
        ("head", ("mean", "flatten"), cfg.head),
        ("activation", tuple(CONV_ACTIVATIONS), cfg.activation),
    ):
        if value not in allowed:
            raise UserError(one_of(f"model.{key}", value, allowed))
    if spec.kind != "classification":
        raise UserError("model=conv4 is for image classification datasets")
    if conv_impl == "lax_vjp" and cfg.downsample != "maxpool":
        raise UserError(
            "model.conv_impl=lax_vjp computes stride-1 convolutions: use it with model.downsample=maxpool, "
            "or conv_impl=im2col|lax"
        )
    per_step = cfg.batch_norm == "per_step"
    module = Conv4(
        output_dim=spec.output_dim,
        filters=cfg.filters,
        downsample=cfg.downsample,
        head_input=cfg.head,
        batch_norm=cfg.batch_norm,
        bn_scale=cfg.bn_scale,
        bn_epsilon=cfg.bn_epsilon,
        bn_steps=max(inner_steps, 1),
        conv_impl=conv_impl,
        activation=cfg.activation,
    )
    return Network(
        module,
        adapt_batch_norm=cfg.adapt_batch_norm,
        running_stats=per_step,
        eval_with_running_stats=per_step and cfg.bn_eval_stats == "running",
        running_stats_momentum=cfg.bn_momentum,
    )


def _custom(cfg, spec: TaskSpec, conv_impl=None, inner_steps: int = 1, anil: bool = False) -> Network:

    return Network(build_custom(cfg, spec, anil=anil), plain=True)


BUILDERS = {"mlp": _mlp, "conv4": _conv4, "custom": _custom}


def build_model(
    model_cfg, spec: TaskSpec, conv_impl: str | None = None, inner_steps: int = 1, anil: bool = False
) -> Network:
    """``conv_impl``: how convolutions are computed, as resolved by ``maml_cli.backend.plan``;
    ``inner_steps``: the inner steps of meta-training, for per-step batch norm; ``anil``: the
    algorithm adapts the head alone (a user's model is checked for one)."""
    builder = plugins.target("model", model_cfg.name, BUILDERS)  # a built-in one, or a plugin's
    if model_cfg.name == "custom":
        return builder(model_cfg, spec, conv_impl, inner_steps, anil=anil)
    return builder(model_cfg, spec, conv_impl, inner_steps)


def describe_batch_norm(model_cfg) -> str:
    """How the model normalises, as eval.json records it."""
    mode = model_cfg.get("batch_norm", "none")
    if mode == "per_step":
        return f"per_step ({model_cfg.bn_eval_stats} statistics at evaluation)"
    return mode
