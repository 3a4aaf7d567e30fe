"""maml-report over a real sweep of 4 jobs (2 settings x 2 seeds), one of them evaluated, plus a
failed job and one still training: one table, groups across seeds, Markdown, CSV and a PNG. Runs
made from Python are grouped by what they compute and show what they were composed from; the
report never writes into a run, and says where it cannot write."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest
import yaml
from omegaconf import OmegaConf

import maml_cli as mc
from maml_cli.commands.report import mean_ci
from maml_cli.run.directory import HYDRA_ONLY, RunLock, remove_if_not_a_run
from tests.conftest import BIN, TINY, make_cfg, run_in_process
from tests.test_generated_numbers import snapshot
from tests.test_run_records import assert_picture


def _run(tool, *args, expect=0):
    """maml-train in its own process (a Hydra app); maml-eval and maml-report run their main here."""
    if tool == "maml-train":
        out = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=600)
    else:
        out = run_in_process(tool, *args)
    assert out.returncode == expect, out.stderr
    return out


def _hydra_job(folder, overrides: list[str], config: dict) -> None:
    """What Hydra writes into a job's folder before the job writes anything of its own."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


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
    _run("maml-eval", f"run_dir={sweep / '0'}")  # the defaults: eval.json, the record the report reads
    job0 = yaml.safe_load((sweep / "0" / ".hydra" / "overrides.yaml").read_text())
    assert "seed=0" in job0 and "algorithm.inner_lr=0.001" in job0
    config0 = yaml.safe_load((sweep / "0" / "config.yaml").read_text())
    other = {**config0, "algorithm": {**config0["algorithm"], "inner_lr": 0.1}}
    failed = sweep / "4"  # a job that failed inside before writing its config.yaml: Hydra's files and the error
    _hydra_job(failed, [o.replace("0.001", "0.1").replace("seed=0", "seed=2") for o in job0], {**other, "seed": 2})
    (failed / "train.log").write_text("[ERROR] something\n")
    training = sweep / "5"  # a job that has just started
    _hydra_job(training, [o.replace("0.001", "0.1").replace("seed=0", "seed=3") for o in job0], {**other, "seed": 3})
    classified = sweep / "6"  # a run scored by accuracy: its own table, never ranked with the MSE runs
    omniglot = OmegaConf.to_container(make_cfg("experiment=omniglot_tiny", "train.steps=10"), resolve=True)
    (classified / ".hydra").mkdir(parents=True)
    (classified / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=omniglot_tiny", "seed=9"]))
    (classified / "config.yaml").write_text(yaml.safe_dump({**omniglot, "seed": 9}))
    (classified / "metrics.jsonl").write_text('{"step": 10, "val/accuracy": 0.5}\n')
    with RunLock(training):
        before = {job: snapshot(job) for job in sweep.iterdir() if job.is_dir()}
        out = _run("maml-report", str(sweep))
        assert {job: snapshot(job) for job in before} == before  # read, never written (the lock too)
    text = out.stdout
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(lines) == 4  # inner_lr 0.001, 0.01 (two seeds each), 0.1 (failed + training), omniglot
    assert (
        "## accuracy" in text and "## mse" in text and "| last validation mse: mean +- 95% CI over seeds (t) |" in text
    )
    assert "Overrides common to every run: `" in text
    # Alone in its table, the omniglot run is named by its choices, not by its every setting.
    assert text.index("## accuracy") < text.index("`dataset.name=omniglot model.name=conv4` | 1 | done |")
    assert text.index("## accuracy") < text.index("## mse")
    assert "`algorithm.inner_lr=0.01` | 2 | done | 10 of 10" in text
    assert "`algorithm.inner_lr=0.1` | 2 | failed, training" in text  # grouped by Hydra's record of their config
    # The evaluated group: one seed scored (no interval over seeds), and its CI over tasks.
    evaluated = next(line for line in lines if "0.001" in line)
    assert evaluated.count("(one seed)") == 1 and evaluated.count(" +- ") == 2
    assert "Student's t, t(0.975, n-1) * std(ddof=1) / sqrt(n)" in text and "1.96 * std / sqrt(tasks)" in text
    assert lines[-1].startswith("| `algorithm.inner_lr=0.1`")  # nothing to sort by: last
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == ["0", "1", "2", "3", "4", "5", "6"]  # each job once
    assert {r["run"]: r["status"] for r in rows}["5"] == "training"
    vals = {}
    for r in rows:
        if r["val"] and r["metric"] == "mse":
            vals.setdefault(r["group"], []).append(float(r["val"]))
    assert all(len(v) == 2 for v in vals.values()) and len(vals) == 2
    # lower MSE first, and the group's mean +- its t interval over seeds is the one printed
    mse_lines = [line for line in lines if "omniglot" not in line]
    order = [line.split("`")[1] for line in mse_lines[:2]]
    assert order == sorted(vals, key=lambda g: sum(vals[g]))
    mean, ci = mean_ci(vals[order[0]])
    assert f"{mean:.4g} +- {ci:.2g}" in mse_lines[0]
    assert len([r for r in rows if r["test_per_step"]]) == 1  # the evaluated job
    assert (sweep / "report.md").read_text() == text
    assert_picture(sweep / "report.png")
    _run("maml-report", str(tmp_path / "nowhere"), expect=2)


TINY_API = ["train.progress=false", "train.plots=false"]


def test_runs_made_from_python_are_grouped_by_config_and_show_what_they_were_composed_from(tmp_path):
    runs = tmp_path / "runs"
    mc.train("sinusoid_tiny", [*TINY_API, "seed=1"], run_dir=runs / "seed1")
    edited = mc.compose("sinusoid_tiny", TINY_API)
    edited.train.steps = 10  # edited after compose: recorded as an override of its own
    mc.train(edited, run_dir=runs / "short")
    recorded = yaml.safe_load((runs / "short" / ".hydra" / "overrides.yaml").read_text())
    assert recorded == ["experiment=sinusoid_tiny", *TINY_API, "train.steps=10"]
    assert mc.compose("sinusoid_tiny", recorded[1:]).train.steps == 10  # what it records composes it again
    mc.train(make_cfg(*TINY, "seed=5"), run_dir=runs / "unknown")  # not from compose: nothing claimed
    assert not (runs / "unknown" / ".hydra").exists()

    done = run_in_process("maml-report", runs)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    # Not "(defaults)" for all: the config tells train.steps=10 from 20; the run made from a config
    # of unknown origin (the same experiment, another seed) shares a row with seed1.
    assert {r.split("`")[1]: r.split("|")[2].strip() for r in rows} == {"train.steps=10": "1", "train.steps=20": "2"}
    assert "`seed1`: done, seed 1, `experiment=sinusoid_tiny train.progress=false train.plots=false seed=1`" in (
        done.stdout
    )
    assert "`unknown`: done, seed 5, `(no overrides recorded)`" in done.stdout

    # A run that fails before training leaves only what Hydra would: still no run.
    failed = tmp_path / "failed"
    with pytest.raises(mc.UserError, match="does not exist"):
        mc.train("omniglot_tiny", [*TINY_API, f"dataset.path={tmp_path / 'no-omniglot'}"], run_dir=failed)
    assert (failed / ".hydra" / "overrides.yaml").is_file()
    assert {p.name for p in failed.iterdir()} <= HYDRA_ONLY
    assert remove_if_not_a_run(failed) and not failed.exists()


def _one_run(folder) -> None:
    folder.mkdir(parents=True)
    config = OmegaConf.to_container(make_cfg(*TINY), resolve=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 20, "elapsed_s": 3.0, "val/mse": 0.5}) + "\n")


def test_a_report_that_cannot_be_written_prints_the_table_and_says_where_to_write_it(tmp_path):
    _one_run(tmp_path / "sweep" / "0")
    out = tmp_path / "out"
    (out / "report.md").mkdir(parents=True)  # in the way: no report.md can be written there
    done = run_in_process("maml-report", tmp_path / "sweep", "--out", out)
    assert done.returncode == 2
    assert "| `(every run)` | 1 | done |" in done.stdout  # the table, all the same
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("maml-report: error: cannot write the report into")
    assert "pass --out DIR" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # nothing else written
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_gets_the_table_and_one_line(tmp_path):
    _one_run(tmp_path / "sweep" / "0")
    (tmp_path / "sweep").chmod(0o555)
    try:
        done = run_in_process("maml-report", tmp_path / "sweep")
    finally:
        (tmp_path / "sweep").chmod(0o755)
    assert done.returncode == 2 and "| `(every run)` |" in done.stdout
    assert done.stderr.count("\n") == 1 and "pass --out DIR" in done.stderr


def test_a_run_folder_is_read_never_written(tmp_path):
    run = tmp_path / "run"
    _one_run(run)
    before = snapshot(run)
    done = run_in_process("maml-report", run)  # the report would go into the run itself
    assert done.returncode == 2 and "| `(every run)` | 1 | done |" in done.stdout
    assert "which maml-report only reads: pass --out DIR" in done.stderr
    assert snapshot(run) == before
    done = run_in_process("maml-report", run, "--out", tmp_path / "reports")
    assert done.returncode == 0, done.stderr
    assert snapshot(run) == before and (tmp_path / "reports" / "report.csv").is_file()
