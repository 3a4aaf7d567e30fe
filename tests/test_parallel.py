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

from maml_cli.data.episodes import task_part
from maml_cli.data.sinusoid import SinusoidTasks
from tests.conftest import REPO, TINY, make_cfg

BIN = Path(sys.executable).parent
TOL = 1e-5  # float reassociation of a mean split over devices


def simulated(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "PYTHONPATH": str(REPO)}


def _worker(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "tests.parallel_worker", *map(str, args)], cwd=REPO,
                          env=simulated(4), capture_output=True, text=True, timeout=timeout)
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
    kw = dict(ways=3, shots=1, query_shots=2)
    whole = sample_classification_episodes(images, jax.numpy.arange(12), jax.random.PRNGKey(0), 6, **kw)
    part = sample_classification_episodes(images, jax.numpy.arange(12), jax.random.PRNGKey(0), 6, part=(1, 3), **kw)
    np.testing.assert_array_equal(part.query_x, whole.query_x[2:4])
    np.testing.assert_array_equal(part.support_y, whole.support_y[2:4])


def test_sharded_outer_step_and_evaluation_equal_one_device():
    """MAML on 2 and 4 simulated devices, first-order MAML on 2: the meta-gradient, the metrics, the
    parameters after 3 steps and the evaluation scores are the single-device ones; without the
    parameters marked as varying, they are not (the test would catch that bug)."""
    gaps = _worker()
    assert gaps["device_count"] == 4
    for name in ("maml/2", "maml/4", "fomaml/2"):
        assert max(gaps[name].values()) < TOL, (name, gaps[name])
    assert gaps["maml/2 without pcast"]["params"] > 1e-3


@pytest.mark.slow  # 2 min: conv4 compiles for 1 and 2 devices
def test_sharded_conv4_with_per_step_batch_norm_equals_one_device(tmp_path):
    from tests.omniglot_fakes import fake_sets, write_npz

    gaps = _worker(write_npz(tmp_path / "omniglot", fake_sets()))
    assert max(gaps["mamlpp_conv4/2"].values()) < TOL, gaps["mamlpp_conv4/2"]


def _run(*args, env=None, timeout=300):
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _last(run_dir: Path) -> dict:
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {k: v for k, v in row.items() if k.startswith(("train/query", "train/grad", "val/"))}


def _close(a: dict, b: dict, rtol=1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rtol, abs=1e-6), k


def test_maml_train_on_two_devices_ends_with_the_one_device_metrics(tmp_path):
    args = [*TINY, "train.meta_batch_size=8"]
    one = _run("maml-train", *args, "train.devices=1", f"hydra.run.dir={tmp_path / 'one'}", env=simulated(2))
    two = _run("maml-train", *args, f"hydra.run.dir={tmp_path / 'two'}", env=simulated(2))  # devices=auto
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert "(1 device)" in one.stderr
    assert "2 devices, meta-batch sharded over a 'tasks' mesh axis" in two.stderr
    _close(_last(tmp_path / "one"), _last(tmp_path / "two"))
    # maml-eval shards the episodes too, whatever the run was trained on.
    scores = []
    for devices in (1, 2):
        ev = _run("maml-eval", f"run_dir={tmp_path / 'one'}", "eval.episodes=10", "eval.batch_size=5",
                  f"devices={devices}", "progress=false", env=simulated(2))
        assert ev.returncode == 0, ev.stderr
        scores.append(json.loads((tmp_path / "one" / "eval.json").read_text())["per_step"])
    assert [r["mean"] for r in scores[0]] == pytest.approx([r["mean"] for r in scores[1]], rel=1e-5)


def test_a_meta_batch_that_does_not_split_is_refused_before_compiling(tmp_path):
    run = tmp_path / "run"
    bad = _run("maml-train", *TINY, "train.meta_batch_size=5", f"hydra.run.dir={run}", env=simulated(2))
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "maml-train: error: train.meta_batch_size=5 does not split evenly over 2 devices (train.devices=auto): "
        "use a meta-batch that is a multiple of 2 (e.g. 6) or train.devices=1")
    assert not run.exists()
    many = _run("maml-train", *TINY, "train.devices=3", f"hydra.run.dir={run}", env=simulated(2))
    assert many.returncode == 2 and "train.devices=3, but 2 device(s) are available" in many.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(run_dir: Path, *args, timeout=300) -> list:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([str(BIN / "maml-train"), *args, f"hydra.run.dir={run_dir}",
                               f"distributed.coordinator=localhost:{port}", "distributed.num_processes=2",
                               f"distributed.process_id={i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
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


def test_two_processes_train_like_one_and_resume(tmp_path):
    """jax.distributed over localhost with CPU collectives (gloo): two processes of one device each
    split every meta-batch, match a single-process run, write the run directory once (process 0),
    and resume from their checkpoint."""
    args = [*TINY, "train.meta_batch_size=8"]
    single = _run("maml-train", *args, "train.steps=30", f"hydra.run.dir={tmp_path / 'single'}")
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
        (["distributed.coordinator=localhost:1234", "distributed.num_processes=2", "distributed.process_id=2"],
         "distributed.process_id must be in 0..1 (got 2)"),
        (["distributed.coordinator=localhost:1234", "distributed.num_processes=2", "distributed.process_id=0"],
         "a run over several processes needs hydra.run.dir=DIR"),
    ]:
        bad = _run("maml-train", *TINY, *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
