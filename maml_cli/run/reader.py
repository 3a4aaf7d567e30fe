"""A trained run read back, as maml-eval, maml-adapt and ``maml_cli.load_run`` use it: its config
(and whether it may import code), the shape of its tasks, how its images are read, which
checkpoint a ``checkpoint=`` names. Shared so that all of them read a run the same way."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from maml_cli.config import IMAGE_RESAMPLE, load_run_config
from maml_cli.data.episodes import TaskSpec
from maml_cli.errors import UserError
from maml_cli.paths import checked_path
from maml_cli.run.checkpoints import Checkpointer
from maml_cli.run.directory import RUN_DATA, finished_steps, is_being_trained
from maml_cli.run.provenance import CheckpointMissing, expected
from maml_cli.run.selection import checkpoint_steps, parse_checkpoint

if TYPE_CHECKING:
    from maml_cli.data.episodes import TaskSpec


def open_run(run_dir, devices: str = "auto", trust_code: bool = False) -> DictConfig:
    """The run's saved config (re-checked against the schemas), set to run in this one process on
    ``devices``, whatever trained it; a clear error if there is no run, or if it names code to
    import (``model.target``, ``dataset.target``) and ``trust_code`` is false."""
    run_dir = checked_path(run_dir, "run_dir")
    if not run_dir.is_dir():
        raise UserError(
            f"run_dir={run_dir} {'is a file' if run_dir.exists() else 'does not exist'}: pass "
            "the folder maml-train wrote (its hydra.run.dir, or runs/<date>_<time>)"
        )
    cfg = load_run_config(run_dir)
    targets = code_targets(cfg)
    if targets and not trust_code:
        raise UserError(
            f"{run_dir} names code to import ({', '.join(targets)}); a run directory from elsewhere "
            "never runs code on its own: pass trust_code=true if you trust that code"
        )
    cfg.train.devices = devices
    for key in ("coordinator", "num_processes", "process_id"):
        cfg.distributed[key] = None
    return cfg


def code_targets(cfg: DictConfig) -> list:
    """``KEY=VALUE`` of each setting of the config that names Python code to import."""
    return [f"{section}.target={cfg[section].target}" for section in ("model", "dataset") if cfg[section].get("target")]


def preprocessing(dataset: DictConfig) -> dict:
    """How images are read for a run trained on ``dataset``, by every command that reads images of
    its own for it (maml-adapt's task, maml-eval's cross-domain folder): Omniglot's PNGs (dark ink
    on white) are inverted, as the run's own images were; otherwise as its dataset says."""
    invert = True if dataset.name == "omniglot" else bool(dataset.get("invert", False))
    resample = dataset.get("resample", "lanczos")
    return {"invert": invert, "resample": resample if resample in IMAGE_RESAMPLE else "lanczos"}


def check_utf8_name(path, key: str = "run_dir") -> None:
    """Refuse a path with a name that is not UTF-8 text: Orbax cannot address a checkpoint under it,
    and no record or terminal can show it as it is (``paths.checked_path``)."""
    checked_path(path, key)


def check_trained(run_dir) -> None:
    """Fail unless the run has checkpoints that can be read (before any data is read or anything
    compiled): a checkpoints/ folder with a finished one, under a path Orbax can address."""
    check_utf8_name(run_dir)
    if not (Path(run_dir) / "checkpoints").is_dir():
        raise UserError(f"{run_dir} has no checkpoints/ yet: train it first (maml-train hydra.run.dir={run_dir})")
    if not finished_steps(Path(run_dir) / "checkpoints"):
        raise CheckpointMissing(
            f"{run_dir} has no finished checkpoint yet (checkpoints/ is empty): train it until its first "
            f"(train.checkpoint_every), or wait for the trainer to save one"
        )


def run_spec(run_dir, cfg: DictConfig) -> TaskSpec:
    """The shape of the run's tasks without reading its data: from its ``data.json`` (written when
    training starts), else from the dataset's settings."""

    record = Path(run_dir) / RUN_DATA
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            return TaskSpec(tuple(data["input_shape"]), int(data["output_dim"]), data["kind"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{record} is damaged ({e}); delete it and maml-eval/maml-adapt will use the run's config.yaml"
            ) from e
    d = cfg.dataset
    if d.name == "sinusoid":
        return TaskSpec((1,), 1, "regression")
    channels = {"omniglot": 1, "miniimagenet": 3}.get(d.name, d.get("channels"))
    if channels is None:
        raise UserError(
            f"{run_dir} has no {RUN_DATA} and its dataset.channels is null: the image shape of its model is "
            f"unknown. Run its maml-train command once more (hydra.run.dir={run_dir}): a finished run trains "
            f"nothing and writes {RUN_DATA} again"
        )
    return TaskSpec((d.image_size, d.image_size, int(channels)), int(d.ways), "classification")


def restore_state(exp, run_dir, checkpoint: int | None = None):
    """The run's checkpoint (the latest, or step ``checkpoint``), placed on ``exp``'s devices."""
    check_trained(run_dir)
    checkpointer = Checkpointer(Path(run_dir) / "checkpoints", read_only=True)
    try:
        return exp.place(checkpointer.restore(exp.init_state(), checkpoint, expect=expected(run_dir)))
    finally:
        checkpointer.close()


def restore_chosen(
    exp, run_dir, cfg: DictConfig, metric: str, checkpoint, chosen: tuple | None = None, attempts: int = 5
) -> tuple:
    """(the restored states on ``exp``'s devices, how they were chosen) of the checkpoints
    ``checkpoint=`` names, chosen by the run's own config ``cfg`` and ``metric`` as ``checkpoint_steps``.
    ``chosen``: ``checkpoint_steps``'s answer when it was asked before (the checks of every job run
    before the first is scored). While the run is being trained, a checkpoint chosen by validation
    (or the latest) that the trainer deleted between choosing and reading means choosing again, a few
    times; in a run nobody trains, a missing checkpoint is an error. A step the user gave is never
    swapped for another."""
    kind, _ = parse_checkpoint(checkpoint)
    for attempt in range(attempts):
        if chosen is None or attempt:
            chosen = checkpoint_steps(run_dir, cfg, metric, checkpoint)
        steps, selected_by = chosen
        try:
            return [restore_state(exp, run_dir, s) for s in steps], selected_by
        except CheckpointMissing:
            if kind == "step" or attempt == attempts - 1 or not is_being_trained(run_dir):
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")
