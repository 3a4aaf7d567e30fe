"""Run in a subprocess with several simulated CPU devices (XLA_FLAGS set by tests/test_parallel.py,
before JAX starts): the sharded outer step and evaluation against the single-device ones. Prints
one JSON object of largest absolute differences.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.parallel_worker [OMNIGLOT_DIR]
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from maml_cli.backend import sharding
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.scoring import eval_key, run_episodes
from tests.conftest import TINY, make_cfg

STEPS = 3


def gap(a, b) -> float:
    return max(
        (
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        ),
        default=0.0,
    )


def outcome(overrides, devices):
    """(meta-gradient and metrics of one step, params after STEPS steps, their metrics, eval scores)."""
    exp = build_experiment(make_cfg(*overrides, f"train.devices={devices}"))
    state = exp.place(exp.init_state())
    phase = exp.phase_at(0)
    rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    sample, meta_batch = exp.sampler.sample, exp.cfg.train.meta_batch_size
    if exp.mesh is None:
        episodes = sample(exp.data, rng[0], "train", meta_batch, shots=exp.algorithm.train_shots)
        gradient = jax.jit(
            lambda: exp.algorithm.meta_gradient(
                state.meta_params, state.meta_state, episodes, rng[1], state.step, phase
            )
        )()
    else:
        gradient = jax.jit(sharding.sharded_meta_gradient(exp.mesh, sample, exp.algorithm, meta_batch, phase))(
            state.meta_params, state.meta_state, exp.data, rng[0], rng[1], state.step
        )
    scores = run_episodes(
        exp.scorer("val", 2), state.meta_params, state.meta_state, exp.data, eval_key(0, "val"), 10, exp.eval_batch(10)
    )
    after, metrics = exp.multi_step()(state, exp.data, STEPS, phase)
    return jax.device_get((gradient, after.meta_params, after.meta_state, metrics, scores))


def main() -> None:
    omniglot = sys.argv[1] if len(sys.argv) > 1 else None  # also the conv4 case (slower)
    cases = {
        "maml": [*TINY, "algorithm=maml", "train.meta_batch_size=8"],
        "fomaml": [*TINY, "algorithm=fomaml", "train.meta_batch_size=8"],
        # Reptile draws its mini-batch orders from one key per device; with a mini-batch of the
        # whole support set (5 shots) the order does not matter, so the numbers must agree. Its
        # meta-state (the inner Adam moments) is carried through the inner scan on each device.
        "reptile": [
            *TINY,
            "algorithm=reptile",
            "train.meta_batch_size=8",
            "algorithm.inner_batch_size=5",
            "algorithm.eval_inner_batch_size=5",
        ],
    }
    if omniglot:  # conv4 with per-step batch norm: running statistics are averaged over devices too
        cases["mamlpp_conv4"] = [
            "experiment=omniglot_tiny",
            "algorithm=mamlpp",
            f"dataset.path={omniglot}",
            "train.meta_batch_size=4",
            "train.task_batching=vmap",
            "model.conv_impl=lax",
            "train.remat=false",
        ]
    out = {"device_count": jax.device_count()}
    singles = {}
    for name, overrides in cases.items():
        single = singles[name] = outcome(overrides, 1)
        for devices in (2, 4) if name == "maml" else (2,):
            sharded = outcome(overrides, devices)
            out[f"{name}/{devices}"] = {
                part: gap(a, b)
                for part, a, b in zip(("gradient", "params", "meta_state", "metrics", "scores"), single, sharded)
            }
            if name == "mamlpp_conv4":
                # A convolution's bias before batch norm has a true gradient of zero, so Adam turns
                # its float noise into steps of the learning rate's size: compared apart.
                biases = [k for k in single[1]["model"] if k.startswith("convs_")]
                out[f"{name}/{devices}"]["params"] = gap(
                    {k: v for k, v in single[1]["model"].items() if k not in biases}
                    | {k: v["kernel"] for k, v in single[1]["model"].items() if k in biases},
                    {k: v for k, v in sharded[1]["model"].items() if k not in biases}
                    | {k: v["kernel"] for k, v in sharded[1]["model"].items() if k in biases},
                )
                # Those biases shift the running means by as much; the running variances do not see them.
                out[f"{name}/{devices}"]["meta_state"] = gap(
                    {k: v["var"] for k, v in single[2]["batch_stats"].items()},
                    {k: v["var"] for k, v in sharded[2]["batch_stats"].items()},
                )
    # The trap the module docstring warns of: without marking the parameters as varying, the inner
    # gradients would be summed over devices (so this must differ).
    sharding.varying = lambda tree: tree
    out["maml/2 without pcast"] = {"params": gap(singles["maml"][1], outcome(cases["maml"], 2)[1])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
