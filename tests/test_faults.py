"""Real faults on real maml-train processes: SIGKILL at random moments (one of them while a
checkpoint is being written), damaged or deleted checkpoints, two processes on one run directory,
maml-eval during training, a disk that fills up. In each case the result must equal an
uninterrupted run's, bit for bit (same execution plan), or the error must be clear and the
checkpoints already written must stay readable."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.training import train_and_evaluate
from maml_cli.run.checkpoints import Checkpointer, CheckpointError
from maml_cli.run.directory import RunDirError
from maml_cli.run.metrics import TIMING_FIELDS
from tests.conftest import BIN, TINY, make_cfg

# 200 tiny steps with a checkpoint every 10: long enough (seconds) for kills to land anywhere.
ARGS = [
    *TINY,
    "train.steps=200",
    "train.log_every=5",
    "train.eval_every=20",
    "train.checkpoint_every=10",
    "train.steps_per_call=5",
    "train.keep_checkpoints=3",
]


def start_training(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "maml-train"), *ARGS, *extra, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def train_to_end(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    p = start_training(run_dir, *extra)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _records(run_dir: Path) -> list:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def _final_state(run_dir: Path):
    cfg = make_cfg(*ARGS)
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        return ckpt.latest_step(), ckpt.restore(build_experiment(cfg).init_state())
    finally:
        ckpt.close()


def assert_same_result(run_dir: Path, reference: Path) -> None:
    step, state = _final_state(run_dir)
    ref_step, ref_state = _final_state(reference)
    assert step == ref_step == 200
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _records(run_dir) == _records(reference)
    assert [r["step"] for r in _records(run_dir)] == list(range(5, 201, 5))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train_to_end(run_dir)
    return run_dir


def _kill_while_saving(p: subprocess.Popen, checkpoints: Path, timeout: float = 120) -> bool:
    """SIGKILL ``p`` as soon as Orbax's temporary folder of a checkpoint in progress appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        if checkpoints.is_dir() and any("tmp" in q.name for q in checkpoints.iterdir()):
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.0005)
    return False


def _kill_and_resume(run_dir: Path, seed: int, kills: int) -> list:
    """Start, SIGKILL at a random moment, start again with the same command... then finish.
    Returns where each kill landed ("saving", or seconds after start)."""
    rng = random.Random(seed)
    landed = []
    p = start_training(run_dir)
    if _kill_while_saving(p, run_dir / "checkpoints"):
        landed.append("saving")
    for _ in range(kills):
        p = start_training(run_dir)
        delay = rng.uniform(0.5, 8.0)  # startup (imports, config, compile cache) or training
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            landed.append(round(delay, 2))
    train_to_end(run_dir)
    return landed


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_at_random_moments_loses_nothing(seed, reference, tmp_path):
    landed = _kill_and_resume(tmp_path / "run", seed, kills=3)
    assert "saving" in landed, landed  # one kill hit a checkpoint being written
    assert_same_result(tmp_path / "run", reference)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_truncated_or_deleted_newest_checkpoint_loses_nothing(damage, reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    newest = run_dir / "checkpoints" / "200"
    if damage == "deleted":
        shutil.rmtree(newest)
    else:
        for f in newest.rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    resumed = train_to_end(run_dir)
    assert "resuming" in resumed.stderr and "from step 190" in resumed.stderr
    if damage == "truncated":
        assert "skipping unreadable checkpoint" in resumed.stderr
        assert (run_dir / "damaged_checkpoints" / "200").is_dir()
    assert_same_result(run_dir, reference)


def test_a_live_run_directory_is_locked_and_a_dead_lock_is_not(tmp_path):
    run_dir = tmp_path / "run"
    trainer = start_training(run_dir, "train.steps=1000000")
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "20").is_dir():
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.stderr.read()
            time.sleep(0.1)
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        second = subprocess.run(
            [str(BIN / "maml-train"), *ARGS, "train.steps=1000000", "seed=3", f"hydra.run.dir={run_dir}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is being trained by pid {trainer.pid}" in second.stderr
        assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides  # untouched
        # maml-eval while it trains: reads a complete checkpoint each time.
        for _ in range(2):
            ev = subprocess.run(
                [str(BIN / "maml-eval"), f"run_dir={run_dir}", "eval.episodes=10"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ev.returncode == 0, ev.stderr
            assert json.loads((run_dir / "eval.json").read_text())["checkpoint_step"] >= 20
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    # The dead process holds no lock: the same command resumes (and stops at once on its time limit).
    again = train_to_end(run_dir, "train.steps=1000000", "train.time_limit_minutes=0.0001")
    assert "resuming" in again.stderr


def test_a_failed_write_is_a_clear_error_and_earlier_checkpoints_stay_readable(tiny_cfg, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        if step > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(
        CheckpointError,
        match=r"cannot write checkpoint 20 .*No space left on device.*"
        r"\(10\) are intact.*Free some space",
    ):
        train_and_evaluate(tiny_cfg(), tmp_path)
    monkeypatch.undo()
    ckpt = Checkpointer(tmp_path / "checkpoints")
    try:
        assert ckpt.steps() == [10]
        assert int(ckpt.restore(build_experiment(tiny_cfg()).init_state()).step) == 10
    finally:
        ckpt.close()

    from maml_cli.run import metrics

    def read_only(self, step, values):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(metrics.MetricWriter, "write", read_only)
    with pytest.raises(RunDirError, match="cannot write to .*Read-only file system"):
        train_and_evaluate(tiny_cfg(), tmp_path)


def test_a_refused_config_leaves_no_run_directory(tmp_path):
    """Hydra creates the run directory before the job runs; a refused config must not leave it."""
    for args in (["train.steps=-1"], ["+train.stepz=3"], ["-m", "seed=0,1", "train.outer_lr=0,1"]):
        out = subprocess.run(
            [str(BIN / "maml-train"), *TINY, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        assert out.returncode == 2, out.stderr
    assert list(tmp_path.iterdir()) == []
    # A failure inside the job (found after Hydra made the folder) removes the folder too.
    from maml_cli.run.directory import remove_if_not_a_run

    junk = tmp_path / "runs" / "x"
    (junk / ".hydra").mkdir(parents=True)
    (junk / "train.log").write_text("")
    assert remove_if_not_a_run(junk) and not junk.exists()
    real = tmp_path / "runs" / "y"
    (real / "checkpoints").mkdir(parents=True)
    assert not remove_if_not_a_run(real) and real.exists()


_FAST_WRITER = """
import sys, numpy as np
from pathlib import Path
from maml_cli.run.checkpoints import Checkpointer
from maml_cli.run.directory import RunLock
run_dir = Path(sys.argv[1])
lock = RunLock(run_dir).acquire()
ckpt = Checkpointer(run_dir / "checkpoints", keep=2)
for step in range(1, int(sys.argv[2]) + 1):
    ckpt.save(step, {"step": np.int32(step), "w": np.full((64,), step, np.float32)})
    if step == 2:
        print("ready", flush=True)
ckpt.close()
lock.release()
"""


def test_a_reader_beside_a_writer_that_deletes_old_checkpoints_always_reads_a_whole_one(tmp_path):
    """maml-eval's reader while the trainer saves and deletes as fast as it can: every read is one
    complete checkpoint, never an error about a step that vanished while the reader listed them."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", _FAST_WRITER, str(run_dir), "150"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        template = {"step": jax.numpy.int32(0), "w": jax.numpy.zeros((64,), jax.numpy.float32)}
        reads = []
        while writer.poll() is None:
            reader = Checkpointer(run_dir / "checkpoints", read_only=True)
            try:
                state = reader.restore(template)
            finally:
                reader.close()
            assert np.all(state["w"] == state["step"])  # one checkpoint, not parts of two
            reads.append(int(state["step"]))
        assert writer.returncode == 0, writer.stderr.read()
    finally:
        writer.kill()
        writer.wait()
    assert len(reads) >= 10 and reads == sorted(reads), reads
