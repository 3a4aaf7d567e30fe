"""Make the README's figures from runs trained from the shell, exactly as a user would:

    python scripts/make_figures.py --omniglot ../shared/data/omniglot   # about 10 minutes on 2 CPU cores

1. ``maml-train`` (the default: sinusoid, 10,000 steps) then ``maml-eval``;
2. ``maml-train experiment=omniglot_5w1s`` for ``--omniglot-minutes`` (time limit), then ``maml-eval``;

and copies each run's ``plots/learning_curves.png``, ``plots/adaptation.png`` (sinusoid) and
``eval.png`` into ``docs/figures/`` as ``<run>_<figure>.png``, with the commands in
``docs/figures/README.md``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd: list, log: list) -> None:
    print("$", " ".join(cmd), file=sys.stderr)
    began = time.time()
    subprocess.run([str(BIN / cmd[0]), *cmd[1:]], check=True)
    log.append(f"$ {' '.join(cmd)}    # {(time.time() - began) / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--omniglot", type=Path, required=True, help="folder with the Omniglot zips or arrays")
    parser.add_argument("--omniglot-minutes", type=float, default=6.0)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "figures")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    args = parser.parse_args()
    shutil.rmtree(args.runs, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log: list = []
    sine, omniglot = args.runs / "sinusoid", args.runs / "omniglot_5w1s"
    run(["maml-train", f"hydra.run.dir={sine}"], log)
    run(["maml-eval", f"run_dir={sine}"], log)
    run(
        [
            "maml-train",
            "experiment=omniglot_5w1s",
            f"dataset.path={args.omniglot.resolve()}",
            f"train.time_limit_minutes={args.omniglot_minutes}",
            "train.eval_every=250",
            "train.log_every=50",
            "train.checkpoint_every=250",
            "train.steps_per_call=50",
            f"hydra.run.dir={omniglot}",
        ],
        log,
    )
    run(["maml-eval", f"run_dir={omniglot}"], log)
    made = []
    for run_dir in (sine, omniglot):
        for source in (
            run_dir / "plots" / "learning_curves.png",
            run_dir / "plots" / "adaptation.png",
            run_dir / "eval.png",
        ):
            if source.exists():
                target = args.out / f"{run_dir.name}_{source.stem}.png"
                shutil.copy(source, target)
                made.append(target.name)
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    (args.out / "README.md").write_text(
        "# Figures\n\nMade by `python scripts/make_figures.py --omniglot DIR` on "
        f"{time.strftime('%Y-%m-%d')} ({machine}, CPU); the runs it trained:\n\n```\n"
        + "\n".join(log).replace(str(REPO) + "/", "").replace(str(args.omniglot.resolve()), "DIR")
        + "\n```\n\n"
        + "\n".join(f"- `{m}`" for m in made)
        + "\n"
    )
    print("wrote", ", ".join(made), file=sys.stderr)


if __name__ == "__main__":
    main()
