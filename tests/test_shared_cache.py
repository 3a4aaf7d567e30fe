"""Jobs that start together on one empty ``MAML_CLI_CACHE`` (a sweep's jobs): each builds or waits
for one whole dataset cache and shares the compiled programs, and all train to the same metrics;
a job killed while it builds the cache leaves nothing the others trust."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BIN
from tests.omniglot_fakes import fake_sets, write_zips

JOBS = 4
COMMON = ("train.progress=false", "train.plots=false", "logger=none")
OMNIGLOT = ("experiment=omniglot_tiny",)
FOLDER = (
    "dataset=image_folder",
    "model=conv4",
    "model.filters=8",
    "dataset.image_size=8",
    "dataset.ways=2",
    "dataset.train_classes=2",
    "dataset.val_classes=2",
    "train.steps=4",
    "train.meta_batch_size=2",
    "train.log_every=2",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.steps_per_call=2",
    "eval.val_episodes=4",
    "eval.batch_size=4",
)
TIMING = {"time", "elapsed_s", "train/steps_per_s"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """An Omniglot zip pair and a class-per-folder set big enough that building their caches takes
    a while (noise images decode slowly), so a job can be killed in the middle."""
    root = tmp_path_factory.mktemp("sources")
    write_zips(root / "omniglot", fake_sets(background=20, evaluation=10, drawers=5))
    rng = np.random.default_rng(0)
    for c in range(6):
        folder = root / "folders" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (160, 160), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return root


def start(overrides, run_dir: Path, cache: Path, programs: Path | None = None) -> subprocess.Popen:
    """maml-train with ``MAML_CLI_CACHE=cache``; its compiled programs in ``cache/jax`` (shared by
    the jobs too), or in ``programs``."""
    env = {k: v for k, v in os.environ.items() if k != "MAML_CLI_COMPILE_CACHE"}
    env["MAML_CLI_CACHE"] = str(cache)
    if programs is not None:
        env["MAML_CLI_COMPILE_CACHE"] = str(programs)
    return subprocess.Popen(
        [str(BIN / "maml-train"), *COMMON, *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def dataset_overrides(sources: Path) -> dict:
    return {
        "omniglot": (*OMNIGLOT, f"dataset.path={sources / 'omniglot'}"),
        "folders": (*FOLDER, f"dataset.path={sources / 'folders'}"),
    }


def kill_the_builder(cache: Path, pattern: str, timeout: float = 120) -> int:
    """SIGKILL the job that holds the lock of the cache entry matching ``pattern`` while it builds;
    returns its pid."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for lock in cache.glob(pattern + ".lock"):
            try:
                pid = json.loads(lock.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue  # not written yet
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.002)
    raise AssertionError(f"no job built {pattern} within {timeout} s")


@pytest.mark.slow  # several jobs racing for one cache: minutes; the lock's rules have fast tests above
def test_jobs_that_start_together_share_one_cache_and_train_alike(sources, tmp_path):
    cache = tmp_path / "cache"
    procs = {
        (name, j): start(overrides, tmp_path / f"{name}{j}", cache)
        for name, overrides in dataset_overrides(sources).items()
        for j in range(JOBS)
    }
    for (name, j), proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{name}{j}: {err}"
    for name in ("omniglot", "folders"):
        first = metrics(tmp_path / f"{name}0")
        assert first and all(metrics(tmp_path / f"{name}{j}") == first for j in range(1, JOBS))
    # One whole entry per dataset, and nothing else: no lock, no temporary.
    entries = sorted(p.name for p in cache.iterdir() if p.name != "jax")
    assert len(entries) == 2, entries
    assert entries[0].startswith("image_folder-8px-") and entries[1].startswith("omniglot-28px-")
    assert sorted(p.name for p in (cache / entries[0]).iterdir()) == ["classes.json", "images.npy"]
    assert any((cache / "jax").iterdir())  # the compiled programs, shared too

    # Again on an empty dataset cache, with the job that builds the image_folder cache killed while
    # it writes it (the programs compiled above are reused: only the dataset cache is under test).
    # Omniglot's entry is published by the same code (data/cache.py ``cached``).
    programs, cache = cache / "jax", tmp_path / "cache2"
    overrides = dataset_overrides(sources)["folders"]
    procs = [start(overrides, tmp_path / f"killed{j}", cache, programs) for j in range(JOBS)]
    killed = kill_the_builder(cache, "image_folder-*")
    survivors = 0
    for j, proc in enumerate(procs):
        _, err = proc.communicate(timeout=900)
        if proc.pid == killed:
            assert proc.returncode == -signal.SIGKILL
            continue
        assert proc.returncode == 0, err
        assert metrics(tmp_path / f"killed{j}") == metrics(tmp_path / "folders0")
        survivors += 1
    assert survivors == JOBS - 1
    leftovers = sorted(p.name for p in cache.iterdir())
    assert len(leftovers) == 1 and not any(".tmp" in n or n.endswith(".lock") for n in leftovers), leftovers
