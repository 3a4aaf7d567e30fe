"""Your own network (``model=custom model.target=my_pkg.nets:make_net``).

The contract (docs/custom.md): ``target(output_dim=N, **model.kwargs)`` returns a
``flax.linen.Module`` whose ``__call__(x)`` maps a batch ``[batch, *input_shape]`` to
``[batch, N]`` (N: the ways, or the regression outputs). Its only variables are ``params``: a
model that normalises must do it with the statistics of the batch at hand (transductive, as MAML
does), for instance with ``maml_cli.models.conv4.BatchNorm`` or ``nn.LayerNorm``; running
statistics (``nn.BatchNorm``'s ``batch_stats``) are refused. For ``algorithm=anil`` it also has a
submodule named ``head`` (the last layer, what ANIL adapts) and a method ``features(x)`` that
returns the head's input. Every part of this is checked on abstract shapes before anything is
compiled.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from maml_cli.errors import UserError
from maml_cli.user_code import import_target


def build_custom(cfg, spec, anil: bool = False) -> nn.Module:
    """The user's module for tasks of ``spec``, checked against the contract."""
    make = import_target(cfg.target, "model.target")
    kwargs = dict(cfg.get("kwargs") or {})
    try:
        module = make(output_dim=spec.output_dim, **kwargs)
    except Exception as e:
        raise UserError(
            f"model.target={cfg.target}(output_dim={spec.output_dim}, **model.kwargs) failed: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(module, nn.Module):
        raise UserError(f"model.target={cfg.target} must return a flax.linen Module (got {type(module).__name__})")
    x = jnp.zeros((2, *spec.input_shape), jnp.float32)
    try:
        out, variables = jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), x))
    except Exception as e:
        raise UserError(
            f"model.target={cfg.target}: the module fails on a batch of shape {tuple(x.shape)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    others = sorted(set(variables) - {"params"})
    if others:
        raise UserError(
            f"model.target={cfg.target} keeps variables besides params ({', '.join(others)}): the "
            "meta-learning math adapts params alone; normalise with the batch's statistics "
            "(maml_cli.models.conv4.BatchNorm, nn.LayerNorm) instead of nn.BatchNorm"
        )
    if getattr(out, "shape", None) != (2, spec.output_dim):
        raise UserError(
            f"model.target={cfg.target} maps a batch of shape {tuple(x.shape)} to "
            f"{getattr(out, 'shape', type(out).__name__)}; it must give [batch, {spec.output_dim}]"
        )
    if anil:
        need = (
            f"algorithm=anil adapts the head alone: model.target={cfg.target} needs a submodule named head "
            "(its last layer, made in setup()) and a method features(x) returning the head's input"
        )
        if "head" not in variables.get("params", {}) or not hasattr(module, "features"):
            raise UserError(need)
        try:
            features = jax.eval_shape(lambda v: module.apply(v, x, method="features"), variables)
            jax.eval_shape(
                lambda h, f: module.apply({"params": {"head": h}}, f, method=lambda m, z: m.head(z)),
                variables["params"]["head"],
                features,
            )
        except Exception as e:
            raise UserError(f"{need}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return module
