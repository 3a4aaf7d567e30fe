"""Why a regression run's tasks diverge when adapted for more steps than it was trained for.

For the first N test tasks of a sinusoid run (those maml-eval scores first), compute the largest
eigenvalue of the Hessian of each task's support loss at the meta-learned initialisation and
compare it with 2 / inner_lr: plain gradient descent with step size inner_lr grows, instead of
shrinks, along a direction whose curvature is above that. Also lists the tasks maml-eval counts as
diverged after eval.inner_steps steps.

    python scripts/inner_loop_sharpness.py runs/sine [--tasks 100]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from maml_cli.config import validate
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.scoring import diverged, eval_key, run_episodes
from maml_cli.run.reader import open_run, restore_state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--tasks", type=int, default=100, help="test tasks whose Hessian is computed")
    ap.add_argument("--episodes", type=int, default=600, help="test tasks scored for divergence")
    args = ap.parse_args()

    cfg = open_run(args.run_dir)
    validate(cfg)
    if cfg.dataset.name != "sinusoid":
        raise SystemExit("this diagnostic is for sinusoid runs (a small MLP whose Hessian fits in memory)")
    exp = build_experiment(cfg, training=False)
    state = restore_state(exp, args.run_dir)
    key, steps, lr = eval_key(cfg.eval.seed, "test"), int(cfg.eval.inner_steps), float(cfg.algorithm.inner_lr)
    values = run_episodes(
        exp.scorer("test", steps), state.meta_params, state.meta_state, exp.data, key, args.episodes, 100
    )
    bad = np.flatnonzero(diverged(values["loss"])[:, steps])

    params = state.meta_params["model"]
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    @jax.jit
    def top_eigenvalue(task_key):
        episode = jax.tree.map(lambda a: a[0], exp.sampler.sample(None, task_key, "test", 1))

        def support_loss(v):
            return exp.algorithm.task_loss.loss(unravel(v), episode.support_x, episode.support_y)[0]

        return jnp.linalg.eigvalsh(jax.hessian(support_loss)(flat))[-1]

    def eigen(i):
        return float(top_eigenvalue(jax.random.split(jax.random.fold_in(key, int(i)))[0]))

    top = np.array([eigen(i) for i in range(args.tasks)])
    print(f"{args.run_dir}: step {int(state.step)}, inner_lr {lr:g} (2/inner_lr = {2 / lr:g})")
    print(
        f"largest Hessian eigenvalue of the support loss at the initialisation, test tasks 0..{args.tasks - 1}: "
        f"min {top.min():.0f}, median {np.median(top):.0f}, max {top.max():.0f}; "
        f"{int((top > 2 / lr).sum())} of {args.tasks} above 2/inner_lr"
    )
    print(
        f"tasks diverged after {steps} inner steps (of {args.episodes}): {len(bad)}"
        + (f": {', '.join(f'task {i} (eigenvalue {eigen(i):.0f})' for i in bad[:10])}" if len(bad) else "")
    )


if __name__ == "__main__":
    main()
