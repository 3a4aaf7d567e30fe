"""dataset=image_folder (the user's own class folders), cross-domain maml-eval and maml-adapt."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import maml_cli as mc
from maml_cli.config import UserError
from maml_cli.data.image_folder import ImageFolderTasks, find_classes, read_classes
from maml_cli.engine.evaluate import evaluate_run
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.scoring import eval_key
from maml_cli.engine.training import train_and_evaluate
from maml_cli.run.reader import open_run, restore_state
from tests.conftest import TINY, make_cfg, run_in_process
from tests.image_fakes import add_junk, class_image, write_classes, write_modes, write_splits

FOLDER = [
    "dataset=image_folder",
    "model=conv4",
    "model.filters=4",
    "dataset.image_size=8",
    "dataset.ways=3",
    "dataset.query_shots=2",
    "algorithm.inner_lr=0.1",
    "train.meta_batch_size=2",
    "train.steps=4",
    "train.log_every=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.steps_per_call=2",
    "train.progress=false",
    "train.plots=false",
    "eval.val_episodes=4",
    "eval.episodes=6",
    "eval.batch_size=6",
    "eval.inner_steps=2",
    "dataset.train_classes=4",
    "dataset.val_classes=3",
]


def _cfg(tmp_path, root, *extra):
    return make_cfg(*FOLDER, f"dataset.path={root}", f"dataset.cache_dir={tmp_path / 'cache'}", *extra)


# --- reading -----------------------------------------------------------------------------------------


def test_classes_of_different_sizes_give_tasks_only_from_their_own_images(tmp_path):
    counts = [3, 4, 5, 6, 3, 7, 4, 5, 3, 6]
    root = write_classes(tmp_path / "set", counts)
    sampler = ImageFolderTasks(_cfg(tmp_path, root, "dataset.train_classes=4", "dataset.val_classes=3").dataset)
    assert "offsets" in sampler.data and sampler.spec.input_shape == (8, 8, 1)
    episodes = jax.jit(lambda k: sampler.sample(sampler.data, k, "train", 64))(jax.random.PRNGKey(0))
    train = set(sampler.splits["train"].tolist())
    for t in range(64):
        x = np.concatenate([episodes.support_x[t], episodes.query_x[t].reshape(3, 2, 8, 8, 1).reshape(6, 8, 8, 1)])
        y = np.concatenate([episodes.support_y[t], episodes.query_y[t]])
        for label in range(3):
            imgs = np.round(x[y == label] * 255).astype(int)
            classes = {
                (int(im[0, 0, 0]) - 10) // 7 if im[0, 0, 0] != 255 else (int(im[1, 1, 0]) - 10) // 7 for im in imgs
            }
            assert len(classes) == 1  # one class per label
            c = classes.pop()
            name_index = sampler.class_names.index(f"class{c:02d}")
            assert name_index in train
            places = [int(np.flatnonzero(im[..., 0].ravel() == 255)[0]) for im in imgs]
            assert len(set(places)) == len(places)  # distinct images: support and query never share one
            assert max(places) < counts[c]  # only images the class holds


def test_classes_of_equal_size_use_the_dense_layout(tmp_path):
    sampler = ImageFolderTasks(_cfg(tmp_path, write_classes(tmp_path / "set", [4] * 10)).dataset)
    assert "offsets" not in sampler.data and sampler.data["images"].shape == (10, 4, 8, 8, 1)


def test_the_cache_is_reused_and_read_again_when_the_folder_changes(tmp_path):
    root = write_classes(tmp_path / "set", [3, 3, 4])
    classes = {f.name: sorted(f.iterdir()) for f in sorted(root.iterdir())}
    first = read_classes(classes, image_size=8, cache_dir=tmp_path / "cache")
    again = read_classes(classes, image_size=8, cache_dir=tmp_path / "cache")
    assert again.cache_file == first.cache_file and isinstance(again.images, np.memmap)
    Image.fromarray(class_image(2, 9, 8)).save(root / "class02" / "09.png")  # one more image
    classes = {f.name: sorted(f.iterdir()) for f in sorted(root.iterdir())}
    grown = read_classes(classes, image_size=8, cache_dir=tmp_path / "cache")
    assert grown.cache_file != first.cache_file and grown.counts.tolist() == [3, 3, 5]
    Image.fromarray(class_image(1, 5, 8)).save(root / "class00" / "00.png")  # an image replaced
    changed = read_classes(classes, image_size=8, cache_dir=tmp_path / "cache")
    assert changed.cache_file not in (first.cache_file, grown.cache_file)
    np.testing.assert_array_equal(changed.images[0, ..., 0], class_image(1, 5, 8))
    entries = sorted((tmp_path / "cache").iterdir())  # three whole entries, no lock or temporary left
    assert len(entries) == 3
    assert all(sorted(p.name for p in e.iterdir()) == ["classes.json", "images.npy"] for e in entries)


def test_images_are_resized_and_converted(tmp_path):
    folder = tmp_path / "set" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((30, 50, 3), np.uint8) + 200).save(folder / "wide.jpg")
    Image.fromarray(np.zeros((12, 12), np.uint8) + 50).save(folder / "small.png")
    read = read_classes({"a": sorted(folder.iterdir())}, image_size=16, channels=3, cache_dir=tmp_path / "c")
    assert read.images.shape == (2, 16, 16, 3)
    grey = read_classes(
        {"a": sorted(folder.iterdir())}, image_size=16, channels=1, invert=True, cache_dir=tmp_path / "c"
    )
    assert grey.images.shape == (2, 16, 16, 1) and grey.images[0].max() == 205  # 255 - 50, inverted


def test_bad_folders_are_reported_before_training(tmp_path):
    with pytest.raises(UserError, match="needs dataset.path"):
        ImageFolderTasks(make_cfg(*FOLDER).dataset)
    with pytest.raises(UserError, match="has no class folders"):
        (tmp_path / "flat").mkdir()
        ImageFolderTasks(_cfg(tmp_path, tmp_path / "flat").dataset)
    root = write_splits(tmp_path / "splits", [4, 3, 3], per_class=3)
    (root / "val").rename(root / "validation")
    with pytest.raises(UserError, match="no val/ folder"):
        ImageFolderTasks(_cfg(tmp_path, root, "dataset.layout=splits").dataset)
    with pytest.raises(UserError, match="more than the 6 classes"):
        ImageFolderTasks(
            _cfg(
                tmp_path, write_classes(tmp_path / "six", [3] * 6), "dataset.train_classes=5", "dataset.val_classes=2"
            ).dataset
        )
    with pytest.raises(UserError, match="the val split .* has 0 classes"):
        build_experiment(_cfg(tmp_path, tmp_path / "six", "dataset.train_classes=6", "dataset.val_classes=0"))


# --- training, resuming, scoring ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    ["classes", pytest.param("splits", marks=pytest.mark.slow)],  # splits: its reading is tested in-process above
)
def test_both_layouts_train_resume_and_evaluate(layout, tmp_path):
    root = (
        write_classes(tmp_path / "set", [3, 4, 5, 3, 4, 5, 3, 4, 5, 4])
        if layout == "classes"
        else write_splits(tmp_path / "set", [4, 3, 3], per_class=4)
    )
    run = tmp_path / "run"
    common = [*FOLDER, f"dataset.path={root}", f"dataset.cache_dir={tmp_path / 'cache'}"]
    mc.train(None, [*common, "train.steps=2"], run_dir=run)
    mc.train(None, common, run_dir=run)
    assert "resuming" in (run / "train.log").read_text()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    data = json.loads((run / "data.json").read_text())
    assert data["input_shape"] == [8, 8, 1] and data["classes"]["train"] in (6, 4)
    evaluated = run_in_process("maml-eval", f"run_dir={run}")
    assert evaluated.returncode == 0, evaluated.stderr
    record = json.loads((run / "eval.json").read_text())
    assert record["episodes"] == 6 and not record["data"]["cross_domain"]
    if layout == "splits":
        return
    # Cross-domain: the same run scored on another folder (all its classes are test classes).
    other = write_classes(tmp_path / "other", [4] * 5, prefix="letter")
    cross = run_in_process(
        "maml-eval",
        f"run_dir={run}",
        "dataset=image_folder",
        f"dataset.path={other}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )
    assert cross.returncode == 0, cross.stderr
    record = json.loads((run / "eval_image_folder.json").read_text())
    assert record["data"]["cross_domain"] and str(other) in record["data"]["source"]
    assert record["dataset"]["ways"] == 3 and record["dataset"]["image_size"] == 8  # followed the run
    assert json.loads((run / "eval.json").read_text())["data"]["cross_domain"] is False  # kept
    for key, says in (
        ("dataset.ways=4", "trained on 3-way tasks"),
        ("dataset.channels=3", "do not match"),
        ("dataset.image_size=12", "do not match"),
    ):
        app = make_cfg(f"run_dir={run}", "dataset=image_folder", f"dataset.path={other}", key, config_name="eval")
        with pytest.raises(UserError, match=says):
            evaluate_run(app, given={key.split("=")[0]})


# --- maml-adapt ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image_run")
    root = write_classes(tmp / "set", [4] * 15)
    cfg = make_cfg(
        *FOLDER,
        f"dataset.path={root}",
        f"dataset.cache_dir={tmp / 'cache'}",
        "dataset.ways=5",
        "dataset.train_classes=5",
        "dataset.val_classes=5",
    )
    train_and_evaluate(cfg, tmp / "run")
    return tmp / "run"


def _write_episode(episode, folder: Path, classes: int):
    """The support and query of one task as class folders of PNGs (lossless: the same pixels)."""
    for kind, xs, ys in (
        ("support", episode.support_x, episode.support_y),
        ("query", episode.query_x, episode.query_y),
    ):
        for i, (x, y) in enumerate(zip(np.asarray(xs), np.asarray(ys))):
            if y >= classes:
                continue
            out = folder / kind / f"c{int(y)}"
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(x[..., 0] * 255).astype(np.uint8)).save(out / f"{i:02d}.png")


def test_maml_adapt_predicts_as_maml_eval_adapts(image_run, tmp_path):
    cfg = open_run(image_run, devices="1")
    exp = build_experiment(cfg, training=False)
    state = restore_state(exp, image_run)
    task_key, adapt_key = jax.random.split(jax.random.fold_in(eval_key(0, "test"), 0))
    episode = jax.tree.map(lambda a: a[0], exp.sampler.sample(exp.data, task_key, "test", 1))
    _write_episode(episode, tmp_path / "task", 5)

    done = run_in_process(
        "maml-adapt",
        f"run_dir={image_run}",
        f"support={tmp_path / 'task' / 'support'}",
        f"query={tmp_path / 'task' / 'query'}",
        f"out_dir={tmp_path / 'out'}",
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 10  # one per query image
    assert "the 10 query images were normalised together" in done.stderr
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and set(rows[0]) >= {"file", "predicted", "probability", "label", "p_c0", "p_c4"}

    # maml-eval's adaptation of the same task: same predictions, same accuracy.
    adapted = exp.algorithm.adapt_to_task(state.meta_params, state.meta_state, episode, adapt_key, 2)
    logits = exp.network.apply(adapted, episode.query_x, **exp.algorithm.eval_forward(state.meta_state))[0]
    expected = {f"{i:02d}.png": f"c{int(p)}" for i, p in enumerate(np.argmax(logits, -1))}
    assert {Path(r["file"]).name: r["predicted"] for r in rows} == expected
    trace = exp.algorithm.adaptation_trace(state.meta_params, state.meta_state, episode, adapt_key, 2)
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert record["accuracy"] == pytest.approx(float(trace[-1]))
    assert record["accuracy_before_adaptation"] == pytest.approx(float(trace[0]))
    assert f"# accuracy {100 * float(trace[-1]):.2f}%" in done.stdout


def test_maml_adapt_masks_the_outputs_of_missing_classes(image_run, tmp_path):
    support = write_classes(tmp_path / "support", [2, 2, 2], prefix="mine")
    query = tmp_path / "query"
    query.mkdir()
    for c in range(3):
        Image.fromarray(class_image(c, 3, 8)).save(query / f"q{c}.png")
    done = run_in_process(
        "maml-adapt",
        f"run_dir={image_run}",
        f"support={support}",
        f"query={query}",
        f"out_dir={tmp_path / 'out'}",
        f"save_adapted={tmp_path / 'adapted.npz'}",
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [k for k in rows[0] if k.startswith("p_")] == ["p_mine00", "p_mine01", "p_mine02"]
    for r in rows:
        assert r["predicted"] in ("mine00", "mine01", "mine02")
        assert sum(float(r[f"p_mine0{c}"]) for c in range(3)) == pytest.approx(1.0, abs=1e-4)
    # A masked output takes no loss, so adaptation leaves its head weights as meta-learned.
    saved = np.load(tmp_path / "adapted.npz")
    state = restore_state(build_experiment(open_run(image_run, devices="1"), training=False), image_run)
    head = np.asarray(state.meta_params["model"]["head"]["kernel"])
    np.testing.assert_array_equal(saved["head/kernel"][:, 3:], head[:, 3:])
    assert not np.allclose(saved["head/kernel"][:, :3], head[:, :3])
    assert saved["classes"].tolist() == ["mine00", "mine01", "mine02"]
    too_many = write_classes(tmp_path / "six", [1] * 6)
    refused = run_in_process("maml-adapt", f"run_dir={image_run}", f"support={too_many}", f"query={query}")
    assert refused.returncode == 2 and "at most 5" in refused.stderr


def test_maml_adapt_refuses_one_query_image_with_transductive_batch_norm(image_run, tmp_path):
    support = write_classes(tmp_path / "support", [1] * 5)
    image = tmp_path / "one.png"
    Image.fromarray(class_image(0, 2, 8)).save(image)
    refused = run_in_process("maml-adapt", f"run_dir={image_run}", f"support={support}", f"query={image}")
    assert refused.returncode == 2 and "allow_single_query=true" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = run_in_process(
        "maml-adapt",
        f"run_dir={image_run}",
        f"support={support}",
        f"query={image}",
        "allow_single_query=true",
        f"out_dir={tmp_path}",
    )
    assert allowed.returncode == 0 and len(allowed.stdout.splitlines()) == 1


def test_maml_adapt_regression(tmp_path):
    run = tmp_path / "sine"
    train_and_evaluate(make_cfg(*TINY), run)
    x = np.linspace(-4, 4, 5)
    (tmp_path / "points.csv").write_text("x,y\n" + "".join(f"{a},{2 * np.sin(a)}\n" for a in x))
    xq = np.linspace(-5, 5, 7)
    (tmp_path / "xs.csv").write_text("x,y\n" + "".join(f"{a},{2 * np.sin(a)}\n" for a in xq))
    done = run_in_process(
        "maml-adapt",
        f"run_dir={run}",
        f"support={tmp_path / 'points.csv'}",
        f"query={tmp_path / 'xs.csv'}",
        f"out_dir={tmp_path / 'out'}",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "adapted.png").stat().st_size > 0
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["x"]) for r in rows] == pytest.approx(xq.tolist(), abs=1e-5)
    assert "# mse" in done.stdout
    # The same adaptation in-process.
    cfg = open_run(run, devices="1")
    exp = build_experiment(cfg, training=False)
    state = restore_state(exp, run)
    from maml_cli.data.episodes import Episodes

    f32 = lambda a: jnp.asarray(a, jnp.float32)[:, None]  # noqa: E731
    episode = Episodes(f32(x), f32(2 * np.sin(x)), f32(xq), f32(2 * np.sin(xq)))
    adapted = exp.algorithm.adapt_to_task(
        state.meta_params, state.meta_state, episode, jax.random.PRNGKey(0), cfg.eval.inner_steps
    )
    expected = np.asarray(exp.network.apply(adapted, episode.query_x)[0][:, 0])
    assert [float(r["y"]) for r in rows] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-4)
    ranged = run_in_process(
        "maml-adapt",
        f"run_dir={run}",
        f"support={tmp_path / 'points.csv'}",
        "query=-5:5:11",
        f"out_dir={tmp_path / 'out2'}",
    )
    assert ranged.returncode == 0 and len(ranged.stdout.splitlines()) == 11


def test_omniglot_written_as_class_folders_reads_as_omniglot_does(tmp_path):
    """scripts/make_image_folder.py omniglot + dataset.invert=true: the same 28x28 arrays as the
    Omniglot reader makes from the same source (one reader, one preprocessing)."""
    from maml_cli.data.omniglot_source import load_omniglot
    from scripts.make_image_folder import omniglot
    from tests.omniglot_fakes import fake_sets, write_npz

    source = write_npz(tmp_path / "omniglot", fake_sets(background=2, evaluation=6, drawers=3))
    reference = load_omniglot(str(source), cache_dir=str(tmp_path / "c1")).images[2:]  # the evaluation set
    folders = omniglot(tmp_path / "folders", source, classes=6, set_name="images_evaluation", layout="classes", seed=0)
    classes = {f.name: sorted(f.iterdir()) for f in sorted(folders.iterdir())}
    read = read_classes(classes, image_size=28, channels=1, invert=True, cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(read.images.reshape(reference.shape), reference)


def test_cross_domain_images_are_read_as_maml_adapt_reads_them_for_the_run():
    """One place (runs.preprocessing) decides how images are read for a run: an Omniglot run's
    folder of dark-on-white glyphs is inverted by maml-eval's cross-domain scoring as by maml-adapt."""
    from omegaconf import OmegaConf

    from maml_cli.config.schema import ImageFolderConfig
    from maml_cli.engine.evaluate import cross_domain_dataset
    from maml_cli.run.reader import preprocessing

    run = OmegaConf.create(
        {"dataset": {"name": "omniglot", "ways": 5, "shots": 1, "query_shots": 1, "resample": "nearest"}}
    )
    folder = OmegaConf.structured(ImageFolderConfig(path="x"))
    assert preprocessing(run.dataset) == {"invert": True, "resample": "nearest"}
    chosen = cross_domain_dataset(folder, run, (28, 28, 1), given=set())
    assert chosen.invert is True and chosen.resample == "nearest"
    kept = cross_domain_dataset(folder, run, (28, 28, 1), given={"dataset.invert"})
    assert kept.invert is False  # what the user gave wins


# --- files people have ------------------------------------------------------------------------------


def test_junk_is_skipped_and_every_image_mode_is_converted(tmp_path):
    """What a Mac, Windows or a zip tool leaves beside the images is skipped; palette, 16-bit,
    CMYK, alpha and bilevel images are read as a viewer shows them."""
    root = add_junk(write_classes(tmp_path / "set", [3, 3, 3]))
    expected = write_modes(root / "class03")
    found = find_classes(root)[None]
    assert sorted(found) == ["class00", "class01", "class02", "class03"]  # no __MACOSX, .hidden_class, @eaDir
    assert [len(found[c]) for c in ("class00", "class01", "class02")] == [3, 3, 3]  # no ._00.png, .DS_Store
    assert sorted(f.name for f in found["class03"]) == sorted(expected)
    colour = read_classes({"modes": found["class03"]}, image_size=4, channels=3, cache_dir=tmp_path / "c")
    for f, image in zip(found["class03"], colour.images):
        np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), expected[f.name], atol=2, err_msg=f.name)
    grey = read_classes({"modes": found["class03"]}, image_size=4, channels=1, cache_dir=tmp_path / "c")
    for f, image in zip(found["class03"], grey.images):
        want = np.dot(expected[f.name], [0.299, 0.587, 0.114])  # ITU-R 601-2 luma, as Pillow's "L"
        assert abs(float(image.mean()) - want) <= 2, f.name


def test_maml_adapt_skips_junk_and_names_a_broken_file(image_run, tmp_path):
    support = add_junk(write_classes(tmp_path / "support", [2, 2, 2]))
    query = add_junk(write_classes(tmp_path / "query", [1, 1, 1]))
    done = run_in_process(
        "maml-adapt", f"run_dir={image_run}", f"support={support}", f"query={query}", f"out_dir={tmp_path / 'out'}"
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 3  # the three query images, no junk
    (query / "class01" / "00.png").write_bytes((query / "class01" / "00.png").read_bytes()[:40])  # cut short
    broken = run_in_process("maml-adapt", f"run_dir={image_run}", f"support={support}", f"query={query}")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert broken.stderr.count("error:") == 1
    assert f"{query / 'class01' / '00.png'} is not a readable image" in broken.stderr


def test_omniglot_zips_from_a_mac_are_read(tmp_path):
    """A zip made on a Mac holds __MACOSX/ and ._ files beside the images: skipped."""
    import zipfile

    from maml_cli.data.omniglot_source import load_omniglot
    from tests.omniglot_fakes import fake_sets, write_zips

    sets = fake_sets(background=6, evaluation=4, drawers=3)
    plain = load_omniglot(str(write_zips(tmp_path / "plain", sets)), cache_dir=str(tmp_path / "c1")).images
    mac = write_zips(tmp_path / "mac", sets)
    with zipfile.ZipFile(mac / "images_background.zip", "a") as zf:
        zf.writestr("__MACOSX/images_background/Zeta/character01/._0001_01.png", b"\0\5\26\7")
        zf.writestr("images_background/Zeta/character01/._0001_01.png", b"\0\5\26\7")
        zf.writestr("images_background/.DS_Store", b"\0\0\0\1Bud1")
    np.testing.assert_array_equal(load_omniglot(str(mac), cache_dir=str(tmp_path / "c2")).images, plain)
