"""Score one MAML++ checkpoint with both per-step batch-norm evaluation modes, side by side.

MAML++ (Antoniou et al. 2019) describes per-step batch norm whose running statistics, gathered in
meta-training, normalise at evaluation (``model.bn_eval_stats=running``); the authors' code, which
produced the paper's figures, normalised with the batch at hand (``batch``). This scores the same
checkpoint and the same test tasks both ways, and says how far the running statistics are from the
mean over training tasks of the batch statistics they stand for (to tell a bookkeeping bug from a
method that does not transfer).

    python scripts/bn_eval_stats.py RUN_DIR [--step N] [--episodes 200]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a run trained with model.batch_norm=per_step")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--stat-tasks", type=int, default=64, help="training tasks to compare the running statistics with")
    args = ap.parse_args()
    logging.getLogger("absl").setLevel(logging.WARNING)

    import jax
    import numpy as np

    import maml_cli as mc
    from maml_cli.engine.experiment import build_experiment
    from maml_cli.engine.scoring import eval_key, run_episodes, summarize
    from maml_cli.run.reader import restore_state

    try:
        cfg = mc.load_run(args.run_dir).cfg
    except mc.UserError as e:
        raise SystemExit(str(e)) from None
    if cfg.model.get("batch_norm") != "per_step":
        raise SystemExit(
            f"{args.run_dir} was trained with model.batch_norm={cfg.model.get('batch_norm')}, not per_step"
        )
    results = {"run_dir": str(args.run_dir), "episodes": args.episodes}
    for mode in ("running", "batch"):
        cfg.model.bn_eval_stats = mode
        exp = build_experiment(cfg, training=False)
        try:
            state = restore_state(exp, args.run_dir, args.step)  # read-only: a live trainer is never disturbed
        except mc.UserError as e:
            raise SystemExit(str(e)) from None
        results["checkpoint_step"] = int(state.step)
        score = exp.scorer("test", cfg.eval.inner_steps)
        values = run_episodes(
            score,
            state.meta_params,
            state.meta_state,
            exp.sampler.data,
            eval_key(cfg.eval.seed, "test"),
            args.episodes,
            min(args.episodes, cfg.eval.batch_size),
        )
        results[f"test_accuracy_{mode}"] = [round(r["mean"], 4) for r in summarize(values)]

    # The running statistics of inner step 0 against the mean over training tasks of the support
    # set's batch statistics at step 0 under the same parameters.
    network, model = exp.algorithm.network, state.meta_params["model"]
    episodes = exp.sampler.sample(exp.sampler.data, jax.random.PRNGKey(1), "train", args.stat_tasks)
    batch = jax.jit(jax.vmap(lambda x: network.apply(model, x, step=0)[1]))(episodes.support_x)
    running = state.meta_state["batch_stats"]
    results["step0_running_vs_task_mean_of_batch_stats"] = {
        f"{layer}/{stat}": {
            "relative_difference": round(
                float(
                    np.linalg.norm(np.asarray(running[layer][stat][0]) - np.asarray(batch[layer][stat]).mean(0))
                    / np.linalg.norm(np.asarray(batch[layer][stat]).mean(0))
                ),
                3,
            )
        }
        for layer in sorted(batch)
        for stat in ("mean", "var")
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
