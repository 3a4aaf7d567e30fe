"""Sweeps at scale through Hydra's own plugins (the ``[cluster]`` extra): joblib's parallel local
jobs, submitit (its local executor standing in for SLURM), Optuna; one failing job never stops
the others; maml-report over the result."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time

import pytest
from omegaconf import OmegaConf

from maml_cli.commands.train import APP
from maml_cli.config import UserError, composing
from tests.conftest import BIN, TINY, run_command, run_in_process

for plugin in (
    "hydra_plugins.hydra_joblib_launcher",
    "hydra_plugins.hydra_submitit_launcher",
    "hydra_plugins.hydra_optuna_sweeper",
):
    pytest.importorskip(plugin, reason='the [cluster] extra is not installed (pip install -e ".[cluster]")')


def _composed(*overrides):
    [cfg] = composing.compose_checked(APP, list(overrides), multirun=True)
    return cfg


def test_launcher_and_search_presets_compose_and_validate():
    slurm = _composed(
        "launcher=slurm",
        "experiment=omniglot_5w1s",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.partition=gpu",
    )
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.timeout_min, launcher.gpus_per_node, launcher.partition) == (30, 4, "gpu")
    assert _composed("launcher=submitit_local").hydra.launcher._target_.endswith("LocalLauncher")
    assert _composed("launcher=joblib").hydra.launcher._target_.endswith("JoblibLauncher")
    # The direction follows the dataset's metric: accuracy up, mse down.
    for experiment, direction in (("omniglot_5w1s", "maximize"), ("sinusoid_paper", "minimize")):
        sweeper = _composed("search=optuna", f"experiment={experiment}").hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper")
        assert OmegaConf.to_container(sweeper, resolve=True)["direction"] == direction
        assert set(sweeper.params) == {"algorithm.inner_lr", "train.outer_lr"}


def test_a_missing_plugin_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(APP.plugins, "launcher=joblib", ("hydra_plugins.not_installed", "hydra-joblib-launcher"))
    with pytest.raises(
        UserError,
        match=r"launcher=joblib needs Hydra's plugin hydra-joblib-launcher.*"
        r"pip install \"maml-cli\[cluster\]\"",
    ):
        composing.compose_checked(APP, ["launcher=joblib"], multirun=True)
    with pytest.raises(UserError, match="unknown launcher option 'slrum' \\(did you mean slurm\\?\\)"):
        composing.compose_checked(APP, ["launcher=slrum"], multirun=True)


def test_joblib_sweep_with_a_failing_job_then_maml_report(tmp_path):
    """Four jobs in two parallel processes; the two with a diverging step size fail, the others
    finish; the sweep exits 1 naming the failure; each error stays in its job's train.log; the
    report groups the two seeds that finished and lists the failed jobs."""
    sweep = tmp_path / "sweep"
    run = run_command(
        "maml-train",
        "-m",
        "launcher=joblib",
        *TINY,
        "algorithm.inner_lr=1e9,0.01",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert run.returncode == 1, run.stderr
    assert "meta-training loss is inf" in run.stderr and "Traceback" not in run.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    failed = [j for j in jobs if "[ERROR] meta-training loss is inf" in (j / "train.log").read_text()]
    assert len(failed) == 2
    for job in set(jobs) - set(failed):
        assert '"step": 20' in (job / "metrics.jsonl").read_text().splitlines()[-1]
    report = run_in_process("maml-report", str(sweep))
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader((sweep / "report.csv").open()))  # one row per run
    assert sorted(r["status"] for r in rows) == ["done", "done", "failed", "failed"], rows
    assert {r["group"] for r in rows if r["status"] == "done"} == {"algorithm.inner_lr=0.01"}
    table = (sweep / "report.md").read_text()
    assert "| `algorithm.inner_lr=0.01` | 2 | done |" in table  # the two seeds, as one group
    assert (sweep / "report.png").stat().st_size > 0


@pytest.mark.slow  # submitit's own processes, preempted and requeued: a minute and more
def test_submitit_local_sweep_jobs_are_preempted_requeued_and_resumed(tmp_path):
    """The SLURM launcher's code path, with submitit's local executor standing in for the cluster:
    a job sent SIGUSR1 (SLURM's warning before a preemption, with --signal) and one sent SIGTERM (the
    preemption itself) each save a checkpoint, are requeued by submitit and resume in their own
    folders; the same command started again finds both done."""
    sweep = tmp_path / "sweep"
    long = [
        "train.steps=200000",
        "train.steps_per_call=100",
        "train.log_every=50000",
        "train.eval_every=50000",
        "train.checkpoint_every=50000",
    ]
    command = [
        str(BIN / "maml-train"),
        "-m",
        "launcher=submitit_local",
        *TINY,
        *long,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = {}
    deadline = time.time() + 240
    while len(sent) < 2 and time.time() < deadline and proc.poll() is None:
        for job, signum in (("0", signal.SIGUSR1), ("1", signal.SIGTERM)):
            metrics = sweep / job / "metrics.jsonl"
            if job not in sent and metrics.is_file() and metrics.read_text().strip():  # training, compiled
                os.kill(json.loads((sweep / job / ".lock").read_text())["pid"], signum)
                sent[job] = signum
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert len(sent) == 2, f"the jobs ended before they could be signalled: {err}"
    for job, signum in sent.items():
        log = (sweep / job / "train.log").read_text()
        stopped = re.search(rf"stopped at step (\d+) by {signal.Signals(signum).name}", log)
        assert stopped, log
        step = int(stopped.group(1))
        assert 0 < step < 200000
        assert "asking submitit to requeue this job" in log
        assert f"resuming {sweep / job} from step {step}" in log
        steps = [json.loads(line)["step"] for line in (sweep / job / "metrics.jsonl").read_text().splitlines()]
        assert steps == [50000, 100000, 150000, 200000]  # every logged step once, to the end
    again = run_command("maml-train", *command[1:])
    assert again.returncode == 0, again.stderr
    for job in ("0", "1"):
        assert "already trained to step 200000" in (sweep / job / "train.log").read_text()


def test_optuna_search_goes_on_past_a_failed_trial(tmp_path):
    sweep = tmp_path / "search"
    run = run_command(
        "maml-train",
        "-m",
        "search=optuna",
        *TINY,
        "hydra.sweeper.n_trials=4",
        "algorithm.inner_lr=choice(1e9,0.01)",
        "train.outer_lr=tag(log,interval(0.0001,0.01))",
        f"hydra.sweep.dir={sweep}",
    )
    assert run.returncode == 0, run.stderr
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_params["algorithm.inner_lr"] == 0.01 and 0 < results.best_value < 100
    logs = [(sweep / str(i) / "train.log").read_text() for i in range(4)]
    assert sum("[ERROR]" in log for log in logs) >= 1  # TPE's first trials are random: both values appear
