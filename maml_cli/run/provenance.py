"""What a checkpoint records about the run that wrote it (its run id and config), the checks
against the run's ``config.yaml`` made before a run is resumed or a checkpoint restored, and the
errors of a checkpoint that is missing, unreadable or foreign. Read from the files alone, without
Orbax (``checkpoints.py`` writes the record): a leaf the other run modules import."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from maml_cli.config import resume_conflicts
from maml_cli.config.checks import read_saved_config
from maml_cli.errors import UserError
from maml_cli.run.directory import check_place, check_usable, finished_steps, recorded_run_id

# The folder of a step that says where the state came from: {"run_id": ..., "config": {...}},
# saved with the state in one atomic checkpoint (older checkpoints have none).
PROVENANCE = "provenance"


class CheckpointError(UserError):
    """A checkpoint that is missing or cannot be read."""


class CheckpointMissing(CheckpointError):
    """No checkpoint of the step asked for (or none at all): never written, or deleted (by a live
    trainer that keeps only the last and the best)."""


class CheckpointMismatch(UserError):
    """A readable checkpoint that does not belong to the run: another config, or another run.
    Never set aside as damaged: the user's files stay as they are."""


def read_provenance(step_dir: Path) -> dict | None:
    """What a checkpoint records about the run that wrote it; None for one without a readable record."""
    try:
        record = json.loads((Path(step_dir) / PROVENANCE / "metadata").read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("config", {}), dict) else None


def check_provenance(step_dir: Path, config, run_id: str | None) -> None:
    """Refuse a checkpoint trained with another config than ``config`` (what the run's
    ``config.yaml`` says) or written by another run than ``run_id``."""
    record = read_provenance(step_dir)
    if record is None:
        return
    step_dir = Path(step_dir)
    run_dir = step_dir.parent.parent
    if config is not None and "config" in record:
        conflicts = [
            c for c in resume_conflicts(OmegaConf.create(record["config"]), config) if not c.startswith("eval.")
        ]
        if conflicts:
            raise CheckpointMismatch(
                f"checkpoint {step_dir} was trained with another config than config.yaml says; "
                f"{run_dir / 'config.yaml'} was edited, or the checkpoint comes from another run. Put "
                f"config.yaml back (the checkpoint's own config is in {step_dir / PROVENANCE / 'metadata'}) or "
                "remove the checkpoint. Differences (checkpoint -> config.yaml):\n  " + "\n  ".join(conflicts)
            )
    if run_id is not None and record.get("run_id") not in (None, run_id):
        raise CheckpointMismatch(
            f"checkpoint {step_dir} comes from another run than {run_dir} (the run ids in its "
            f"{PROVENANCE}/metadata and in the run's environment.json differ): remove it from "
            f"{step_dir.parent}, or use it in the run directory it came from"
        )


def run_id_of(run_dir: Path) -> str | None:
    """The run's id: the one environment.json records, else the one its newest checkpoint with a
    provenance record carries (environment.json deleted); None for a run that has neither."""
    recorded = recorded_run_id(run_dir)
    if recorded is not None:
        return recorded
    for step in reversed(finished_steps(Path(run_dir) / "checkpoints")):
        found = (read_provenance(Path(run_dir) / "checkpoints" / str(step)) or {}).get("run_id")
        if found:
            return found
    return None


def expected(run_dir: Path) -> tuple:
    """(the config config.yaml says, the run id) that a checkpoint of the run must match."""
    saved = Path(run_dir) / "config.yaml"
    return (read_saved_config(saved) if saved.is_file() else None, recorded_run_id(run_dir))


def check_resumable(run_dir: Path, cfg) -> None:
    """A run directory that holds a run may only be resumed with the same experiment."""
    saved, checkpoints = Path(run_dir) / "config.yaml", Path(run_dir) / "checkpoints"
    steps = finished_steps(checkpoints)
    if not steps:
        return  # nothing trained yet: nothing to mix
    if not saved.is_file():
        raise UserError(
            f"{run_dir} holds checkpoints but no config.yaml: it was deleted. Put it back, or train in another "
            "hydra.run.dir (resuming without it could mix two experiments)"
        )
    # A config.yaml edited by hand, or a checkpoint copied in from another run: refused as they are
    # (training on would later delete the copied one with the old checkpoints).
    run_id, saved_cfg = run_id_of(run_dir), read_saved_config(saved)
    for step in reversed(steps):
        check_provenance(checkpoints / str(step), saved_cfg, run_id)
    conflicts = resume_conflicts(saved_cfg.copy(), cfg)
    if conflicts:
        raise UserError(
            f"{run_dir} holds a run with a different config; resuming would mix two experiments. "
            "Use another hydra.run.dir, or the same settings. Differences:\n  " + "\n  ".join(conflicts)
        )


def check_run_dir(cfg, run_dir: Path) -> None:
    """Whether ``cfg`` may be trained in ``run_dir``, before anything is written there: a place a
    run may go, files that can be written, and a run that it resumes only if it is the same
    experiment. maml-train asks it before Hydra creates the folder; ``train`` before training."""
    check_place(run_dir, force=cfg.train.force_run_dir)
    check_usable(run_dir)
    check_resumable(run_dir, cfg)
