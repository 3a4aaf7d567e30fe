"""Reproduce the MAML paper's Omniglot table (Finn et al. 2017, table 1) on the real data.

For each preset it runs, through the installed console scripts,
    maml-train experiment=PRESET dataset.path=DATA train.steps=STEPS train.checkpoint_every=EVERY \
               train.keep_checkpoints=1000 hydra.run.dir=RUNS/PRESET
    maml-eval  run_dir=RUNS/PRESET checkpoint=S          (for every saved checkpoint S)
and writes, into the "omniglot" section of docs/results.md, test accuracy (600 tasks, 95% CI)
against outer steps and wall-clock training time, beside the paper's figure.

The paper trains 60,000 steps; pass --steps to stop earlier (the table says how far it got).
A run that exists is resumed, not restarted, so the script can be run again to go further.

    python scripts/reproduce_omniglot.py --presets omniglot_5w1s --steps 6000 --every 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, replace_section, today  # noqa: E402

from maml_cli.run.metrics import read_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = {"omniglot_5w1s": 98.7, "omniglot_5w5s": 99.9, "omniglot_20w1s": 95.8, "omniglot_20w5s": 98.9}


def wall_clock_at(run_dir: Path) -> dict:
    """Seconds of training up to each logged step: ``elapsed_s``, the loop's wall clock summed over
    sessions, so pauses between a run and its resumption are not counted (compilation of each
    session is). Runs written before ``elapsed_s`` existed: the sum over logging windows of
    steps / rate."""
    records = read_jsonl(run_dir / "metrics.jsonl")  # a line cut short by a crash is skipped
    if records and all("elapsed_s" in r for r in records):
        return {r["step"]: r["elapsed_s"] for r in records}
    times, total, prev = {}, 0.0, 0
    for rec in records:
        if rec.get("train/steps_per_s"):
            total += (rec["step"] - prev) / rec["train/steps_per_s"]
            prev = rec["step"]
            times[rec["step"]] = total
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PAPER))
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "omniglot")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "reproduce")
    ap.add_argument("--steps", type=int, default=60000)
    ap.add_argument("--every", type=int, default=1000, help="checkpoint (and test) every this many steps")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--results", type=Path, default=REPO / "docs" / "results.md")
    ap.add_argument("--note", default="", help="a sentence to print under the tables (e.g. what else ran)")
    args = ap.parse_args()

    sections = []
    for preset in args.presets:
        run_dir = (args.runs / preset).absolute()
        cmd = [
            str(BIN / "maml-train"),
            f"experiment={preset}",
            f"dataset.path={args.data.absolute()}",
            f"train.steps={args.steps}",
            f"train.checkpoint_every={args.every}",
            "train.keep_checkpoints=1000",
            "train.progress=false",
            f"hydra.run.dir={run_dir}",
        ]
        tic = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"{preset}: maml-train returned after {time.perf_counter() - tic:.0f} s", flush=True)
        steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        wall = wall_clock_at(run_dir)
        rows = []
        for step in steps:
            subprocess.run(
                [
                    str(BIN / "maml-eval"),
                    f"run_dir={run_dir}",
                    f"checkpoint={step}",
                    f"eval.episodes={args.episodes}",
                    f"output={run_dir / f'eval_step{step}.json'}",
                    "progress=false",
                ],
                check=True,
                capture_output=True,
            )
            record = json.loads((run_dir / f"eval_step{step}.json").read_text())
            final = record["per_step"][-1]
            rows.append((step, wall.get(step), record["per_step"][0], final, record["inner_steps"]))
            print(f"{preset} step {step}: {100 * final['mean']:.2f} +- {100 * final['ci95']:.2f}%", flush=True)

        target = PAPER.get(preset)  # each preset's own paper figure (20-way tasks are harder)
        reached = next((r for r in rows if target and 100 * r[3]["mean"] >= target), None)
        lines = [
            f"### {preset} (paper: {PAPER.get(preset, '?')}%)",
            "",
            f"`python scripts/reproduce_omniglot.py --presets {preset} --steps {args.steps} --every {args.every}`; "
            f"test accuracy over {args.episodes} tasks after {rows[-1][4] if rows else '?'} inner steps, "
            "mean +- 95% CI. Training time is the wall clock of the training loop (validation and checkpoints included, each session's first compilation too; pauses between sessions not).",
            "",
            "| outer steps | training time | accuracy before adaptation | accuracy after adaptation |",
            "|---|---|---|---|",
        ]
        for step, secs, pre, final, _ in rows:
            t = f"{secs / 60:.1f} min" if secs is not None else "?"
            lines.append(
                f"| {step} | {t} | {100 * pre['mean']:.1f}% | {100 * final['mean']:.2f} +- {100 * final['ci95']:.2f}% |"
            )
        if reached:
            lines += [
                "",
                f"First reached the paper's {target}% at step {reached[0]} ({reached[1] / 60:.1f} min of training).",
            ]
        elif rows and target:
            lines += ["", f"Did not reach the paper's {target}% within {rows[-1][0]} steps."]
        if rows and rows[-1][0] < 60000:
            lines += [f"Stopped at {rows[-1][0]} of the paper's 60,000 steps (time budget of the session)."]
        sections.append("\n".join(lines))

    body = "\n\n".join(
        [
            f"## Omniglot {', '.join(args.presets)} (MAML paper, table 1)",
            f"Measured {today()} on {machine()}, on the full Omniglot in `../shared/data/omniglot` "
            "(1623 characters, paper split with seed 1: 1100 train / 100 val / 423 test characters, "
            "random 90-degree rotations per class).",
            *sections,
            *([args.note] if args.note else []),
        ]
    )
    name = "omniglot-" + "-".join(p.replace("omniglot_", "") for p in args.presets)
    replace_section(args.results, name, body)
    print(f"wrote section {name} of {args.results}")


if __name__ == "__main__":
    main()
