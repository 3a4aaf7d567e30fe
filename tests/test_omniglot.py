"""Omniglot: every source format, the cache, the splits, the episodes, conv4, and the whole path."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_cli.backend.plan import Execution
from maml_cli.config import UserError
from maml_cli.data.episodes import sample_classification_episodes
from maml_cli.data.omniglot import OmniglotTasks, class_splits
from maml_cli.data.omniglot_source import SMALL_SETS, OmniglotArrays, download_with_tfds, load_omniglot, preprocess
from maml_cli.engine.evaluate import evaluate_run
from maml_cli.engine.training import train_and_evaluate
from maml_cli.meta.algorithms import build_algorithm
from maml_cli.meta.losses import make_task_loss
from maml_cli.models import Network
from maml_cli.models.conv4 import Conv4
from maml_cli.models.convolution import conv3x3_im2col
from tests.conftest import SHARED_DATA, make_cfg
from tests.omniglot_fakes import fake_sets, write_npz, write_png_tree, write_zips

OFFICIAL_DIR = SHARED_DATA / "omniglot" / "official"
needs_small_zips = pytest.mark.skipif(
    not (OFFICIAL_DIR / "images_background_small1.zip").is_file(),
    reason=f"the official small Omniglot zips are not in {OFFICIAL_DIR}",
)
needs_npz = pytest.mark.skipif(
    not (SHARED_DATA / "omniglot" / "images_background.npz").is_file(),
    reason=f"the Omniglot npz arrays are not in {SHARED_DATA / 'omniglot'}",
)


def _ink(paper):
    return np.where(paper, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sets():
    return fake_sets()


@pytest.mark.parametrize("writer", [write_npz, write_png_tree, write_zips], ids=["npz", "png", "zip"])
def test_each_source_format_reads_the_same_images_in_official_order(writer, sets, tmp_path):
    writer(tmp_path / "src", sets)
    arrays = load_omniglot(str(tmp_path / "src"), image_size=105, cache_dir=str(tmp_path / "cache"))
    assert arrays.sets == {"images_background": 10, "images_evaluation": 8}
    expected = np.concatenate([_ink(sets["images_background"]), _ink(sets["images_evaluation"])])[..., None]
    np.testing.assert_array_equal(arrays.images, expected)


def test_preprocessing_inverts_and_resizes_with_lanczos(sets):
    from PIL import Image

    ink = _ink(sets["images_background"][:2])
    small = preprocess(ink, 28)
    assert small.shape == (2, 4, 28, 28, 1) and small.dtype == np.uint8
    ref = np.asarray(Image.fromarray(ink[1, 2]).resize((28, 28), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(small[1, 2, ..., 0], ref)
    assert small.mean() < 60  # mostly black background, bright strokes


def test_nearest_resampling_reproduces_the_maml_codes_binary_images(sets, tmp_path):
    """cbfinn/maml resized the official mode-"1" PNGs with Image.LANCZOS, which Pillow applies as
    NEAREST to one-bit images: dataset.resample=nearest gives those pixels (inverted)."""
    import io

    from PIL import Image

    write_npz(tmp_path / "src", sets)
    nearest = load_omniglot(str(tmp_path / "src"), image_size=28, cache_dir=str(tmp_path / "c"), resample="nearest")
    lanczos = load_omniglot(str(tmp_path / "src"), image_size=28, cache_dir=str(tmp_path / "c"))
    paper = sets["images_background"][3, 1]
    png = io.BytesIO()
    Image.fromarray(paper).save(png, format="PNG")  # a one-bit PNG, as the official files
    png.seek(0)
    original = Image.open(png)
    assert original.mode == "1"
    theirs = np.asarray(original.resize((28, 28), resample=Image.LANCZOS).convert("L"))
    np.testing.assert_array_equal(nearest.images[3, 1, ..., 0], 255 - theirs)
    assert set(np.unique(nearest.images)) <= {0, 255} and len(np.unique(lanczos.images)) > 2
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2  # a cache per filter
    with pytest.raises(UserError, match="dataset.resample must be one of"):
        load_omniglot(str(tmp_path / "src"), cache_dir=str(tmp_path / "c"), resample="bicubic")


def test_cache_is_reused_and_keyed_by_settings(sets, tmp_path, monkeypatch):
    write_npz(tmp_path / "src", sets)
    cache = tmp_path / "cache"
    first = load_omniglot(str(tmp_path / "src"), image_size=28, cache_dir=str(cache))
    assert len(list(cache.glob("*.npz"))) == 1
    import maml_cli.data.omniglot_source as source

    monkeypatch.setattr(source, "READERS", {})  # a second load must not read the source again
    np.testing.assert_array_equal(
        load_omniglot(str(tmp_path / "src"), image_size=28, cache_dir=str(cache)).images, first.images
    )
    monkeypatch.undo()
    load_omniglot(str(tmp_path / "src"), image_size=20, cache_dir=str(cache))
    assert len(list(cache.glob("*.npz"))) == 2
    cached = next(p for p in cache.glob("*28px*"))
    cached.write_bytes(b"damaged")
    np.testing.assert_array_equal(
        load_omniglot(str(tmp_path / "src"), image_size=28, cache_dir=str(cache)).images, first.images
    )


def test_missing_or_damaged_sources_say_how_to_get_the_data(sets, tmp_path):
    with pytest.raises(UserError, match="does not exist.*brendenlake/omniglot"):
        load_omniglot(str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no Omniglot data in .*images_background.zip"):
        load_omniglot(str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"))
    write_zips(tmp_path / "z", sets)
    data = (tmp_path / "z" / "images_background.zip").read_bytes()
    (tmp_path / "z" / "images_background.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable zip"):
        load_omniglot(str(tmp_path / "z"), cache_dir=str(tmp_path / "c"))
    write_png_tree(tmp_path / "t", sets)
    next((tmp_path / "t" / "images_evaluation").rglob("*_03.png")).unlink()
    with pytest.raises(UserError, match="different numbers of drawers"):
        load_omniglot(str(tmp_path / "t"), cache_dir=str(tmp_path / "c"))
    write_png_tree(tmp_path / "p", sets)
    next((tmp_path / "p" / "images_background").rglob("*_02.png")).write_bytes(b"not a png")
    with pytest.raises(UserError, match="not a readable image"):
        load_omniglot(str(tmp_path / "p"), cache_dir=str(tmp_path / "c"))


@needs_small_zips
@needs_npz
def test_real_official_zips_match_the_real_npz(tmp_path):
    """The small official zips hold background characters under their official numbers: read
    through the zip path, they must equal the npz rows (character number - 1)."""
    (tmp_path / "src").mkdir()
    shutil.copy(OFFICIAL_DIR / "images_background_small1.zip", tmp_path / "src")
    arrays = load_omniglot(str(tmp_path / "src"), image_size=105, cache_dir=str(tmp_path / "cache"))
    assert arrays.sets == {"images_background_small1": 136} and arrays.images.shape == (136, 20, 105, 105, 1)
    with zipfile.ZipFile(OFFICIAL_DIR / "images_background_small1.zip") as zf:
        numbers = sorted({int(Path(n).name[:4]) for n in zf.namelist() if n.endswith(".png")})
    with np.load(SHARED_DATA / "omniglot" / "images_background.npz") as z:
        npz = z["images"]
    for i in (0, 57, 135):
        np.testing.assert_array_equal(arrays.images[i, ..., 0], _ink(npz[numbers[i] - 1]))


@needs_small_zips
def test_tfds_download_path_with_registered_checksums(tmp_path):
    """TFDS's download manager, fed from its manual dir (no network), checks TFDS's own sha256."""
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in SMALL_SETS:
        shutil.copy(OFFICIAL_DIR / f"{name}.zip", manual)
    sources = download_with_tfds(str(tmp_path / "tfds"), sets=SMALL_SETS)
    assert [s.name for s in sources] == list(SMALL_SETS)
    bad = tmp_path / "bad" / "downloads" / "manual"
    bad.mkdir(parents=True)
    shutil.copy(OFFICIAL_DIR / "images_background_small2.zip", bad / "images_background_small1.zip")
    with pytest.raises(UserError, match="could not get Omniglot through TensorFlow Datasets"):
        download_with_tfds(str(tmp_path / "bad"), sets=SMALL_SETS[:1])


def _fake_arrays(background=964, evaluation=659):
    return OmniglotArrays(
        images=np.zeros((0,)), sets={"images_background": background, "images_evaluation": evaluation}
    )


def test_paper_split_is_deterministic_disjoint_and_sized_as_in_the_paper():
    splits = class_splits(_fake_arrays(), "paper", seed=1, train_classes=1200, val_classes=100)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1100, "val": 100, "test": 423}
    together = np.concatenate(list(splits.values()))
    assert len(np.unique(together)) == 1623
    again = class_splits(_fake_arrays(), "paper", seed=1, train_classes=1200, val_classes=100)
    for k in splits:
        np.testing.assert_array_equal(splits[k], again[k])
    other = class_splits(_fake_arrays(), "paper", seed=2, train_classes=1200, val_classes=100)
    assert not np.array_equal(splits["test"], other["test"])


def test_official_split_keeps_alphabet_sets_apart():
    splits = class_splits(_fake_arrays(), "official", seed=1, train_classes=1200, val_classes=100)
    assert len(splits["train"]) == 864 and len(splits["val"]) == 100
    assert set(splits["train"]) | set(splits["val"]) == set(range(964))
    np.testing.assert_array_equal(splits["test"], np.arange(964, 1623))
    with pytest.raises(UserError, match="needs both"):
        class_splits(OmniglotArrays(np.zeros(0), {"images_background_small1": 136}), "official", 1, 1200, 100)
    with pytest.raises(UserError, match="characters in the source"):
        class_splits(OmniglotArrays(np.zeros(0), {"images_background_small1": 136}), "paper", 1, 1200, 100)


def _marker_images(classes=12, examples=6, size=8):
    """Each image has one bright pixel at (0, 1): its value says (class, example) and its position
    after sampling says how the image was rotated."""
    images = np.zeros((classes, examples, size, size, 1), np.uint8)
    for c in range(classes):
        for e in range(examples):
            images[c, e, 0, 1, 0] = 1 + c * examples + e
    return images


def _decode(img, examples, size=8):
    ys, xs = np.nonzero(img[..., 0])
    assert len(ys) == 1
    value = int(round(float(img[ys[0], xs[0], 0]) * 255)) - 1
    rotation = {(0, 1): 0, (size - 2, 0): 1, (size - 1, size - 2): 2, (1, size - 1): 3}[(int(ys[0]), int(xs[0]))]
    return value // examples, value % examples, rotation


def test_episodes_keep_labels_rotations_and_images_consistent():
    images = _marker_images()
    split = jnp.array([1, 3, 4, 6, 7, 9, 10], jnp.int32)
    ep = sample_classification_episodes(
        jnp.asarray(images), split, jax.random.PRNGKey(0), 40, ways=3, shots=2, query_shots=3, rotate=True
    )
    assert ep.support_x.shape == (40, 6, 8, 8, 1) and ep.query_x.shape == (40, 9, 8, 8, 1)
    assert ep.support_x.dtype == jnp.float32 and float(ep.support_x.max()) <= 1.0
    rotations_seen = set()
    for t in range(40):
        by_label = {}
        seen_images = set()
        for xs, ys in ((ep.support_x[t], ep.support_y[t]), (ep.query_x[t], ep.query_y[t])):
            for img, label in zip(np.asarray(xs), np.asarray(ys)):
                cls, example, rot = _decode(img, 6)
                assert cls in np.asarray(split)
                by_label.setdefault(int(label), set()).add((cls, rot))
                assert (cls, example) not in seen_images  # support and query never share an image
                seen_images.add((cls, example))
                rotations_seen.add(rot)
        assert sorted(by_label) == [0, 1, 2]
        assert all(len(v) == 1 for v in by_label.values())  # one class, one rotation per label
        assert len({next(iter(v))[0] for v in by_label.values()}) == 3  # distinct classes
        assert list(np.asarray(ep.support_y[t])) == [0, 0, 1, 1, 2, 2]
    assert rotations_seen == {0, 1, 2, 3}
    plain = sample_classification_episodes(
        jnp.asarray(images), split, jax.random.PRNGKey(0), 5, ways=3, shots=2, query_shots=3, rotate=False
    )
    assert {_decode(img, 6)[2] for img in np.asarray(plain.support_x).reshape(-1, 8, 8, 1)} == {0}


def _omniglot_cfg(src, tmp_path, *overrides):
    return make_cfg(
        "experiment=omniglot_tiny",
        f"dataset.path={src}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "train.progress=false",
        "train.plots=false",
        *overrides,
    )


def test_impossible_ways_or_shots_fail_before_training(sets, tmp_path):
    src = write_npz(tmp_path / "src", sets)
    with pytest.raises(UserError, match="fewer than dataset.ways=5"):
        OmniglotTasks(_omniglot_cfg(src, tmp_path, "dataset.ways=5").dataset)  # val split has 4 classes
    with pytest.raises(UserError, match="only 4 examples"):
        OmniglotTasks(_omniglot_cfg(src, tmp_path, "dataset.shots=3", "dataset.query_shots=2").dataset)
    with pytest.raises(UserError, match="fewer than dataset.ways"):
        train_and_evaluate(_omniglot_cfg(src, tmp_path, "dataset.ways=5"), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


@pytest.mark.parametrize("size,stride", [(28, 2), (14, 2), (7, 2), (5, 1), (8, 1), (9, 2)])
def test_im2col_convolution_equals_lax(size, stride):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 4))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
    ref = jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv3x3_im2col(x, k, stride), ref, rtol=1e-5, atol=1e-5)


ALL_COMBOS = (
    ("lax", "unroll", False),
    ("im2col", "vmap", False),
    ("lax", "vmap", True),
    ("im2col", "map", True),
    ("im2col", "map", False),
)


@pytest.mark.parametrize(
    "downsample,head,batch_norm,combos",
    [
        # Each setting is one compilation (15 s here): by default one combination per axis value.
        # (vmap is in the per_step case below.)
        ("stride", "mean", "transductive", tuple(ALL_COMBOS[i] for i in (0, 3))),
        pytest.param("stride", "mean", "transductive", ALL_COMBOS, marks=pytest.mark.slow),
        pytest.param("maxpool", "flatten", "per_step", (ALL_COMBOS[1], ALL_COMBOS[3]), marks=pytest.mark.slow),
    ],
)
def test_conv_impls_and_task_batching_give_the_same_meta_gradient(downsample, head, batch_norm, combos):
    size = 16
    images = jax.random.uniform(jax.random.PRNGKey(0), (10, 4, size, size, 1)) * 255
    ep = sample_classification_episodes(
        images.astype(jnp.uint8), jnp.arange(10), jax.random.PRNGKey(1), 3, ways=3, shots=1, query_shots=2, rotate=True
    )
    cfg = make_cfg("algorithm.inner_lr=0.4", "algorithm.inner_steps=2")
    results = []
    for impl, batching, remat in combos:
        network = Network(
            Conv4(
                output_dim=3,
                filters=4,
                downsample=downsample,
                head_input=head,
                batch_norm=batch_norm,
                bn_steps=2,
                conv_impl=impl,
            )
        )
        params, _ = network.init(jax.random.PRNGKey(2), ep.support_x.shape[2:])
        algorithm = build_algorithm(
            cfg.algorithm, make_task_loss(network, "classification"), Execution(batching, remat, impl), cfg.train
        )
        meta_loss = jax.jit(jax.value_and_grad(lambda mp: algorithm.meta_loss(mp, ep, 0, algorithm.phase(0))[0]))
        loss, grads = meta_loss({"model": params})
        results.append((float(loss), jax.flatten_util.ravel_pytree(grads)[0]))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        # float32 second-order through batch norm: compare as vectors, not element by element
        assert np.linalg.norm(grads - results[0][1]) <= 1e-4 * np.linalg.norm(results[0][1])


def test_transductive_batch_norm_uses_the_batch_at_hand():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 28, 28, 1))
    for mode, depends in (("transductive", True), ("none", False)):
        network = Network(Conv4(output_dim=5, filters=4, batch_norm=mode))
        params, _ = network.init(jax.random.PRNGKey(1), x.shape[1:])
        full = network.apply(params, x)[0][:3]
        half = network.apply(params, x[:3])[0]
        assert (not np.allclose(full, half, atol=1e-5)) == depends


@pytest.mark.parametrize("bn_scale,epsilon", [(False, 1e-3), (True, 1e-5)])
def test_batch_norm_as_the_original_code_or_with_a_scale(bn_scale, epsilon):
    """The original MAML code: tf.contrib.layers.batch_norm with a learned offset, no scale,
    epsilon 1e-3; the parameters say which, and the normalisation uses that epsilon."""
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 1)) * 0.01  # small variance: epsilon matters
    network = Network(Conv4(output_dim=2, filters=3, bn_scale=bn_scale, bn_epsilon=epsilon, conv_impl="lax"))
    params, _ = network.init(jax.random.PRNGKey(1), x.shape[1:])
    assert set(params["norms_0"]) == ({"offset", "scale"} if bn_scale else {"offset"})
    conv = (
        jax.lax.conv_general_dilated(
            x, params["convs_0"]["kernel"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + params["convs_0"]["bias"]
    )
    mean, var = conv.mean((0, 1, 2)), conv.var((0, 1, 2))
    expected = (conv - mean) / np.sqrt(var + epsilon)
    got = network.module.apply({"params": params}, conv, method=lambda m, y: m.norms[0](y))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_original_batch_norm_setting_is_not_adapted_in_the_inner_loop():
    cfg = make_cfg("experiment=omniglot_5w1s")
    assert (cfg.model.bn_scale, cfg.model.bn_epsilon, cfg.model.adapt_batch_norm) == (False, 0.001, False)
    network = Network(Conv4(output_dim=3, filters=4, bn_scale=False, conv_impl="lax"), adapt_batch_norm=False)
    params, _ = network.init(jax.random.PRNGKey(0), (8, 8, 1))
    algorithm = build_algorithm(
        make_cfg("algorithm.inner_lr=0.4").algorithm,
        make_task_loss(network, "classification"),
        Execution("vmap", False, "lax"),
        make_cfg().train,
    )
    images = (jax.random.uniform(jax.random.PRNGKey(3), (6, 4, 8, 8, 1)) * 255).astype(jnp.uint8)
    task = jax.tree.map(
        lambda a: a[0],
        sample_classification_episodes(images, jnp.arange(6), jax.random.PRNGKey(4), 1, ways=3, shots=1, query_shots=1),
    )
    adapted = algorithm.adapt_to_task({"model": params}, {}, task, None, 2)
    for layer in ("norms_0", "norms_3"):
        np.testing.assert_array_equal(adapted[layer]["offset"], params[layer]["offset"])
    assert not np.allclose(adapted["convs_0"]["kernel"], params["convs_0"]["kernel"])


@pytest.mark.slow  # by default tests/test_run_records.py trains and evaluates Omniglot from the shell
def test_omniglot_train_then_eval_on_synthetic_data(sets, tmp_path):
    src = write_npz(tmp_path / "src", sets)
    cfg = _omniglot_cfg(src, tmp_path)
    val = train_and_evaluate(cfg, tmp_path / "run").last_val
    assert 0.0 <= val["val/accuracy"] <= 1.0
    record = evaluate_run(make_cfg(f"run_dir={tmp_path / 'run'}", "progress=false", config_name="eval"))
    assert record["metric"] == "accuracy" and record["batch_norm"] == "transductive"
    assert [r["step"] for r in record["per_step"]] == [0, 1, 2]
    assert all(0.0 <= r["mean"] <= 1.0 for r in record["per_step"])
    assert record["dataset"]["split"] == "paper"


@needs_npz
def test_real_omniglot_builds_the_paper_tasks(tmp_path):
    cfg = make_cfg(
        "experiment=omniglot_5w1s", f"dataset.path={SHARED_DATA / 'omniglot'}", f"dataset.cache_dir={tmp_path}"
    )
    tasks = OmniglotTasks(cfg.dataset)
    assert {k: len(v) for k, v in tasks.splits.items()} == {"train": 1100, "val": 100, "test": 423}
    ep = tasks.sample(tasks.data, jax.random.PRNGKey(0), "test", 2)
    assert ep.support_x.shape == (2, 5, 28, 28, 1) and ep.query_x.shape == (2, 5, 28, 28, 1)
    with pytest.raises(UserError, match="dataset.shots \\+ dataset.query_shots = 21"):
        OmniglotTasks(
            make_cfg(
                "experiment=omniglot_5w1s",
                f"dataset.path={SHARED_DATA / 'omniglot'}",
                f"dataset.cache_dir={tmp_path}",
                "dataset.shots=11",
                "dataset.query_shots=10",
            ).dataset
        )
