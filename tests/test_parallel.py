"""Several devices (simulated CPU devices, in subprocesses: their number is fixed when JAX starts)
and several processes (jax.distributed over localhost): the same numbers as one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from maml_cli.backend import plan, processes
from maml_cli.backend.plan import Execution
from maml_cli.backend.processes import MAX_CPU_DEVICES, host_cores
from maml_cli.data.episodes import task_part
from maml_cli.data.sinusoid import SinusoidTasks
from tests.conftest import BIN, REPO, TEST_XLA_FLAGS, TINY, make_cfg, run_command
from tests.omniglot_fakes import fake_sets, write_npz

TOL = 1e-5  # float reassociation of a mean split over devices


def simulated(devices: int) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}".strip()
    return {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": str(REPO)}


def _worker(*args, timeout=600):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.parallel_worker", *map(str, args)],
        cwd=REPO,
        env=simulated(4),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_each_part_of_a_meta_batch_is_the_same_tasks():
    cfg = make_cfg(*TINY)
    tasks = SinusoidTasks(cfg.dataset)
    key = jax.random.PRNGKey(3)
    whole = tasks.sample(None, key, "train", 8)
    parts = [tasks.sample(None, key, "train", 8, part=(i, 4)) for i in range(4)]
    for name, a in whole._asdict().items():
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]), a)
    assert task_part(np.arange(6), None).tolist() == list(range(6))


def test_classification_parts_draw_only_their_own_tasks():
    from maml_cli.data.episodes import sample_classification_episodes

    images = jax.numpy.asarray(np.random.RandomState(0).randint(0, 255, (12, 6, 4, 4, 1)).astype(np.uint8))
    kw = {"ways": 3, "shots": 1, "query_shots": 2}
    whole = sample_classification_episodes(images, jax.numpy.arange(12), jax.random.PRNGKey(0), 6, **kw)
    part = sample_classification_episodes(images, jax.numpy.arange(12), jax.random.PRNGKey(0), 6, part=(1, 3), **kw)
    np.testing.assert_array_equal(part.query_x, whole.query_x[2:4])
    np.testing.assert_array_equal(part.support_y, whole.support_y[2:4])


def test_sharded_outer_step_and_evaluation_equal_one_device():
    """MAML on 2 and 4 simulated devices, first-order MAML and Reptile on 2: the meta-gradient, the metrics, the
    parameters after 3 steps and the evaluation scores are the single-device ones; without the
    parameters marked as varying, they are not (the test would catch that bug)."""
    gaps = _worker()
    assert gaps["device_count"] == 4
    for name in ("maml/2", "maml/4", "fomaml/2", "reptile/2"):
        assert max(gaps[name].values()) < TOL, (name, gaps[name])
    assert gaps["maml/2 without pcast"]["params"] > 1e-3


@pytest.mark.slow  # 2 min: conv4 compiles for 1 and 2 devices
def test_sharded_conv4_with_per_step_batch_norm_equals_one_device(tmp_path):
    from tests.omniglot_fakes import fake_sets, write_npz

    gaps = _worker(write_npz(tmp_path / "omniglot", fake_sets()))
    assert max(gaps["mamlpp_conv4/2"].values()) < TOL, gaps["mamlpp_conv4/2"]


def _last(run_dir: Path) -> dict:
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {k: v for k, v in row.items() if k.startswith(("train/query", "train/grad", "val/"))}


def _close(a: dict, b: dict, rtol=1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rtol, abs=1e-6), k


@pytest.mark.slow  # the whole command on two devices; the sharded step's equality is tested in-process
def test_maml_train_on_two_devices_ends_with_the_one_device_metrics(tmp_path):
    args = [*TINY, "train.meta_batch_size=8"]
    one = run_command("maml-train", *args, "train.devices=1", f"hydra.run.dir={tmp_path / 'one'}", env=simulated(2))
    two = run_command("maml-train", *args, f"hydra.run.dir={tmp_path / 'two'}", env=simulated(2))  # devices=auto
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert "(1 device)" in one.stderr
    assert "2 devices, meta-batch sharded over a 'tasks' mesh axis" in two.stderr
    _close(_last(tmp_path / "one"), _last(tmp_path / "two"))
    # maml-eval shards the episodes too, whatever the run was trained on.
    scores = []
    for devices in (1, 2):
        ev = run_command(
            "maml-eval",
            f"run_dir={tmp_path / 'one'}",
            "eval.episodes=10",
            "eval.batch_size=5",
            f"devices={devices}",
            "progress=false",
            env=simulated(2),
        )
        assert ev.returncode == 0, ev.stderr
        scores.append(json.loads((tmp_path / "one" / "eval.json").read_text())["per_step"])
    assert [r["mean"] for r in scores[0]] == pytest.approx([r["mean"] for r in scores[1]], rel=1e-5)


def test_a_meta_batch_that_does_not_split_is_refused_before_compiling(tmp_path):
    run = tmp_path / "run"
    bad = run_command("maml-train", *TINY, "train.meta_batch_size=5", f"hydra.run.dir={run}", env=simulated(2))
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "maml-train: error: train.meta_batch_size=5 does not split evenly over 2 devices (train.devices=auto): "
        "use a meta-batch that is a multiple of 2 (e.g. 6) or train.devices=1"
    )
    assert not run.exists()
    many = run_command("maml-train", *TINY, "train.devices=3", f"hydra.run.dir={run}", env=simulated(2))
    assert many.returncode == 2 and "train.devices=3, but 2 device(s) are available" in many.stderr


def _cores_env(**extra) -> dict:
    """The environment of a plain shell: no forced device count, maml-cli's own CPU devices."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MAML_CLI_CPU_DEVICES")}
    return {**env, **extra}


@pytest.mark.skipif(host_cores() < 2, reason="one core: maml-cli makes no extra CPU devices")
def test_console_scripts_spread_a_conv_meta_batch_over_the_cores(tmp_path):
    """maml-train starts JAX with one CPU device per core; auto spreads a conv4 meta-batch over as
    many as split it, keeps a dense model on one, and MAML_CLI_CPU_DEVICES=1 turns it off."""
    cores = min(host_cores(), MAX_CPU_DEVICES)
    write_npz(tmp_path / "omniglot", fake_sets(background=10, evaluation=8, drawers=4))
    conv = [
        "experiment=omniglot_tiny",
        f"dataset.path={tmp_path / 'omniglot'}",
        f"dataset.cache_dir={tmp_path / 'c'}",
        "dataset.train_classes=12",
        "dataset.val_classes=4",
        "train.dry_run=true",
    ]

    def plan_line(*args, **env):
        out = run_command("maml-train", *args, env=_cores_env(**env))
        assert out.returncode == 0, out.stderr
        return next(line for line in out.stdout.splitlines() if line.startswith("# plan:"))

    assert f"({cores} CPU devices, one per core, meta-batch sharded" in plan_line(
        *conv, f"train.meta_batch_size={2 * cores}"
    )
    # A meta-batch that the cores do not split: as many devices as split it (here one), no error.
    assert f"(1 device of {cores}, one per core)" in plan_line(*conv, f"train.meta_batch_size={2 * cores + 1}")
    assert f"(1 device of {cores}, one per core)" in plan_line(
        *TINY, "train.dry_run=true"
    )  # sinusoid: vmap, one device
    assert "(1 device)" in plan_line(*conv, MAML_CLI_CPU_DEVICES="1")
    # Devices forced by XLA_FLAGS are the user's: auto takes them all, as on GPUs.
    three = f"--xla_force_host_platform_device_count=3 {TEST_XLA_FLAGS}"
    forced = plan_line(*conv, "train.meta_batch_size=6", XLA_FLAGS=three)
    assert "(3 devices, meta-batch sharded" in forced
    bad = run_command("maml-train", *TINY, env=_cores_env(MAML_CLI_CPU_DEVICES="many"))
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "maml-train: error: MAML_CLI_CPU_DEVICES must be auto or a number >= 1 (got 'many')"
    )


def test_auto_devices_follow_the_plan(monkeypatch):
    """What train.devices=auto resolves to, with and without maml-cli's CPU devices."""
    monkeypatch.setattr(processes, "_cores_are_devices", True)
    per_task, batched = Execution("map", True, "im2col"), Execution("vmap", False, None)
    assert plan.auto_devices(per_task, 4, 32) == 4
    assert plan.auto_devices(per_task, 4, 6) == 3  # the most devices that split the meta-batch evenly
    assert plan.auto_devices(per_task, 4, None) == 4  # evaluation pads its batches
    assert plan.auto_devices(batched, 4, 32) == 1
    monkeypatch.setattr(processes, "_cores_are_devices", False)  # GPUs, or devices forced by XLA_FLAGS: all
    assert plan.auto_devices(per_task, 4, 6) == 4
    assert plan.auto_devices(batched, 4, 32) == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(run_dir: Path, *args, timeout=300) -> list:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                str(BIN / "maml-train"),
                *args,
                f"hydra.run.dir={run_dir}",
                f"distributed.coordinator=localhost:{port}",
                "distributed.num_processes=2",
                f"distributed.process_id={i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + timeout
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, err))
    return outs


@pytest.mark.slow  # two JAX processes joined by a coordinator; one process's sharding has fast tests
def test_two_processes_train_like_one_and_resume(tmp_path):
    """jax.distributed over localhost with CPU collectives (gloo): two processes of one device each
    split every meta-batch, match a single-process run, write the run directory once (process 0),
    and resume from their checkpoint."""
    args = [*TINY, "train.meta_batch_size=8"]
    single = run_command("maml-train", *args, "train.steps=30", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr
    run = tmp_path / "two"
    first = _two_processes(run, *args, "train.steps=20")
    assert [code for code, _ in first] == [0, 0], first
    assert "2 devices in 2 processes" in first[0][1]
    assert "== maml-train done" in first[0][1] and "== maml-train" not in first[1][1]  # summary once
    log = (run / "train.log").read_text()
    assert log.count("compiling the outer step") == 1  # process 1 logs to its stderr only
    second = _two_processes(run, *args, "train.steps=30")
    assert [code for code, _ in second] == [0, 0], second
    assert all("from step 20" in err for _, err in second)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    _close(_last(tmp_path / "single"), _last(run))


def test_distributed_settings_are_checked(tmp_path):
    for args, message in [
        (["distributed.coordinator=nohost"], "distributed.coordinator must be HOST:PORT (got 'nohost')"),
        (["distributed.process_id=1"], "distributed.num_processes and distributed.process_id need"),
        (
            ["distributed.coordinator=localhost:1234", "distributed.num_processes=2", "distributed.process_id=2"],
            "distributed.process_id must be in 0..1 (got 2)",
        ),
        (
            ["distributed.coordinator=localhost:1234", "distributed.num_processes=2", "distributed.process_id=0"],
            "a run over several processes needs hydra.run.dir=DIR",
        ),
    ]:
        bad = run_command("maml-train", *TINY, *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
