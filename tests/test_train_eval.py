"""The real training loop and maml-eval on tiny settings: in-process and through the console scripts."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from maml_cli.config import UserError
from maml_cli.engine.evaluate import evaluate_run
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.training import NonFiniteLoss, train_and_evaluate
from maml_cli.run.checkpoints import Checkpointer, CheckpointError
from maml_cli.run.metrics import TIMING_FIELDS
from maml_cli.run.records import format_table
from tests.conftest import BIN, TINY, make_cfg, run_command


def _records(run_dir: Path):
    """metrics.jsonl without the wall-clock fields, which differ between runs."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key in TIMING_FIELDS:
            rec.pop(key, None)
        out.append(rec)
    return out


def _params(run_dir: Path, cfg, step=None):
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        state = ckpt.restore(build_experiment(cfg).init_state(), step)
    finally:
        ckpt.close()
    return state


def test_train_writes_a_complete_run_directory(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.keep_checkpoints=1", "train.keep_best=0")
    summary = train_and_evaluate(cfg, tmp_path)
    assert set(summary.last_val) == {"val/mse_pre", "val/mse", "val/mse_step3", "val/diverged_step3"}
    assert summary.step == 20 and f"maml-eval run_dir={tmp_path}" in summary.text()
    assert (tmp_path / "config.yaml").is_file()
    env = json.loads((tmp_path / "environment.json").read_text())["sessions"]
    assert len(env) == 1 and env[0]["versions"]["jax"] == jax.__version__ and env[0]["backend"] == "cpu"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    records = _records(tmp_path)
    assert [r["step"] for r in records if "train/query_loss" in r] == [5, 10, 15, 20]
    assert [r["step"] for r in records if "val/mse" in r] == [10, 20]
    assert [r["step"] for r in records] == [5, 10, 15, 20]  # one record per step
    assert all(np.isfinite(v) for r in records for v in r.values())
    assert Checkpointer(tmp_path / "checkpoints").steps() == [20]  # keep_checkpoints=1
    assert int(_params(tmp_path, cfg).step) == 20


def test_the_best_checkpoints_are_kept_across_sessions_and_scored_as_an_ensemble(tiny_cfg, tmp_path):
    def best(n):
        scores = {r["step"]: r["val/mse_step3"] for r in _records(tmp_path) if "val/mse_step3" in r}
        return sorted(scores, key=lambda s: (scores[s], -s))[:n]

    args = (
        "train.eval_every=5",
        "train.checkpoint_every=5",
        "train.keep_checkpoints=1",
        "train.keep_best=2",
        "model.hidden_sizes=[40,40]",
        "train.outer_lr=0.01",
    )
    train_and_evaluate(tiny_cfg(*args, "train.steps=30"), tmp_path)
    assert set(Checkpointer(tmp_path / "checkpoints").steps()) == {30, *best(2)}
    train_and_evaluate(tiny_cfg(*args, "train.steps=60"), tmp_path)  # a second session ranks the first's too
    kept = set(Checkpointer(tmp_path / "checkpoints").steps())
    assert kept == {60, *best(2)} and len(best(2)) == 2

    app = make_cfg(f"run_dir={tmp_path}", "checkpoint=best:2", "progress=false", config_name="eval")
    record = evaluate_run(app)
    assert record["checkpoints"] == best(2) and record["checkpoint_selection"] == "best:2 by val/mse_step3"
    assert "ensemble of checkpoints" in format_table(record)
    one = evaluate_run(make_cfg(f"run_dir={tmp_path}", "checkpoint=best", "progress=false", config_name="eval"))
    assert one["checkpoints"] == best(1)
    with pytest.raises(UserError, match="needs 5 checkpoints with a validation"):
        evaluate_run(make_cfg(f"run_dir={tmp_path}", "checkpoint=best:5", "progress=false", config_name="eval"))


def test_training_lowers_the_query_loss(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "train.steps=1000",
        "train.meta_batch_size=10",
        "model.hidden_sizes=[40,40]",
        "train.outer_lr=0.003",
        "train.log_every=100",
        "train.eval_every=1000",
        "train.checkpoint_every=1000",
        "train.steps_per_call=100",
    )
    train_and_evaluate(cfg, tmp_path)
    losses = [r["train/query_loss"] for r in _records(tmp_path) if "train/query_loss" in r]
    assert losses[-1] < 0.6 * losses[0]


def test_resume_continues_at_the_right_step_with_identical_results(tiny_cfg, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_and_evaluate(tiny_cfg(), straight)
    train_and_evaluate(tiny_cfg("train.steps=10"), split)
    assert Checkpointer(split / "checkpoints").latest_step() == 10
    train_and_evaluate(tiny_cfg(), split)  # the same command again, longer: resumes from 10
    assert _records(split) == _records(straight)
    a, b = _params(straight, tiny_cfg()), _params(split, tiny_cfg())
    assert int(b.step) == 20
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_crash_after_the_last_checkpoint_loses_nothing(tiny_cfg, tmp_path):
    """Metrics written after the last checkpoint are recomputed on resume, never duplicated."""
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    train_and_evaluate(tiny_cfg(), straight)
    train_and_evaluate(tiny_cfg(), crashed)
    shutil.rmtree(crashed / "checkpoints" / "20")  # as if killed just before the final save
    with open(crashed / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "train/query_lo')  # and mid-write
    train_and_evaluate(tiny_cfg(), crashed)
    assert _records(crashed) == _records(straight)


def test_resume_skips_a_damaged_checkpoint(tiny_cfg, tmp_path, caplog):
    train_and_evaluate(tiny_cfg(), tmp_path)
    for f in (tmp_path / "checkpoints" / "20").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        _params(tmp_path, tiny_cfg(), 20)
    train_and_evaluate(tiny_cfg("train.steps=30"), tmp_path)
    assert "skipping unreadable checkpoint" in caplog.text
    assert int(_params(tmp_path, tiny_cfg(), 30).step) == 30


def test_resume_refuses_a_different_experiment(tiny_cfg, tmp_path):
    train_and_evaluate(tiny_cfg("train.steps=10"), tmp_path)
    with pytest.raises(UserError, match=r"algorithm.inner_lr: 0.01 -> 0.5"):
        train_and_evaluate(tiny_cfg("algorithm.inner_lr=0.5"), tmp_path)


def test_non_finite_loss_stops_with_a_clear_error(tiny_cfg, tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"at step 1; last checkpoint: step None. Lower train.outer_lr"):
        train_and_evaluate(tiny_cfg("algorithm.inner_lr=1e30"), tmp_path)
    assert Checkpointer(tmp_path / "checkpoints").steps() == []  # nothing non-finite was saved


def test_train_then_evaluate_in_process(tiny_cfg, tmp_path):
    train_and_evaluate(tiny_cfg(), tmp_path)
    app = make_cfg(
        f"run_dir={tmp_path}", "eval.episodes=30", "eval.inner_steps=4", "progress=false", config_name="eval"
    )
    record = evaluate_run(app)
    assert not (tmp_path / "eval.json").exists()  # the library writes nothing; maml-eval does
    assert record["metric"] == "mse" and record["episodes"] == 30 and record["checkpoint_step"] == 20
    assert [r["step"] for r in record["per_step"]] == [0, 1, 2, 3, 4]
    assert all(r["ci95"] > 0 for r in record["per_step"])
    assert evaluate_run(app)["per_step"] == record["per_step"]  # fixed eval seed: same tasks, same numbers
    other = evaluate_run(
        make_cfg(
            f"run_dir={tmp_path}",
            "eval.episodes=30",
            "eval.inner_steps=4",
            "eval.seed=1",
            "progress=false",
            config_name="eval",
        )
    )
    assert other["per_step"] != record["per_step"]
    earlier = evaluate_run(make_cfg(f"run_dir={tmp_path}", "checkpoint=10", "progress=false", config_name="eval"))
    assert earlier["checkpoint_step"] == 10 and earlier["episodes"] == 20  # the run's own eval.episodes
    assert "inner step" in format_table(record)


def test_evaluate_reports_bad_input(tiny_cfg, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        evaluate_run(make_cfg(f"run_dir={tmp_path / 'nowhere'}", config_name="eval"))
    with pytest.raises(UserError, match="not a maml-train run directory"):
        evaluate_run(make_cfg(f"run_dir={tmp_path}", config_name="eval"))
    train_and_evaluate(tiny_cfg(), tmp_path)
    with pytest.raises(CheckpointError, match="available: 10, 20"):
        evaluate_run(make_cfg(f"run_dir={tmp_path}", "checkpoint=15", config_name="eval"))
    with pytest.raises(UserError, match="split must be one of"):
        evaluate_run(make_cfg(f"run_dir={tmp_path}", "split=dev", config_name="eval"))


# --- through the installed console scripts --------------------------------------------------------


def test_sweep_gives_each_job_its_own_directory(tmp_path):
    sweep = run_command(
        "maml-train",
        "-m",
        *TINY,
        "train.steps=5",
        "seed=0,1",
        "algorithm.inner_lr=0.001,0.01",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert sweep.returncode == 0, sweep.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        cfg = (job / "config.yaml").read_text()
        seen.add((cfg.count("inner_lr: 0.001"), "seed: 1" in cfg))
        assert Checkpointer(job / "checkpoints").latest_step() == 5
    assert len(seen) == 4


@pytest.mark.parametrize(
    "signum, code",
    # Ctrl-C; a scheduler's warning (SIGTERM, SIGUSR2 alike; every signal at random moments:
    # tests/test_generated_signals.py)
    [(signal.SIGINT, 130), pytest.param(signal.SIGUSR1, 75, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGUSR1"],
)
def test_a_stop_signal_saves_a_checkpoint_and_the_run_resumes(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    args = [
        *TINY,
        "train.steps=100000",
        "train.log_every=100",
        "train.eval_every=100000",
        "train.checkpoint_every=100000",
        "train.steps_per_call=100",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen([str(BIN / "maml-train"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (
        time.time() < deadline
        and not (run_dir / "metrics.jsonl").exists()
        or not (run_dir / "metrics.jsonl").read_text().strip()
    ):
        time.sleep(0.2)
        assert proc.poll() is None and time.time() < deadline
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "checkpoint saved" in err
    stopped_at = Checkpointer(run_dir / "checkpoints").latest_step()
    assert stopped_at and stopped_at % 100 == 0 and stopped_at < 100000
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) <= stopped_at
    resumed = run_command(
        "maml-train",
        *args[:-5],
        f"train.steps={stopped_at + 100}",
        "train.log_every=100",
        "train.eval_every=100000",
        "train.checkpoint_every=100000",
        "train.steps_per_call=100",
        f"hydra.run.dir={run_dir}",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} from step {stopped_at}" in resumed.stderr
    assert Checkpointer(run_dir / "checkpoints").latest_step() == stopped_at + 100


def test_second_run_reuses_the_persistent_compilation_cache(tmp_path):
    cache = tmp_path / "jax-cache"
    env = dict(os.environ, MAML_CLI_COMPILE_CACHE=str(cache))
    first = run_command("maml-train", *TINY, f"hydra.run.dir={tmp_path / 'a'}", env=env)
    assert first.returncode == 0, first.stderr
    entries = list(cache.iterdir())
    assert entries, "nothing was written to the compilation cache"
    off = dict(os.environ, MAML_CLI_COMPILE_CACHE="off")
    assert run_command("maml-train", *TINY, f"hydra.run.dir={tmp_path / 'b'}", env=off).returncode == 0
    assert sorted(cache.iterdir()) == sorted(entries)  # "off" neither reads nor writes it


# --- the family: every algorithm through the real loop and the console scripts ---------------------

ALGORITHMS = ("maml", "fomaml", "anil", "metasgd", "mamlpp", "reptile")


@pytest.fixture(scope="module")
def omniglot_src(tmp_path_factory):
    from tests.omniglot_fakes import fake_sets, write_npz

    return write_npz(tmp_path_factory.mktemp("omniglot"), fake_sets())


@pytest.mark.slow  # 90 s; the shell path is the same for every algorithm (tested with MAML by default)
def test_every_algorithm_trains_resumes_and_evaluates_from_the_shell(tmp_path):
    """One sweep over the family (one process, so JAX starts once): each job stops on a time limit
    with a checkpoint, the same sweep again resumes every job, and maml-eval scores each."""
    sweep = ["-m", *TINY, f"algorithm={','.join(ALGORITHMS)}", f"hydra.sweep.dir={tmp_path}"]
    first = run_command("maml-train", *sweep, "train.time_limit_minutes=1e-6", timeout=600)
    assert first.returncode == 0, first.stderr
    jobs = [tmp_path / str(i) for i in range(len(ALGORITHMS))]
    assert [Checkpointer(job / "checkpoints").latest_step() for job in jobs] == [5] * len(ALGORITHMS)
    resumed = run_command("maml-train", *sweep, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert len(re.findall(r"resuming \S+ from step 5", resumed.stderr)) == len(ALGORITHMS)
    ev = run_command(
        "maml-eval",
        "-m",
        f"run_dir={','.join(map(str, jobs))}",
        "eval.episodes=10",
        "progress=false",
        f"hydra.sweep.dir={tmp_path / 'eval'}",
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr
    for algorithm, job in zip(ALGORITHMS, jobs):
        record = json.loads((job / "eval.json").read_text())
        assert record["algorithm"] == algorithm and record["checkpoint_step"] == 20
        assert record["algorithm_settings"]["name"] == algorithm
        assert all(np.isfinite(r["mean"]) for r in record["per_step"])


@pytest.mark.parametrize("algorithm", [pytest.param("mamlpp", marks=pytest.mark.slow), "reptile"])
def test_resumed_runs_of_stateful_algorithms_are_identical(algorithm, omniglot_src, tmp_path):
    """Learned step sizes, per-step running statistics (conv4 with per_step batch norm) and
    Reptile's inner Adam moments are all in the checkpoint: a run cut after its first call ends
    where a straight one does; and MAML++ is scored with the running statistics."""
    running = ["model.bn_eval_stats=running"] if algorithm == "mamlpp" else []

    def cfg(*overrides):  # (the plain vmap plan: it compiles faster than CPU's auto plan)
        return make_cfg(
            "experiment=omniglot_tiny",
            f"algorithm={algorithm}",
            *running,
            f"dataset.path={omniglot_src}",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "train.progress=false",
            "train.plots=false",
            "train.task_batching=vmap",
            "train.remat=false",
            "model.conv_impl=lax",
            *overrides,
        )

    straight, split = tmp_path / "straight", tmp_path / "split"
    train_and_evaluate(cfg(), straight)
    train_and_evaluate(cfg("train.time_limit_minutes=1e-6"), split)  # stops after the first call
    assert Checkpointer(split / "checkpoints").latest_step() == 3
    train_and_evaluate(cfg(), split)
    assert _records(split) == _records(straight)
    state = _params(split, cfg())
    for x, y in zip(jax.tree.leaves(_params(straight, cfg())), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    if algorithm == "mamlpp":
        stats = state.meta_state["batch_stats"]["norms_0"]
        assert stats["mean"].shape == (2, 8) and not np.allclose(stats["var"], 1.0)  # per step, and trained
        record = evaluate_run(make_cfg(f"run_dir={split}", "progress=false", config_name="eval"))
        assert record["batch_norm"] == "per_step (running statistics at evaluation)"
        assert record["algorithm_settings"]["learn_inner_lr"] is True


def test_evaluation_tasks_do_not_depend_on_the_batch_size(tiny_cfg, tmp_path):
    train_and_evaluate(tiny_cfg(), tmp_path)
    records = [
        evaluate_run(
            make_cfg(
                f"run_dir={tmp_path}", "eval.episodes=13", f"eval.batch_size={b}", "progress=false", config_name="eval"
            )
        )
        for b in (13, 5, 1)
    ]
    means = [[r["mean"] for r in record["per_step"]] for record in records]
    assert means[1] == pytest.approx(means[0], rel=1e-5) and means[2] == pytest.approx(means[0], rel=1e-5)
    other_seed = evaluate_run(
        make_cfg(f"run_dir={tmp_path}", "eval.episodes=13", "eval.seed=1", "progress=false", config_name="eval")
    )
    assert [r["mean"] for r in other_seed["per_step"]] != pytest.approx(means[0], rel=1e-3)


def test_evaluation_query_shots(omniglot_src, tmp_path):
    cfg = make_cfg(
        "experiment=omniglot_tiny",
        f"dataset.path={omniglot_src}",
        f"dataset.cache_dir={tmp_path / 'c'}",
        "train.progress=false",
        "train.plots=false",
        "train.task_batching=vmap",  # the plain plan: it compiles faster than CPU's auto plan
        "train.remat=false",
        "model.conv_impl=lax",
    )
    train_and_evaluate(cfg, tmp_path / "run")
    default = evaluate_run(make_cfg(f"run_dir={tmp_path / 'run'}", "progress=false", config_name="eval"))
    three = evaluate_run(
        make_cfg(f"run_dir={tmp_path / 'run'}", "eval.query_shots=3", "progress=false", config_name="eval")
    )
    assert (default["query_shots"], three["query_shots"]) == (1, 3)
    assert default["per_step"] != three["per_step"]
    with pytest.raises(UserError, match=r"dataset.shots \+ eval.query_shots = 5, but each Omniglot class has only 4"):
        evaluate_run(make_cfg(f"run_dir={tmp_path / 'run'}", "eval.query_shots=4", config_name="eval"))


def test_time_limit_stops_with_a_checkpoint_and_the_run_continues(tiny_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="maml_cli.engine.training")
    straight, limited = tmp_path / "straight", tmp_path / "limited"
    train_and_evaluate(tiny_cfg(), straight)
    train_and_evaluate(tiny_cfg("train.time_limit_minutes=1e-6"), limited)  # out of time after the first call
    assert "train.time_limit_minutes=1e-06 reached at step 5" in caplog.text
    assert Checkpointer(limited / "checkpoints").latest_step() == 5
    train_and_evaluate(tiny_cfg(), limited)
    assert _records(limited) == _records(straight)
