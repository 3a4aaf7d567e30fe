"""MiniImageNet from files the user provides: both layouts of a synthetic set, errors, the whole path."""

from __future__ import annotations

import numpy as np
import pytest

from maml_cli.config import UserError
from maml_cli.data.fakes import synthetic_miniimagenet as make
from maml_cli.data.miniimagenet import MiniImageNetTasks, class_split, find_images, load_miniimagenet
from maml_cli.engine.evaluate import evaluate_run
from maml_cli.engine.training import train_and_evaluate
from tests.conftest import SHARED_DATA, make_cfg

TINY = [
    "experiment=miniimagenet_5w1s",
    "dataset.query_shots=2",
    "model.filters=4",
    "algorithm.inner_steps=1",
    "train.steps=3",
    "train.log_every=1",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.steps_per_call=1",
    "train.meta_batch_size=2",
    "train.progress=false",
    "train.plots=false",
    "eval.inner_steps=1",
    "eval.episodes=4",
    "eval.val_episodes=2",
    "eval.batch_size=2",
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    return {layout: make(root / layout, layout, images_per_class=4) for layout in ("images", "folders")}


def test_shipped_split_matches_the_published_csvs():
    split = class_split()
    assert [len(split[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert len(set(sum(split.values(), []))) == 100
    folder = SHARED_DATA / "miniimagenet"
    if not (folder / "train.csv").is_file():
        pytest.skip(f"the split CSVs are not in {folder}")
    for name in ("train", "val", "test"):
        labels = {line.split(",")[1] for line in (folder / f"{name}.csv").read_text().splitlines()[1:]}
        assert labels == set(split[name])


@pytest.mark.parametrize("layout", ["images", "folders"])
def test_both_layouts_ingest_to_the_same_cache_shape(synthetic, layout, tmp_path):
    images = load_miniimagenet(str(synthetic[layout]), cache_dir=str(tmp_path))
    assert images.shape == (100, 4, 84, 84, 3) and images.dtype == np.uint8
    assert isinstance(images, np.memmap)  # one copy in RAM: the cache is memory-mapped
    # classes in split order, each with its own colour: class means differ
    means = images.reshape(100, -1).mean(axis=1)
    assert len(np.unique(np.round(means))) > 50
    again = load_miniimagenet(str(synthetic[layout]), cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again, images)
    assert len(list(tmp_path.glob("*/images.npy"))) == 1


def test_images_are_resized_to_84(tmp_path):
    src = make(tmp_path / "big", "folders", images_per_class=2, size=100)
    assert load_miniimagenet(str(src), cache_dir=str(tmp_path / "c")).shape == (100, 2, 84, 84, 3)


def test_bad_layouts_fail_with_instructions(synthetic, tmp_path):
    with pytest.raises(UserError, match="(?s)needs dataset.path.*cannot be downloaded automatically"):
        MiniImageNetTasks(make_cfg("dataset=miniimagenet").dataset)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither images/ nor train/, val/ and test/"):
        find_images(tmp_path / "empty")
    src = make(tmp_path / "holes", "images", images_per_class=3)
    for f in (src / "images").glob(f"{class_split()['val'][0]}*"):
        f.unlink()
    with pytest.raises(UserError, match="no images for 1 of the 100 classes"):
        find_images(src)
    src = make(tmp_path / "short", "folders", images_per_class=3)
    next((src / "test" / class_split()["test"][0]).glob("*.jpg")).unlink()
    with pytest.raises(UserError, match="do not hold 3 images"):
        find_images(src)
    with pytest.raises(UserError, match="do not hold 600 images"):
        find_images(synthetic["images"], images_per_class=600)
    src = make(tmp_path / "broken", "images", images_per_class=2)
    next((src / "images").glob("*.jpg")).write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="not a readable image"):
        load_miniimagenet(str(src), cache_dir=str(tmp_path / "c2"))
    assert not list((tmp_path / "c2").iterdir())  # no half-written cache, lock or temporary left behind


def test_impossible_shots_fail_before_training(synthetic, tmp_path):
    cfg = make_cfg(
        *TINY, f"dataset.path={synthetic['images']}", f"dataset.cache_dir={tmp_path}", "dataset.query_shots=15"
    )
    with pytest.raises(UserError, match="only 4 examples"):
        train_and_evaluate(cfg, tmp_path / "run")


@pytest.mark.parametrize("layout", ["images", "folders"])
def test_ingest_train_checkpoint_eval(synthetic, layout, tmp_path):
    cfg = make_cfg(*TINY, f"dataset.path={synthetic[layout]}", f"dataset.cache_dir={tmp_path / 'cache'}")
    train_and_evaluate(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
    record = evaluate_run(make_cfg(f"run_dir={tmp_path / 'run'}", "progress=false", config_name="eval"))
    assert record["metric"] == "accuracy" and record["episodes"] == 4 and record["batch_norm"] == "transductive"
    assert record["model"]["downsample"] == "maxpool" and record["model"]["filters"] == 4
