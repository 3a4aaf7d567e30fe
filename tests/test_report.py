"""maml-report over a real sweep of 4 jobs (2 settings x 2 seeds), one of them evaluated, plus a
failed job and one still training: one table, groups across seeds, Markdown, CSV and a PNG."""

from __future__ import annotations

import csv
import subprocess

from maml_cli.commands.report import mean_ci
from maml_cli.run_dir import RunLock
from tests.conftest import BIN, TINY, run_in_process
from tests.test_run_records import assert_picture


def _run(tool, *args, expect=0):
    """maml-train in its own process (a Hydra app); maml-eval and maml-report run their main here."""
    if tool == "maml-train":
        out = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=600)
    else:
        out = run_in_process(tool, *args)
    assert out.returncode == expect, out.stderr
    return out


def test_report_over_a_sweep_groups_seeds_and_lists_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    swept = _run(
        "maml-train",
        "-m",
        *TINY,
        "train.steps=10",
        "train.eval_every=5",
        "seed=0,1",
        "algorithm.inner_lr=0.001,0.01",
        f"hydra.sweep.dir={sweep}",
    )
    assert "# Sweep report" in swept.stdout and swept.stdout.count("| `algorithm.inner_lr=") == 2  # the end table
    _run("maml-eval", f"run_dir={sweep / '0'}", "eval.episodes=10")
    job0 = (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "seed=0" in job0 and "algorithm.inner_lr=0.001" in job0
    failed = sweep / "4"  # a job that failed inside: Hydra's files and the error
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text(job0.replace("seed=0", "seed=2").replace("0.001", "0.1"))
    (failed / "train.log").write_text("[ERROR] something\n")
    training = sweep / "5"  # a job that has just started
    (training / ".hydra").mkdir(parents=True)
    (training / ".hydra" / "overrides.yaml").write_text(job0.replace("seed=0", "seed=3").replace("0.001", "0.1"))
    classified = sweep / "6"  # a run scored by accuracy: its own table, never ranked with the MSE runs
    (classified / ".hydra").mkdir(parents=True)
    (classified / ".hydra" / "overrides.yaml").write_text(job0.replace("seed=0", "seed=9") + "- dataset=omniglot\n")
    (classified / "config.yaml").write_text("dataset: {name: omniglot}\ntrain: {steps: 10}\n")
    (classified / "metrics.jsonl").write_text('{"step": 10, "val/accuracy": 0.5}\n')
    with RunLock(training):
        out = _run("maml-report", str(sweep))
    text = out.stdout
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(lines) == 4  # inner_lr 0.001, 0.01 (two seeds each), 0.1 (failed + training), omniglot
    assert "## accuracy" in text and "## mse" in text and "| last validation mse |" in text
    assert "Common to every run: `experiment=sinusoid_tiny" in text
    omniglot = "`algorithm.inner_lr=0.001 dataset=omniglot` | 1 | done | 10 of 10 | 0.0 | 50%"
    assert text.index("## accuracy") < text.index(omniglot) < text.index("## mse")
    assert "`algorithm.inner_lr=0.01` | 2 | done | 10 of 10" in text
    assert "`algorithm.inner_lr=0.1` | 2 | failed, training" in text
    # The evaluated group shows both conventions, labelled: one seed scored, and its CI over tasks.
    evaluated = next(line for line in lines if "(one seed)" in line)
    assert evaluated.count(" +- ") == 2 and "std over seeds" in text and "95% CI over tasks" in text
    assert lines[-1].startswith("| `algorithm.inner_lr=0.1`")  # nothing to sort by: last
    vals = {}
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["run"] for r in rows} == {"0", "1", "2", "3", "4", "5", "6"}
    assert {r["run"]: r["status"] for r in rows}["5"] == "training"
    for r in rows:
        if r["val"]:
            vals.setdefault(r["group"], []).append(float(r["val"]))
    vals.pop("algorithm.inner_lr=0.001 dataset=omniglot")
    assert all(len(v) == 2 for v in vals.values())
    # lower MSE first, and the group's mean +- CI is the one printed
    lines = [line for line in lines if "omniglot" not in line]
    order = [line.split("`")[1] for line in lines[:2]]
    assert order == sorted(vals, key=lambda g: sum(vals[g]))
    mean, ci = mean_ci(vals[order[0]])
    assert f"{mean:.4g} +- {ci:.2g}" in lines[0]
    assert len([r for r in rows if r["test_per_step"]]) == 1  # the evaluated job
    assert (sweep / "report.md").read_text() == text
    assert_picture(sweep / "report.png")
    _run("maml-report", str(tmp_path / "nowhere"), expect=2)
