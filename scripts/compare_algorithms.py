"""The MAML family side by side at the same wall-clock training budget, on the real Omniglot.

For each algorithm it runs, through the installed console scripts and one after another,
    maml-train experiment=PRESET algorithm=A dataset.path=DATA train.time_limit_minutes=MINUTES \\
               train.checkpoint_every=EVERY train.keep_checkpoints=100000 hydra.run.dir=RUNS/PRESET/A
(the algorithm's paper settings for that preset, see configs/paper/; no validation during the run,
the persistent compilation cache off so every algorithm pays its own compilation), then
    maml-eval run_dir=RUNS/PRESET/A checkpoint=S eval.episodes=600
for the checkpoints closest to every --eval-minutes of training and the last one, each algorithm
with its own paper's test protocol (inner steps, inner optimizer). It writes into
docs/results.md: test accuracy at the budget (600 tasks, 95% CI), beside each paper's figure,
accuracy against training time, the first time each reached 95% and 98%, and which differences
are inside the confidence intervals.

Training time is the training loop's wall clock (compilation included, as a user waits for it),
summed over logging windows from metrics.jsonl.

    python scripts/compare_algorithms.py --preset omniglot_5w1s --minutes 15
    python scripts/compare_algorithms.py --preset omniglot_20w1s --algorithms maml anil mamlpp --minutes 15
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, replace_section, today  # noqa: E402
from reproduce_omniglot import wall_clock_at  # noqa: E402

import maml_cli as mc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ALGORITHMS = ("maml", "fomaml", "anil", "metasgd", "mamlpp", "reptile")
NAMES = {
    "maml": "MAML",
    "fomaml": "FOMAML",
    "anil": "ANIL",
    "metasgd": "Meta-SGD",
    "mamlpp": "MAML++",
    "reptile": "Reptile",
}
# Published test accuracy (%) as we read each paper: MAML and FOMAML (Finn et al. 2017, table 1),
# Meta-SGD (Li et al. 2017), MAML++ (Antoniou et al. 2019), ANIL (Raghu et al. 2020: 20-way 1-shot
# only), Reptile (Nichol et al. 2018, transductive).
PAPER = {
    "omniglot_5w1s": {
        "maml": "98.7 +- 0.4",
        "fomaml": "98.3 +- 0.5",
        "anil": "-",
        "metasgd": "99.53 +- 0.26",
        "mamlpp": "99.47",
        "reptile": "97.68 +- 0.04",
    },
    "omniglot_20w1s": {
        "maml": "95.8 +- 0.3",
        "fomaml": "89.4 +- 0.5",
        "anil": "96.2 +- 0.5",
        "metasgd": "95.93 +- 0.38",
        "mamlpp": "97.65 +- 0.05",
        "reptile": "89.43 +- 0.14",
    },
}
THRESHOLDS = (0.95, 0.98)


def train(preset: str, algorithm: str, data: Path, run_dir: Path, minutes: float, every: int) -> None:
    cmd = [
        str(BIN / "maml-train"),
        f"experiment={preset}",
        f"algorithm={algorithm}",
        f"dataset.path={data.absolute()}",
        f"train.time_limit_minutes={minutes}",
        f"train.checkpoint_every={every}",
        "train.keep_checkpoints=100000",
        "train.eval_every=100000000",
        "train.log_every=10",
        "train.steps_per_call=10",
        "train.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    env = dict(os.environ, MAML_CLI_COMPILE_CACHE="off")
    tic = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    print(f"{preset} {algorithm}: maml-train returned after {time.perf_counter() - tic:.0f} s", flush=True)


def evaluate(run_dir: Path, step: int, episodes: int) -> dict:
    out = run_dir / f"eval_step{step}.json"
    if not out.is_file():
        subprocess.run(
            [
                str(BIN / "maml-eval"),
                f"run_dir={run_dir}",
                f"checkpoint={step}",
                f"eval.episodes={episodes}",
                f"output={out}",
                "progress=false",
            ],
            check=True,
            capture_output=True,
        )
    return json.loads(out.read_text())


def training_seconds(step: int, logged: dict) -> float:
    """Training time at ``step``: interpolated between logged steps, and beyond the last one (a
    run stopped by its time limit mid-window) extended at the last window's rate."""
    points = sorted(logged.items())
    if step in logged:
        return logged[step]
    before = [p for p in points if p[0] < step]
    after = [p for p in points if p[0] > step]
    if before and after:
        (s0, t0), (s1, t1) = before[-1], after[0]
        return t0 + (t1 - t0) * (step - s0) / (s1 - s0)
    if len(before) >= 2:
        (s0, t0), (s1, t1) = before[-2], before[-1]
        return t1 + (t1 - t0) * (step - s1) / (s1 - s0)
    return after[0][1] * step / after[0][0] if after else 0.0


def points_to_score(steps: list, times: dict, every_minutes: float) -> list:
    """The checkpoint closest to each multiple of ``every_minutes`` of training, and the last."""
    chosen = {steps[-1]}
    budget = times.get(steps[-1], 0.0)
    for k in range(1, int(budget / 60 / every_minutes) + 1):
        target = 60 * every_minutes * k
        if budget - target < 30 * every_minutes:
            continue  # the last checkpoint stands for this time point
        chosen.add(min(steps, key=lambda s: abs(times.get(s, math.inf) - target)))
    return sorted(chosen)


def inside_ci(a: dict, b: dict) -> bool:
    """Whether two accuracies differ by less than the 95% CI of their difference."""
    return abs(a["mean"] - b["mean"]) <= math.hypot(a["ci95"], b["ci95"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="omniglot_5w1s")
    ap.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per algorithm")
    ap.add_argument("--eval-minutes", type=float, default=1.5, help="score a checkpoint every this much training")
    ap.add_argument("--checkpoint-every", type=int, default=25, help="outer steps between checkpoints")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "omniglot")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "compare")
    ap.add_argument("--results", type=Path, default=REPO / "docs" / "results.md")
    ap.add_argument("--note", default="", help="a sentence to print under the tables (e.g. what else ran)")
    args = ap.parse_args()

    results = {}
    for algorithm in args.algorithms:
        run_dir = (args.runs / args.preset / algorithm).absolute()
        if not (run_dir / "checkpoints").is_dir():
            train(args.preset, algorithm, args.data, run_dir, args.minutes, args.checkpoint_every)
        steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        logged = wall_clock_at(run_dir)
        times = {step: training_seconds(step, logged) for step in steps}
        curve = []
        for step in points_to_score(steps, times, args.eval_minutes):
            record = evaluate(run_dir, step, args.episodes)
            final = record["per_step"][-1]
            curve.append(
                {
                    "step": step,
                    "seconds": times.get(step),
                    "mean": final["mean"],
                    "ci95": final["ci95"],
                    "inner_steps": record["inner_steps"],
                    "batch_norm": record.get("batch_norm", "?"),
                }
            )
            print(
                f"{algorithm} step {step} ({times.get(step, 0) / 60:.1f} min): "
                f"{100 * final['mean']:.2f} +- {100 * final['ci95']:.2f}%",
                flush=True,
            )
        run_cfg = mc.load_run(run_dir).cfg
        results[algorithm] = {
            "curve": curve,
            "steps": steps[-1],
            "seconds": times.get(steps[-1]),
            "meta_batch": run_cfg.train.meta_batch_size,
        }
    replace_section(args.results, f"family-{args.preset}", _report(args, results))
    print(f"wrote section family-{args.preset} of {args.results}")


def _pct(point: dict) -> str:
    return f"{100 * point['mean']:.2f} +- {100 * point['ci95']:.2f}%"


def _report(args, results: dict) -> str:
    preset, paper = args.preset, PAPER.get(args.preset, {})
    lines = [
        f"## The MAML family at the same training budget: {preset}",
        "",
        f"Measured {today()} on {machine()} with `python scripts/compare_algorithms.py --preset {preset} "
        f"--algorithms {' '.join(args.algorithms)} --minutes {args.minutes:g} --eval-minutes {args.eval_minutes:g}`: each algorithm trained for "
        f"{args.minutes:g} minutes of wall clock (compilation included, persistent compilation cache off), one "
        "after another on the full Omniglot in `../shared/data/omniglot` (paper split, seed 1), with its paper's "
        f"settings (`experiment={preset} algorithm=NAME`, configs/paper/), then scored on the same "
        f"{args.episodes} test tasks with its paper's test protocol; accuracy after the last inner step, "
        "mean +- 95% CI (1.96 std / sqrt(tasks)).",
        "",
        f"| algorithm | outer steps in {args.minutes:g} min | tasks/s over the budget (meta-batch) | test accuracy at the budget "
        "| first >= 95% | first >= 98% | batch norm at test | paper (full training) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for algorithm, r in results.items():
        last = r["curve"][-1]
        first = {t: next((p for p in r["curve"] if p["mean"] >= t), None) for t in THRESHOLDS}
        reached = [
            f"{first[t]['seconds'] / 60:.1f} min (step {first[t]['step']})" if first[t] else "not reached"
            for t in THRESHOLDS
        ]
        rate = f"{r['steps'] * float(r['meta_batch']) / r['seconds']:.1f} ({r['meta_batch']})" if r["seconds"] else "?"
        lines.append(
            f"| {NAMES.get(algorithm, algorithm)} | {r['steps']} | {rate} | {_pct(last)} "
            f"(after {last['inner_steps']} step{'s' if last['inner_steps'] != 1 else ''}) | {reached[0]} | "
            f"{reached[1]} | {last['batch_norm']} | {paper.get(algorithm, '?')} |"
        )
    best_name, best = max(((a, r["curve"][-1]) for a, r in results.items()), key=lambda x: x[1]["mean"])
    same = [NAMES.get(a, a) for a, r in results.items() if a != best_name and inside_ci(r["curve"][-1], best)]
    apart = [NAMES.get(a, a) for a, r in results.items() if a != best_name and not inside_ci(r["curve"][-1], best)]

    def listing(names: list) -> str:
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"

    verdicts = [
        f"{listing(same)} {'is' if len(same) == 1 else 'are'} within the 95% CI of the difference "
        "(|difference| <= sqrt(ci1^2 + ci2^2)), so not distinguishable from it here"
        if same
        else "",
        f"{listing(apart)} {'is' if len(apart) == 1 else 'are'} below it by more than the 95% CI of the difference"
        if apart
        else "",
    ]
    names = list(results)
    close = [
        f"{NAMES.get(a, a)} and {NAMES.get(b, b)} ({100 * abs(results[a]['curve'][-1]['mean'] - results[b]['curve'][-1]['mean']):.2f} "
        f"points apart, CI of the difference {100 * math.hypot(results[a]['curve'][-1]['ci95'], results[b]['curve'][-1]['ci95']):.2f})"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if inside_ci(results[a]["curve"][-1], results[b]["curve"][-1])
    ]
    lines += [
        "",
        f"At the budget, {NAMES.get(best_name, best_name)} scored highest; "
        + "; ".join(v for v in verdicts if v)
        + ". "
        + (
            f"Pairs whose difference is inside the 95% CI of the difference: {'; '.join(close)}; every other "
            "pair differs by more."
            if close
            else "No two algorithms are within the 95% CI of their difference."
        ),
        "",
        "Accuracy against training time (the checkpoint closest to each time point):",
        "",
    ]
    grid = sorted(
        {
            round(p["seconds"] / 60 / args.eval_minutes) * args.eval_minutes
            for r in results.values()
            for p in r["curve"]
            if p["seconds"]
        }
    )
    lines += [
        "| training time | " + " | ".join(NAMES.get(a, a) for a in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for minute in grid:
        cells = []
        for r in results.values():
            near = min(r["curve"], key=lambda p: abs((p["seconds"] or 0) / 60 - minute))
            cells.append(
                f"{100 * near['mean']:.1f}% (step {near['step']})"
                if abs((near["seconds"] or 0) / 60 - minute) <= args.eval_minutes / 2
                else ""
            )
        lines.append(f"| {minute:g} min | " + " | ".join(cells) + " |")
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
