"""Every key, every type (issue 30, item 1): values drawn for any key of the train schema, not only
the numeric ones, reach ``maml-train``'s dry run, which checks the config, the data and the plan and
compiles nothing. The invariant: exit 0, or exit 2 with one line; never a traceback or an internal
error; nothing written beside the data but the cache.

Keys that name files or code (paths, targets, the cache) are left to their own tests: a drawn path
may name any folder on this machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import typing
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from maml_cli.config import schema
from tests.conftest import TINY, run_in_process
from tests.generated import examples
from tests.image_fakes import write_classes
from tests.omniglot_fakes import fake_sets, write_npz
from tests.test_generated_values import VALUES

SKIPPED = ("name", "path", "data_dir", "cache_dir", "target", "root", "project", "entity", "tracking_uri")


def all_keys(cls, prefix: str) -> list[str]:
    """Every leaf key of a schema section (nested sections walked), but those naming files or code."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if f.name in SKIPPED or f.name.endswith(("_dir", "_path")):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


SETUPS = {  # name: (the overrides, what the dataset section is)
    "sinusoid": ([*TINY], "sinusoid"),
    "omniglot": (
        [
            "experiment=omniglot_tiny",
            "dataset.path={tmp}/omniglot",
            "dataset.cache_dir={tmp}/cache",
            "dataset.train_classes=12",
            "dataset.val_classes=4",
            "train.progress=false",
        ],
        "omniglot",
    ),
    "image_folder": (
        [
            "dataset=image_folder",
            "model=conv4",
            "model.filters=4",
            "dataset.image_size=8",
            "dataset.ways=3",
            "dataset.query_shots=2",
            "dataset.path={tmp}/folders",
            "dataset.train_classes=6",
            "dataset.val_classes=3",
            "dataset.cache_dir={tmp}/cache",
            "train.steps=4",
            "train.progress=false",
            "eval.val_episodes=4",
            "eval.episodes=6",
        ],
        "image_folder",
    ),
}


PLAUSIBLE = st.sampled_from(["1", "2", "4", "0.5", "0.01", "true", "false", "null", "auto"])  # some runs must pass
WORDS = st.sampled_from(["none", "x", "1,2", "a b", "maxpool", "flatten", "per_step", "offline", "online"])


def keys_of(dataset: str, algorithm: str, logger: str) -> list[str]:
    keys = all_keys(schema.DATASET_SCHEMAS[dataset], "dataset.")
    keys += all_keys(schema.MODEL_SCHEMAS["mlp" if dataset == "sinusoid" else "conv4"], "model.")
    keys += all_keys(schema.LOGGER_SCHEMAS[logger], "logger.")
    keys += all_keys(schema.ALGORITHM_SCHEMAS[algorithm], "algorithm.")
    keys += all_keys(schema.TrainLoopConfig, "train.") + all_keys(schema.EvalConfig, "eval.")
    keys += [k for k in all_keys(schema.TrainConfig, "") if "." not in k and k not in ("train", "eval")]
    return sorted(set(keys) - {"train.dry_run"})


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    write_npz(root / "omniglot", fake_sets(background=10, evaluation=8, drawers=4))
    write_classes(root / "folders", [4] * 12)
    return root


@pytest.mark.generated
@examples(ci=6, fuzz=600)
@given(
    data=st.data(),
    setup=st.sampled_from(sorted(SETUPS)),
    algorithm=st.sampled_from(sorted(schema.ALGORITHM_SCHEMAS)),
    logger=st.sampled_from(["tensorboard", "csv", "wandb", "mlflow"]),
)
def test_any_value_for_any_key_is_a_dry_run_or_one_line(data_folder, data, setup, algorithm, logger):
    overrides, dataset = SETUPS[setup]
    keys = data.draw(
        st.lists(st.sampled_from(keys_of(dataset, algorithm, logger)), min_size=1, max_size=3, unique=True)
    )
    values = [data.draw(st.one_of(PLAUSIBLE, VALUES, WORDS), label=k) for k in keys]
    workspace = Path(tempfile.mkdtemp(prefix="maml-cli-keys-"))
    try:
        shutil.copytree(data_folder, workspace, dirs_exist_ok=True)
        before = listing(workspace)
        args = [a.format(tmp=workspace) for a in overrides]
        args += [
            f"algorithm={algorithm}",
            f"logger={logger}",
            "train.dry_run=true",
        ]
        args += [f"{k}={v}" for k, v in zip(keys, values)]
        args.append(f"hydra.run.dir={workspace / 'run'}")
        out = run_in_process("maml-train", *args, cwd=workspace)
        event(f"exit {out.returncode}")  # the statistics show how many drawn configs ran
        assert out.returncode in (0, 2), (out.returncode, out.stderr[-3000:])
        assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr[-3000:]
        if out.returncode == 2:
            assert out.stderr.startswith("maml-train: error: ") and out.stderr.count("\n") == 1, out.stderr
        made = {Path(p).parts[0] for p in listing(workspace) - before}
        assert made <= {"cache"}, f"a dry run wrote {made - {'cache'}}"
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_each_setup_dry_runs_as_given(data_folder, tmp_path, setup):
    """The generated test's starting points run: a drawn value, not the setup, makes a refusal."""
    shutil.copytree(data_folder, tmp_path, dirs_exist_ok=True)
    args = [a.format(tmp=tmp_path) for a in SETUPS[setup][0]]
    out = run_in_process("maml-train", *args, "train.dry_run=true", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
