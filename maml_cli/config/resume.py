"""Which settings a run may change when it is resumed: how long and how chatty it is, and how the
same math is executed; never what it computes."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from maml_cli.config.checks import conform

# Keys that may change when a run is resumed: how long and how chatty it is, not what it computes.
RESUMABLE_CHANGES = (
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.keep_best",
    "train.progress",
    "train.dry_run",
    "train.force_run_dir",
    "train.plots",
    "eval.episodes",
    "eval.val_episodes",
    "eval.batch_size",  # which tasks are scored depends on eval.seed only
    "eval.query_shots",
    "train.time_limit_minutes",
    # How the same math is executed (maml_cli/backend/plan.py): a run may resume on other hardware.
    "train.task_batching",
    "train.remat",
    "train.steps_per_call",
    "train.devices",
    "model.conv_impl",
    "distributed.coordinator",
    "distributed.num_processes",
    "distributed.process_id",
)


def flatten(node: Any, prefix: str = "") -> dict:
    """``{"a.b": value}`` for every leaf of nested dicts (an empty dict has no leaves)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _anneals_over_train_steps(cfg: DictConfig) -> bool:
    """Whether the outer step size follows a schedule spanning train.steps (so train.steps is part
    of the math): MAML++'s cosine annealing, Reptile's linear annealing."""
    a = cfg.algorithm
    return (a.name == "mamlpp" and a.cosine_annealing) or a.name == "reptile"


def resume_conflicts(saved: DictConfig, current: DictConfig) -> list[str]:
    """Keys whose values differ between a run's saved config and the one resuming it. The saved
    config is first read through the current schemas, so a key added since takes its default."""
    saved = conform(saved, source="the saved config.yaml")
    annealed = _anneals_over_train_steps(saved)
    resumable = set(RESUMABLE_CHANGES) - ({"train.steps"} if annealed else set())
    a = flatten(OmegaConf.to_container(saved, resolve=True))
    b = flatten(OmegaConf.to_container(current, resolve=True))
    why = {"train.steps": " (this algorithm anneals its outer step size over train.steps)"} if annealed else {}
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}{why.get(k, '')}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and k not in resumable and not k.startswith("logger.")  # trackers: not the math
    ]
