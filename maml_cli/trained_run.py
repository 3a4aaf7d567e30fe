"""A trained run as maml-eval and maml-adapt use it: its config, the shape of its tasks, its
checkpoint. Shared so that both read a run the same way, and neither from inside the training loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from maml_cli.config import UserError, load_run_config
from maml_cli.data.episodes import TaskSpec
from maml_cli.run_dir import RUN_DATA


def open_run(run_dir, devices: str = "auto") -> DictConfig:
    """The run's saved config (re-checked against the schemas), set to run in this one process on
    ``devices``, whatever trained it; a clear error if there is no run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir={run_dir} {'is a file' if run_dir.exists() else 'does not exist'}: pass "
                        "the folder maml-train wrote (its hydra.run.dir, or runs/<date>_<time>)")
    cfg = load_run_config(run_dir)
    cfg.train.devices = devices
    for key in ("coordinator", "num_processes", "process_id"):
        cfg.distributed[key] = None
    return cfg


def check_trained(run_dir) -> None:
    """Fail unless the run has checkpoints (before any data is read or anything compiled)."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        raise UserError(f"{run_dir} has no checkpoints/ yet: train it first (maml-train hydra.run.dir={run_dir})")


def run_spec(run_dir, cfg: DictConfig) -> TaskSpec:
    """The shape of the run's tasks without reading its data: from its ``data.json`` (written when
    training starts), else from the dataset's settings."""
    record = Path(run_dir) / RUN_DATA
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            return TaskSpec(tuple(data["input_shape"]), int(data["output_dim"]), data["kind"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{record} is damaged ({e}); delete it and maml-eval/maml-adapt will use the "
                            "run's config.yaml") from e
    d = cfg.dataset
    if d.name == "sinusoid":
        return TaskSpec((1,), 1, "regression")
    channels = {"omniglot": 1, "miniimagenet": 3}.get(d.name, d.get("channels"))
    if channels is None:
        raise UserError(f"{run_dir} has no {RUN_DATA} and its dataset.channels is null: the image shape of its "
                        "model is unknown")
    return TaskSpec((d.image_size, d.image_size, int(channels)), int(d.ways), "classification")


def restore_state(exp, run_dir, checkpoint: Optional[int] = None):
    """The run's checkpoint (the latest, or step ``checkpoint``), placed on ``exp``'s devices."""
    from maml_cli.checkpoints import Checkpointer

    check_trained(run_dir)
    checkpointer = Checkpointer(Path(run_dir) / "checkpoints", read_only=True)
    try:
        return exp.place(checkpointer.restore(exp.init_state(), checkpoint))
    finally:
        checkpointer.close()
