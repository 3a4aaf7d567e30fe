"""The inner loop: adapt parameters to one task with a few gradient steps.

One loop serves the whole family; what differs is passed in:
- ``support_loss(params, step) -> (loss, aux)``: the loss of inner step ``step`` (an index, so a
  model can pick per-step batch-norm weights, and Reptile its mini-batch); ``aux`` is carried out
  of the loop (per-step batch statistics);
- an ``InnerRule`` turning a gradient into an update: SGD with step sizes that may be learned
  (Meta-SGD, MAML++) or Adam (Reptile);
- ``observe(params, step)``, evaluated after each step (the query loss of MAML++'s multi-step
  loss, or the query metric when evaluating).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class InnerRule(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, step) -> (updates, state)``."""

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, jax.Array], Any]


def sgd(rates: Callable[[jax.Array], Any]) -> InnerRule:
    """Plain SGD: ``rates(step)`` is a pytree of step sizes shaped like the parameters (or
    broadcastable to them: a scalar per tensor)."""

    def update(grads, state, step):
        return jax.tree.map(lambda r, g: -r * g, rates(step), grads), state

    return InnerRule(init=lambda params: (), update=update)


def constant_rates(params, inner_lr: float):
    """The same step size for every tensor (MAML)."""
    return jax.tree.map(lambda p: jnp.asarray(inner_lr, p.dtype), params)


def optax_rule(transform: optax.GradientTransformation) -> InnerRule:
    """An optax optimizer as an inner rule (its state may be carried between tasks)."""
    return InnerRule(init=transform.init, update=lambda grads, state, step: transform.update(grads, state))


def adapt(
    support_loss: Callable,
    params,
    *,
    rule: InnerRule,
    inner_steps: int,
    first_order: bool,
    remat: bool = False,
    observe: Callable | None = None,
    rule_state: Any = None,
):
    """``inner_steps`` steps of ``rule`` on ``support_loss`` from ``params``.

    Returns ``(adapted, rule_state, (aux, observed))``, the last two stacked over the steps
    (leading axis ``inner_steps``; ``observed`` is None without ``observe``).

    Second order (the default) keeps each step differentiable, so an outer gradient flows through
    the inner gradients (grad-through-grad). ``first_order`` stops it there: d(adapted)/d(params)
    is then the identity, which is FOMAML. ``remat`` recomputes each step's activations in the
    backward pass instead of storing them (``jax.checkpoint``): memory stays flat in
    ``inner_steps`` at the price of one more forward.
    """
    state = rule.init(params) if rule_state is None else rule_state
    if inner_steps == 0:
        return params, state, (None, None)

    def step(carry, s):
        p, st = carry
        (_, aux), grads = jax.value_and_grad(support_loss, has_aux=True)(p, s)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        updates, st = rule.update(grads, st, s)
        p = optax.apply_updates(p, updates)
        return (p, st), (aux, observe(p, s) if observe is not None else None)

    if remat:
        step = jax.checkpoint(step)
    (adapted, state), outputs = jax.lax.scan(step, (params, state), jnp.arange(inner_steps))
    return adapted, state, outputs
