"""Adapting a trained run to one new task: the ``Learner`` that maml-adapt predicts with and that
``Run.adapt`` returns. It adapts exactly as evaluation does (the algorithm's ``adapt_to_task``),
so its predictions on a task are those maml-eval scores on the same task. Nothing here writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from maml_cli.config.checks import typed_values
from maml_cli.config.schema import FLOAT32_MAX, AdaptAppConfig
from maml_cli.data.episodes import Episodes
from maml_cli.errors import UserError
from maml_cli.meta.algorithms import build_algorithm
from maml_cli.meta.losses import masked_task_loss
from maml_cli.run.reader import restore_chosen
from maml_cli.run.selection import parse_checkpoint

# Names the place of one value in the user's input, for the messages: (array name, index) -> "support_x[3, 0]"
# for arrays of the Python API, "points.csv, line 4, column 2" for maml-adapt's CSV files.
Where = Callable[[str, tuple], str]


def array_where(name: str, index: tuple) -> str:
    return f"{name}[{', '.join(str(i) for i in index)}]"


def _numbers(name: str, values, where: Where) -> np.ndarray:
    """``values`` as float64, refused unless every entry is a number that float32 (what the model
    computes in) holds: not NaN, not infinite, not beyond +-3.4e38."""
    try:
        array = np.asarray(values)
        if array.dtype.kind == "O":
            missing = np.argwhere(np.equal(array, None))
            if len(missing):
                raise UserError(f"{where(name, tuple(int(i) for i in missing[0]))} is None: a number is needed")
            array = array.astype(np.float64)
        elif array.dtype.kind not in "biuf":
            raise TypeError("it holds text" if array.dtype.kind in "US" else f"it holds {array.dtype.name} values")
    except (TypeError, ValueError) as e:  # text, ragged nested lists
        why = "its rows differ in length" if "inhomogeneous" in str(e) else str(e).splitlines()[0]
        raise UserError(f"{name} must be an array of numbers ({why})") from None
    array = array.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(array) | (np.abs(array) > FLOAT32_MAX)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = array[index]
        why = "every value must be a finite number"
        if np.isfinite(value):
            why = f"beyond float32's range (+-{FLOAT32_MAX:.3g}), the precision the model computes in"
        raise UserError(f"{where(name, index)} is {value:g}: {why}")
    return array


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_examples(name: str, values, input_shape: tuple, where: Where = array_where) -> np.ndarray:
    """Examples for the run's model, float32 [n, *input_shape] with n >= 1 and every value finite."""
    x = _numbers(name, values, where)
    expected = ("n", *input_shape)
    if x.shape[1:] != tuple(input_shape) or x.ndim != len(expected):
        hint = (
            f"; for one input per example, reshape it: {name}[:, None]"
            if tuple(input_shape) == (1,) and x.ndim == 1
            else ""
        )
        raise UserError(
            f"{name} must have shape {_shape_text(expected)}, n examples of the run's input shape "
            f"{_shape_text(input_shape)} (got {_shape_text(x.shape)}){hint}"
        )
    if len(x) == 0:
        raise UserError(f"{name} holds no examples: give at least one")
    return x.astype(np.float32)


def check_support(spec, support_x, support_y, used_classes: int | None = None, where: Where = array_where):
    """The support set a run adapts to, checked the same for maml-adapt's files and the Python
    API: (x float32 [n, *input_shape], y, classes used). Classification: y holds whole class
    indices 0..k-1, each class with an example, k <= the run's ways (``used_classes``: k, when
    the caller knows it); regression: y finite, [n, outputs] (or [n] for one output)."""
    x = check_examples("support_x", support_x, spec.input_shape, where)
    y = _numbers("support_y", support_y, where)
    if spec.kind == "classification":
        if y.ndim != 1:
            raise UserError(f"support_y must hold one class index per example, shape [n] (got {_shape_text(y.shape)})")
        ways = spec.output_dim
        limit = used_classes or ways
        wrong = (y != np.round(y)) | (y < 0) | (y >= limit)
        if wrong.any():
            i = int(np.argmax(wrong))
            raise UserError(
                f"{where('support_y', (i,))} is {y[i]:g}: a label is a whole class index 0..{limit - 1} "
                f"(the run's model has {ways} classes)"
            )
        y = y.astype(np.int32)
        used = used_classes or int(y.max(initial=-1)) + 1
        missing = sorted(set(range(used)) - set(y.tolist()))
        if missing and len(y):
            raise UserError(
                f"support_y has no example of class {missing[0]} (its labels run 0..{used - 1}): number the "
                "task's classes 0..k-1, each with at least one support example"
            )
    else:
        outputs = spec.output_dim
        if y.ndim == 1 and outputs == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != outputs:
            raise UserError(
                f"support_y must have shape [n, {outputs}], the run's {outputs} output(s) per example"
                + (" (or [n])" if outputs == 1 else "")
                + f" (got {_shape_text(y.shape)})"
            )
        y, used = y.astype(np.float32), None
    if len(x) != len(y):
        raise UserError(f"{len(x)} support examples (support_x) but {len(y)} targets (support_y): give one per example")
    return x, y, used


def check_finite_outputs(name: str, outputs: np.ndarray, inputs: np.ndarray, where: Where = array_where) -> np.ndarray:
    """``outputs`` (one row per example of ``inputs``), refused unless every one is finite."""
    bad = ~np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(
            f"the prediction for {where(name, (i,))} is not finite ({int(bad.sum())} of {len(bad)} are not): "
            f"the inputs (largest |value| {np.abs(inputs).max():.3g}) are likely far from those the run was "
            "trained on"
        )
    return outputs


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
    input_shape: tuple = ()  # the shape of one example; () when unknown (not checked)

    def predict(self, x, adapted: bool = True, where: Where = array_where) -> np.ndarray:
        """The outputs on ``x``, all of it one batch (transductive batch norm normalises over it).
        ``x`` must be [n, *input_shape], every value finite; a UserError says what is wrong, as
        does a prediction that is not finite."""
        params = self.params if adapted else self.meta_params
        x = check_examples("x", x, self.input_shape, where) if self.input_shape else np.asarray(x, np.float32)
        outputs = np.asarray(self.network.apply(params, x, **self.forward)[0]) + self.bias
        return check_finite_outputs("x", outputs, x, where)

    def flat_parameters(self) -> dict:
        """The adapted parameters as host arrays, by their path in the tree ("layer/kernel")."""
        flat = traverse_util.flatten_dict(jax.device_get(self.params), sep="/")
        return {name: np.asarray(value) for name, value in flat.items()}


def restore_one(exp, run_dir, checkpoint):
    """The one checkpoint ``checkpoint=`` names (a step, latest, or best; not an ensemble), placed on
    ``exp``'s devices: what maml-adapt and ``Run.adapt`` adapt."""

    kind, count = parse_checkpoint(checkpoint)
    if kind == "best" and count > 1:
        raise UserError(f"adapting uses one checkpoint: use checkpoint=best, not best:{count}")
    (state,), _ = restore_chosen(exp, run_dir, exp.cfg, exp.spec.metric, checkpoint)
    return state


def adapt(
    exp, state, support_x, support_y, inner_steps: int, seed: int = 0, used_classes: int | None = None
) -> Learner:
    """``state`` (a run's restored checkpoint) adapted to the support set with ``inner_steps`` steps.
    ``used_classes``: a classification task with fewer classes than the run's ways; the other
    outputs are masked out of the loss and the predictions (unset: the largest label + 1)."""

    spec, cfg = exp.spec, exp.cfg
    typed_values(AdaptAppConfig, {"inner_steps": inner_steps, "seed": seed})
    support_x, support_y, used = check_support(spec, support_x, support_y, used_classes)
    algorithm, bias = exp.algorithm, np.zeros(spec.output_dim, np.float32)
    if spec.kind == "classification" and used < spec.output_dim:
        algorithm = build_algorithm(
            cfg.algorithm, masked_task_loss(exp.network, used, spec.output_dim), exp.execution, cfg.train
        )
        bias[used:] = -1e9
    episode = Episodes(*(jnp.asarray(a) for a in (support_x, support_y, support_x, support_y)))
    run_adapt = jax.jit(algorithm.adapt_to_task, static_argnums=4)
    params = run_adapt(state.meta_params, state.meta_state, episode, jax.random.PRNGKey(seed), inner_steps)
    if not all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(params)):
        raise UserError(
            f"adapting to this support set diverged: the parameters are not finite after {inner_steps} inner "
            f"step(s); its values (largest |value| {max(np.abs(support_x).max(), np.abs(support_y).max()):.3g}) "
            "are likely far from those the run was trained on (fewer inner_steps may help)"
        )
    return Learner(
        params=params,
        meta_params=state.meta_params["model"],
        network=exp.network,
        forward=algorithm.eval_forward(state.meta_state),
        kind=spec.kind,
        checkpoint_step=int(state.step),
        inner_steps=inner_steps,
        bias=bias,
        input_shape=tuple(spec.input_shape),
    )
