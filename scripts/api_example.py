"""maml-cli from Python, end to end: compose a preset, train it, score it as maml-eval does, and
adapt it to a task of your own.

    python scripts/api_example.py runs/api_example        # under a minute on 2 CPU cores

The same steps as maml-train, maml-eval and maml-adapt (they stand on these functions), and the
same numbers: maml-eval run_dir=runs/api_example eval.episodes=100 prints what step 3 prints.
"""

from __future__ import annotations

import argparse

import numpy as np

import maml_cli as mc


def main(run_dir: str) -> dict:
    # 1. A config: maml-train's default (the MAML paper's sinusoid) with overrides, checked as the
    #    command line is (a typo raises mc.UserError). mc.compose("omniglot_5w1s", [...]) picks a preset.
    cfg = mc.compose(None, ["train.steps=5000", "train.eval_every=2500", "train.plots=false"])

    # 2. Train (or resume: the same call again continues where it stopped).
    run = mc.train(cfg, run_dir=run_dir)
    print(run.summary.text())

    # 3. Score it on 100 fresh test tasks: the record maml-eval writes to eval.json.
    record = mc.load_run(run_dir).evaluate(episodes=100)
    for row in record["per_step"]:
        print(
            f"after {row['step']} inner steps: MSE {row['mean']:.3f} +- {row['ci95']:.3f} "
            f"(median {row['median']:.3f}, {row['diverged']} diverged)"
        )

    # 4. A task of your own: five points of y = 2 sin(x - 1); adapt, then predict anywhere.
    x = np.linspace(-4, 4, 5, dtype=np.float32)[:, None]
    learner = run.adapt(x, 2 * np.sin(x - 1))
    query = np.linspace(-5, 5, 11, dtype=np.float32)[:, None]
    error = np.mean((learner.predict(query) - 2 * np.sin(query - 1)) ** 2)
    print(
        f"adapted to 5 points: MSE {error:.3f} on 11 new ones "
        f"({np.mean((learner.predict(query, adapted=False) - 2 * np.sin(query - 1)) ** 2):.3f} before)"
    )
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", default="runs/api_example")
    main(parser.parse_args().run_dir)
