"""The "paper vs here" table: each family member's paper row, reproduced as far as a CPU allows.

Each row trains with the preset of its paper (the full protocol where it fits, else the longest
run that fits in ``--minutes``), scores it as that paper does, and is written beside the paper's
figure into the "paper-vs-here" section of docs/results.md, with the commands, the budget, the
seeds and the +- convention of each side.

    python scripts/reproduce_papers.py                 # every row (about an hour on 2 cores)
    python scripts/reproduce_papers.py --rows sinusoid_maml_k10 omniglot_5w1s_mamlpp --minutes 8
    python scripts/reproduce_papers.py --write-only    # rebuild the table from the runs already there
    python scripts/reproduce_papers.py --rows omniglot_5w1s_maml --extend --minutes 10   # train 10 minutes more

Runs live in --runs (default runs/papers/ROW); a row already scored is skipped, and one whose run
was stopped resumes (the same command). Each maml-train call trains for --minutes more (its
``train.time_limit_minutes``), so ``--extend`` adds to a run; the table gives each run's steps and
total training time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, replace_section, today  # noqa: E402

from maml_cli.run.metrics import read_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = REPO.parent / "shared" / "data" / "omniglot"


@dataclass
class Row:
    name: str
    label: str  # what the table calls it
    train: list[str]  # maml-train overrides
    paper: str  # the paper's figure with its +-
    source: str  # paper, table, row
    paper_pm: str  # what the paper's +- is
    evaluate: list[str] = field(default_factory=list)  # maml-eval overrides
    report_step: int | None = None  # the inner step whose metric is the paper's (None: the last)
    output: str = "eval.json"
    trained_by: str | None = None  # another row's run (same training, other scoring)
    paper_steps: int = 0
    needs_data: bool = False


SINE_SRC = "Li et al. 2017 (Meta-SGD), table 1"
CI_TASKS = "95% CI over test tasks"
ROWS = [
    *[
        Row(
            f"sinusoid_{a}_k{k}",
            f"Sinusoid K={k}, {n}",
            ["experiment=sinusoid_paper", f"algorithm={a}", f"dataset.shots={k}"],
            fig,
            f'{SINE_SRC}, row "{n}"',
            CI_TASKS,
            report_step=1,
            paper_steps=70000,
        )
        for a, n, figs in (
            ("maml", "MAML", ("1.13 +- 0.18", "0.77 +- 0.11", "0.48 +- 0.08")),
            ("metasgd", "Meta-SGD", ("0.90 +- 0.16", "0.53 +- 0.09", "0.31 +- 0.05")),
        )
        for k, fig in zip((5, 10, 20), figs)
    ],
    Row(
        "omniglot_5w1s_maml",
        "Omniglot 5w1s, MAML",
        ["experiment=omniglot_5w1s"],
        "98.7 +- 0.4%",
        'Finn et al. 2017, table 1, row "MAML"',
        CI_TASKS,
        paper_steps=60000,
        needs_data=True,
    ),
    Row(
        "omniglot_5w1s_fomaml",
        "Omniglot 5w1s, first-order MAML",
        ["experiment=omniglot_5w1s", "algorithm=fomaml"],
        "98.3 +- 0.5%",
        'Finn et al. 2017, table 1, row "first order approx."',
        CI_TASKS,
        paper_steps=60000,
        needs_data=True,
    ),
    Row(
        "omniglot_5w1s_anil",
        "Omniglot 5w1s, ANIL",
        ["experiment=omniglot_5w1s", "algorithm=anil"],
        "none (98.7 +- 0.4% is MAML's)",
        "Raghu et al. 2020 report Omniglot 20-way only; MAML's row shown",
        CI_TASKS,
        paper_steps=60000,
        needs_data=True,
    ),
    Row(
        "omniglot_5w1s_metasgd",
        "Omniglot 5w1s, Meta-SGD",
        ["experiment=omniglot_5w1s", "algorithm=metasgd"],
        "99.53 +- 0.26%",
        'Li et al. 2017, classification table, row "Meta-SGD"',
        CI_TASKS,
        paper_steps=60000,
        needs_data=True,
    ),
    Row(
        "omniglot_5w1s_reptile",
        "Omniglot 5w1s, Reptile (transductive)",
        ["experiment=omniglot_5w1s", "algorithm=reptile"],
        "97.68 +- 0.04%",
        'Nichol et al. 2018, Omniglot table, row "Reptile + Transduction"',
        "95% CI (paper; over what, unstated)",
        evaluate=["eval.episodes=1000"],
        paper_steps=100000,
        needs_data=True,
    ),
    Row(
        "omniglot_5w1s_reptile_nt",
        "Omniglot 5w1s, Reptile (not transductive)",
        [],
        "95.39 +- 0.09%",
        'Nichol et al. 2018, Omniglot table, row "Reptile"',
        "95% CI (paper; over what, unstated)",
        evaluate=["eval.episodes=1000", "transductive=false"],
        output="eval_not_transductive.json",
        trained_by="omniglot_5w1s_reptile",
        paper_steps=100000,
        needs_data=True,
    ),
    Row(
        "omniglot_5w1s_mamlpp",
        "Omniglot 5w1s, MAML++ (best:5 ensemble)",
        ["experiment=omniglot_5w1s", "algorithm=mamlpp", "train.eval_every=25", "train.checkpoint_every=25"],
        "99.47 +- 0.05%",
        'Antoniou et al. 2019, Omniglot table, row "MAML++"',
        "std over 3 seeds",
        evaluate=["checkpoint=best:5"],
        paper_steps=50000,
        needs_data=True,
    ),
]


def run(cmd: list, log: Path) -> float:
    tic = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - tic


def train_cmd(row: Row, run_dir: Path, minutes: float) -> list:
    data = [f"dataset.path={DATA}"] if row.needs_data else []
    limit = [] if row.name.startswith("sinusoid") else [f"train.time_limit_minutes={minutes:g}"]
    return ["maml-train", *row.train, *data, *limit, "train.progress=false", f"hydra.run.dir={run_dir}"]


def eval_cmd(row: Row, run_dir: Path) -> list:
    return ["maml-eval", f"run_dir={run_dir}", *row.evaluate, f"output={run_dir / row.output}", "progress=false"]


def trained_steps(run_dir: Path) -> int:
    records = read_jsonl(run_dir / "metrics.jsonl")
    return records[-1]["step"] if records else 0


def result(row: Row, runs: Path, minutes: float) -> dict | None:
    run_dir = (runs / (row.trained_by or row.name)).absolute()
    record_file = run_dir / row.output
    if not record_file.exists():
        return None
    record = json.loads(record_file.read_text())
    per = record["per_step"]
    k = len(per) - 1 if row.report_step is None else row.report_step
    cfg = (run_dir / "config.yaml").read_text()
    seed = next((ln.split(":")[1].strip() for ln in cfg.splitlines() if ln.startswith("seed:")), "?")
    records = read_jsonl(run_dir / "metrics.jsonl")
    elapsed = max((x.get("elapsed_s", 0) for x in records), default=0)
    sessions = len(json.loads((run_dir / "environment.json").read_text())["sessions"])
    metric = record["metric"]
    curve = [(x["step"], x[f"val/{metric}"]) for x in records if x.get(f"val/{metric}") is not None]
    half = next((c for c in curve if c[0] >= curve[-1][0] / 2), None) if curve else None
    return {
        "row": row,
        "record": record,
        "step": per[k],
        "k": k,
        "seed": seed,
        "steps": records[-1]["step"] if records else 0,
        "minutes": elapsed / 60,
        "run_dir": run_dir,
        "sessions": sessions,
        "curve": curve,
        "trend": None if half is None or half == curve[-1] else (half, curve[-1]),
    }


def fmt(r: dict) -> str:
    scale, unit = (100, "%") if r["record"]["metric"] == "accuracy" else (1, "")
    s = r["step"]
    text = (
        f"{s['mean'] * scale:.3f}{unit} +- {s['ci95'] * scale:.3f}{unit}"
        if unit == ""
        else f"{s['mean'] * scale:.2f} +- {s['ci95'] * scale:.2f}{unit}"
    )
    if s.get("diverged"):
        text += f" (! {s['diverged']} diverged; without them {s['mean_without_diverged'] * scale:.3f})"
    return text


def trend(r: dict) -> str:
    """How the validation metric moved over the second half of the run (a run still improving)."""
    if r["trend"] is None:
        return "-"
    (s0, v0), (s1, v1) = r["trend"]
    if r["record"]["metric"] == "accuracy":
        return f"{100 * v0:.1f}% (step {s0:,}) -> {100 * v1:.1f}% (step {s1:,})"
    return f"{v0:.3f} (step {s0:,}) -> {v1:.3f} (step {s1:,})"


def write(results: list[dict], args) -> None:
    lines = [
        "## Paper vs here: the family's paper rows",
        "",
        f"Measured {today()} on {machine()} with `python scripts/reproduce_papers.py` ({args.note or 'see below'};"
        " one seed each, `seed=0`; the runs shared the 2 cores with other work at times). Here, +- is the 95% CI"
        " over test tasks (1.96 * std / sqrt(tasks)); the paper's convention is in its own column. Sinusoid rows are"
        " the full protocol (70,000 outer steps) and report the MSE after 1 inner step, 600 tasks; Omniglot rows"
        " ran as long as `train.time_limit_minutes` allowed and report the preset's test protocol (MAML family: 3"
        " inner steps, 600 tasks; Reptile: 50 steps, 1,000 tasks where the paper uses 10,000; MAML++: 5 steps,"
        " the best-5 ensemble).",
        "",
        "| row | paper | paper's +- | here | outer steps here / paper | training time | validation, half-way -> last "
        "| seed | commands |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_name = {row.name: row for row in ROWS}
    for r in results:
        row = r["row"]
        trained = by_name[row.trained_by] if row.trained_by else row
        run_dir = Path("runs/papers") / trained.name
        train = [a for a in train_cmd(trained, run_dir, args.minutes) if not a.startswith("train.time_limit_minutes")]
        commands = f"`{' '.join(train)}`".replace(str(DATA), "../shared/data/omniglot")
        if not row.name.startswith("sinusoid"):
            commands += f" (stopped by `train.time_limit_minutes`, {r['sessions']} session(s))"
        commands += f"; `{' '.join(eval_cmd(row, run_dir))}`"
        lines.append(
            f"| {row.label} | {row.paper} ({row.source}) | {row.paper_pm} | {fmt(r)} | "
            f"{r['steps']:,} / {row.paper_steps:,} | {r['minutes']:.1f} min | {trend(r)} | {r['seed']} | "
            f"{commands} |"
        )
    figure = curves(results, args.results.parent / "figures" / "paper_rows_omniglot_5w1s.png")
    if figure:
        lines += [
            "",
            f"Learning curves of the Omniglot rows (validation accuracy after the trained inner steps, 200 "
            f"tasks; the legend says how far each run is from its paper's length): "
            f"![curves](figures/{figure.name})",
        ]
    replace_section(args.results, "paper-vs-here", "\n".join(lines))
    print(f"wrote section paper-vs-here of {args.results}")


def curves(results: list[dict], path: Path) -> Path | None:
    """The validation curve of every Omniglot row's run (one line per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for r in results:
        if r["record"]["metric"] == "accuracy" and r["run_dir"] not in runs:
            runs[r["run_dir"]] = r
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs.values():
        points = r["curve"]  # validation accuracy after the trained inner steps
        if points:
            row = r["row"]
            ax.plot(
                *zip(*points),
                marker="o",
                markersize=2,
                label=f"{row.label.split(', ', 1)[1]}: {r['steps']:,} of {row.paper_steps:,} steps",
            )
    ax.set_xlabel("outer step")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=[r.name for r in ROWS], choices=[r.name for r in ROWS])
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "papers")
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget of each Omniglot row")
    ap.add_argument("--results", type=Path, default=REPO / "docs" / "results.md")
    ap.add_argument("--write-only", action="store_true")
    ap.add_argument("--note", default="", help="how the runs were made, for the table's first line")
    ap.add_argument(
        "--extend",
        action="store_true",
        help="train rows already scored for another --minutes too (and score them again)",
    )
    args = ap.parse_args()
    rows = [r for r in ROWS if r.name in args.rows]
    if not args.write_only:
        for row in rows:
            if result(row, args.runs, args.minutes) is not None and not args.extend:
                print(f"{row.name}: already scored (--extend trains it further)", flush=True)
                continue
            run_dir = (args.runs / (row.trained_by or row.name)).absolute()
            run_dir.mkdir(parents=True, exist_ok=True)
            log = run_dir / "reproduce.log"
            if not row.trained_by:
                secs = run(train_cmd(row, run_dir, args.minutes), log)
                print(f"{row.name}: trained to step {trained_steps(run_dir)} ({secs:.0f} s this call)", flush=True)
            secs = run(eval_cmd(row, run_dir), log)
            r = result(row, args.runs, args.minutes)
            print(f"{row.name}: {fmt(r)} (paper {row.paper}); eval {secs:.0f} s", flush=True)
    results = [r for r in (result(row, args.runs, args.minutes) for row in ROWS) if r is not None]
    write(results, args)


if __name__ == "__main__":
    main()
