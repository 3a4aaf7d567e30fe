"""maml-report: one table over a sweep (or any folder of run directories).

    maml-report multirun/2026-11-27_10-00-00.000000
    maml-report runs/ --out reports/today

Per run: its overrides, status (done, stopped, training, failed), steps trained, training time, the
last validation metric and, where ``eval.json`` exists, the test metric after each inner step.
Runs that differ only in ``seed`` form a group, reported with the mean and 95% CI across seeds
(1.96 * std / sqrt(n), as for episodes). Rows are sorted by the metric (accuracy: highest first;
MSE: lowest first). Writes ``report.md``, ``report.csv`` and ``report.png`` (the groups'
validation curves) into the folder (or ``--out``). Runs still training or failed are listed as such,
never dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from maml_cli.config.schema import REGRESSION_DATASETS
from maml_cli.metrics import mean_and_ci95, read_jsonl
from maml_cli.run_dir import is_being_trained

EXIT_USER_ERROR = 2


@dataclass
class RunRow:
    path: Path
    overrides: list[str]
    status: str  # done | stopped | training | failed
    steps: int = 0
    train_steps: int | None = None
    minutes: float | None = None
    metric: str | None = None  # mse | accuracy
    val: float | None = None
    test: list[float] = field(default_factory=list)  # after each inner step
    test_ci: float | None = None  # 95% CI over the test tasks of the last inner step
    diverged: int = 0  # test tasks that diverged at the last inner step
    curve: dict[int, float] = field(default_factory=dict)  # step -> validation metric

    common: tuple = ()  # overrides every run of the report shares (left out of group names)

    @property
    def group(self) -> str:
        return (
            " ".join(o for o in self.overrides if o.split("=")[0].lstrip("+") != "seed" and o not in self.common)
            or "(defaults)"
        )


def find_runs(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that a maml-train job wrote into."""
    found = {p.parent for p in root.rglob("config.yaml") if p.parent.name != ".hydra"}
    found |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(root).parts])


def read_run(run_dir: Path) -> RunRow:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) or [] if overrides_file.exists() else []
    overrides = [o for o in overrides if not o.split("=")[0].startswith("hydra.")]
    config = run_dir / "config.yaml"
    if not config.exists():
        return RunRow(run_dir, overrides, "training" if is_being_trained(run_dir) else "failed")
    cfg = yaml.safe_load(config.read_text())
    records = read_jsonl(run_dir / "metrics.jsonl")
    metric = "mse" if cfg["dataset"]["name"] in REGRESSION_DATASETS else "accuracy"
    curve = {r["step"]: r[f"val/{metric}"] for r in records if f"val/{metric}" in r}
    steps = records[-1]["step"] if records else 0
    train_steps = int(cfg["train"]["steps"])
    log = run_dir / "train.log"
    if is_being_trained(run_dir):
        status = "training"
    elif log.exists() and "[ERROR]" in log.read_text(errors="replace"):
        status = "failed"
    else:
        status = "done" if steps >= train_steps else "stopped"
    row = RunRow(
        run_dir,
        overrides,
        status,
        steps,
        train_steps,
        records[-1].get("elapsed_s", 0.0) / 60 if records else None,
        metric,
        curve[max(curve)] if curve else None,
        curve=curve,
    )
    eval_file = run_dir / "eval.json"
    if eval_file.exists():
        per_step = json.loads(eval_file.read_text())["per_step"]
        row.test = [_number(s["mean"]) for s in per_step]
        row.test_ci = _number(per_step[-1]["ci95"])
        row.diverged = int(per_step[-1].get("diverged", 0))
    return row


def _number(value) -> float:
    return float("nan") if value is None else float(value)  # strict JSON writes a non-finite value as null


def mean_ci(values: list[float]):
    mean, ci = mean_and_ci95(values)
    return float(mean), float(ci)


def _fmt(value: float | None, metric: str | None, ci: float | None = None) -> str:
    if value is None:
        return "-"
    scale, unit = (100, "%") if metric == "accuracy" else (1, "")
    text = f"{value * scale:.4g}{unit}"
    return text if ci is None else f"{text} +- {ci * scale:.2g}{unit}"


def summarize(rows: list[RunRow]) -> list[dict]:
    """One line per group (runs differing only in seed), sorted by the validation metric."""
    common = tuple(set.intersection(*[set(r.overrides) for r in rows])) if rows else ()
    groups: dict[str, list[RunRow]] = {}
    for r in rows:
        r.common = common
        groups.setdefault(r.group, []).append(r)
    lines = []
    for name, members in groups.items():
        scored = [r for r in members if r.val is not None]
        metric = next((r.metric for r in members if r.metric), None)
        val = mean_ci([r.val for r in scored]) if scored else (None, None)
        tests = [r.test[-1] for r in members if r.test]
        test = mean_ci(tests) if tests else (None, None)
        task_cis = [r.test_ci for r in members if r.test_ci is not None]
        lines.append(
            {
                "group": name,
                "runs": len(members),
                "seeds_scored": len(scored),
                "metric": metric,
                "status": ", ".join(sorted({r.status for r in members})),
                "steps": "/".join(
                    sorted({f"{r.steps}" + (f" of {r.train_steps}" if r.train_steps else "") for r in members})
                ),
                "minutes": max((r.minutes or 0.0) for r in members),
                "val": val[0],
                "val_ci": val[1] if len(scored) > 1 else None,
                "test_last_step": test[0],
                "test_ci": test[1] if len(tests) > 1 else None,
                # The two conventions papers use: +- the std over seeds (MAML++), or the 95% CI over
                # test tasks (MAML, Meta-SGD; here the mean of the runs' own CIs).
                "test_std_seeds": float(np.std(tests)) if len(tests) > 1 else None,
                "test_ci_tasks": float(np.mean(task_cis)) if task_cis else None,
                "diverged": sum(r.diverged for r in members),
                "test_per_step": [sum(v) / len(v) for v in zip(*[r.test for r in members if r.test])],
                "members": members,
            }
        )

    def best_first(g):
        return (
            g["metric"] or "~",
            g["val"] is None,
            -(g["val"] or 0) if g["metric"] == "accuracy" else (g["val"] or 0),
        )

    return sorted(lines, key=best_first)


def markdown(root: Path, groups: list[dict]) -> str:
    """The report: one table per metric (accuracy and MSE are never ranked together), then the runs."""
    common = [o for o in (groups[0]["members"][0].overrides if groups else []) if o in groups[0]["members"][0].common]
    out = [f"# Sweep report: {root}", "", f"Common to every run: `{' '.join(common) or '(nothing)'}`"]
    metrics = list(dict.fromkeys(g["metric"] for g in groups))
    for metric in metrics:
        name = metric or "no metric yet"
        if len(metrics) > 1:
            out += ["", f"## {name}"]
        out += [
            "",
            f"| group (overrides but seed) | runs | status | steps | minutes | last validation {name} | "
            f"test {name}, last step: mean +- std over seeds | test {name}, last step: +- 95% CI over tasks | "
            f"test {name} after each inner step (mean over seeds) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for g in (g for g in groups if g["metric"] == metric):
            test = ", ".join(_fmt(v, g["metric"]) for v in g["test_per_step"]) or "-"
            flag = f" ! {g['diverged']} diverged task(s)" if g["diverged"] else ""
            seeds = _fmt(g["test_last_step"], g["metric"], g["test_std_seeds"])
            if g["test_last_step"] is not None and g["test_std_seeds"] is None:
                seeds += " (one seed)"
            tasks = "-" if g["test_ci_tasks"] is None else _fmt(g["test_last_step"], g["metric"], g["test_ci_tasks"])
            out.append(
                f"| `{g['group']}` | {g['runs']} | {g['status']} | {g['steps']} | {g['minutes']:.1f} | "
                f"{_fmt(g['val'], g['metric'], g['val_ci'])} | {seeds}{flag} | {tasks} | {test} |"
            )
    out += [
        "",
        "Last validation: the mean over seeds +- the 95% CI over seeds. Test columns: the same mean with "
        "the two +- conventions papers use (MAML++ reports the std over seeds; MAML and Meta-SGD the 95% CI "
        "over test tasks, 1.96 * std / sqrt(tasks)).",
    ]
    out += ["", "Runs:", ""]
    for g in groups:
        for r in g["members"]:
            out.append(
                f"- `{r.path.relative_to(root) if r.path != root else '.'}`: {r.status}, "
                f"{' '.join(o for o in r.overrides if o not in r.common) or '(defaults)'}, step {r.steps}, "
                f"val {_fmt(r.val, r.metric)}"
            )
    return "\n".join(out) + "\n"


def write_csv(path: Path, root: Path, groups: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["run", "group", "overrides", "status", "steps", "train_steps", "minutes", "metric", "val", "test_per_step"]
        )
        for g in groups:
            for r in g["members"]:
                w.writerow(
                    [
                        str(r.path.relative_to(root)) if r.path != root else ".",
                        g["group"],
                        " ".join(r.overrides),
                        r.status,
                        r.steps,
                        r.train_steps,
                        "" if r.minutes is None else round(r.minutes, 3),
                        r.metric or "",
                        "" if r.val is None else r.val,
                        " ".join(f"{v:.6g}" for v in r.test),
                    ]
                )


def plot(path: Path, groups: list[dict]) -> None:
    """The groups' validation curves, one panel per metric."""
    from maml_cli.plots import _pyplot, _save

    plt = _pyplot()
    metrics = [m for m in dict.fromkeys(g["metric"] for g in groups) if m] or [None]
    fig, axes = plt.subplots(1, len(metrics), figsize=(8 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for g in (g for g in groups if g["metric"] == metric):
            curves = [r.curve for r in g["members"] if r.curve]
            if not curves:
                continue
            steps = sorted(set.intersection(*[set(c) for c in curves]))
            ax.plot(
                steps,
                [sum(c[s] for c in curves) / len(curves) for s in steps],
                marker="o",
                markersize=3,
                label=f"{g['group']} (n={len(curves)})",
            )
        ax.set_xlabel("outer step")
        ax.set_ylabel(f"validation {metric or ''} (mean over seeds)")
        if metric == "mse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="maml-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=Path, help="a multirun folder, or any folder holding run directories")
    parser.add_argument("--out", type=Path, help="where report.md/.csv/.png go (default: DIR)")
    args = parser.parse_args(argv)
    root = args.dir
    if not root.is_dir():
        print(f"maml-report: error: {root} is not a directory", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    runs = find_runs(root)
    if not runs:
        print(
            f"maml-report: error: no run directories under {root} (folders maml-train wrote, with "
            "config.yaml or .hydra/)",
            file=sys.stderr,
        )
        sys.exit(EXIT_USER_ERROR)
    groups = summarize([read_run(r) for r in runs])
    out = args.out or root
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(root, groups)
    (out / "report.md").write_text(text)
    write_csv(out / "report.csv", root, groups)
    plot(out / "report.png", groups)
    print(text, end="")
    print(f"wrote {out / 'report.md'}, report.csv, report.png", file=sys.stderr)


if __name__ == "__main__":
    main()
