"""The checks a composed config passes once, before anything is read or compiled: the schemas
(``conform``: unknown keys, wrong types) and ``validate`` (what types cannot say)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from maml_cli.config.schema import (
    ALGORITHM_SCHEMAS,
    DATASET_SCHEMAS,
    GRAD_CLIP_SCOPES,
    IMAGE_FOLDER_LAYOUTS,
    IMAGE_RESAMPLE,
    LOGGER_SCHEMAS,
    MODEL_SCHEMAS,
    TASK_BATCHING,
    TrainConfig,
)
from maml_cli.errors import UserError, one_of


def _typed(schemas: dict, node: Any, group: str) -> DictConfig:
    name = node.get("name")
    if name not in schemas:
        raise UserError(f"unknown {group} {name!r}; known: {', '.join(sorted(schemas))}")
    return OmegaConf.merge(OmegaConf.structured(schemas[name]), node)


def conform(raw: Any, source: str = "config") -> DictConfig:
    """``raw`` merged onto the schemas, so keys the schemas lack (say ``+train.stepz=3``, which
    Hydra lets through) and wrong types fail here with a UserError."""
    if isinstance(raw, DictConfig):  # drop the node types so every key is checked afresh
        raw = OmegaConf.create(OmegaConf.to_container(raw, resolve=False))
    try:
        return OmegaConf.merge(
            OmegaConf.structured(TrainConfig),
            {
                "dataset": _typed(DATASET_SCHEMAS, raw.dataset, "dataset"),
                "model": _typed(MODEL_SCHEMAS, raw.model, "model"),
                "algorithm": _typed(ALGORITHM_SCHEMAS, raw.algorithm, "algorithm"),
                **({"logger": _typed(LOGGER_SCHEMAS, raw.logger, "logger")} if raw.get("logger") else {}),
            },
            raw,
        )
    except UserError:
        raise
    except Exception as e:  # omegaconf's key and validation errors
        raise UserError(f"{source} does not match the config schema: {e}") from e


def load_run_config(run_dir: Path) -> DictConfig:
    """The resolved config a maml-train run saved, re-checked against the schemas."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not a maml-train run directory (no config.yaml); "
            "pass run_dir=PATH of a directory that maml-train wrote"
        )
    return conform(OmegaConf.load(path), source=str(path))


def validate(cfg: DictConfig) -> None:
    """Checks that types cannot express. Raises UserError with every problem found."""
    conform(cfg)
    problems = []
    d, a, t, e = cfg.dataset, cfg.algorithm, cfg.train, cfg.eval

    def need(ok: bool, msg: str) -> None:
        if not ok:
            problems.append(msg)

    for section in ("dataset", "model"):
        node = cfg[section]
        if "target" in node.keys():  # noqa: SIM118 (``in node`` is false while the value is missing)
            need(
                not OmegaConf.is_missing(node, "target") and _is_target(node.target),
                f"{section}={node.name} needs {section}.target=module.path:name, the Python object to import "
                f"(got {node._get_node('target')._value()!r})",
            )
    need(d.ways >= 1, f"dataset.ways must be >= 1 (got {d.ways})")
    need(d.shots >= 1, f"dataset.shots must be >= 1 (got {d.shots})")
    need(d.query_shots >= 1, f"dataset.query_shots must be >= 1 (got {d.query_shots})")
    if d.name in ("sinusoid", "function"):
        need(d.ways == 1, f"{d.name} is regression: dataset.ways must be 1 (got {d.ways})")
    if d.name == "sinusoid":
        need(d.amplitude_min <= d.amplitude_max, "dataset.amplitude_min must be <= amplitude_max")
        need(d.phase_min <= d.phase_max, "dataset.phase_min must be <= phase_max")
        need(d.x_min < d.x_max, "dataset.x_min must be < x_max")
    if d.name == "image_folder":
        need(d.layout in IMAGE_FOLDER_LAYOUTS, one_of("dataset.layout", d.layout, IMAGE_FOLDER_LAYOUTS))
        need(d.channels in (None, 1, 3), f"dataset.channels must be 1, 3 or null (got {d.channels})")
        need(d.image_size >= 1, f"dataset.image_size must be >= 1 (got {d.image_size})")
        need(d.resample in IMAGE_RESAMPLE, one_of("dataset.resample", d.resample, IMAGE_RESAMPLE))
        for key in ("train_classes", "val_classes"):
            need(
                d[key] >= 0 and (d[key] < 1 or d[key] == int(d[key])),
                f"dataset.{key} must be a whole number of classes or a fraction below 1 (got {d[key]})",
            )
    need(a.inner_lr >= 0, f"algorithm.inner_lr must be >= 0 (got {a.inner_lr})")
    need(a.inner_steps >= 0, f"algorithm.inner_steps must be >= 0 (got {a.inner_steps})")
    need(t.steps >= 0, f"train.steps must be >= 0 (got {t.steps})")
    need(t.meta_batch_size >= 1, f"train.meta_batch_size must be >= 1 (got {t.meta_batch_size})")
    need(t.outer_lr > 0, f"train.outer_lr must be > 0 (got {t.outer_lr})")
    need(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip must be > 0 or null")
    need(t.grad_clip_value is None or t.grad_clip_value > 0, "train.grad_clip_value must be > 0 or null")
    for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "steps_per_call"):
        need(t[key] >= 1, f"train.{key} must be >= 1 (got {t[key]})")
    need(t.keep_best >= 0, f"train.keep_best must be >= 0 (got {t.keep_best})")
    need(t.grad_clip_scope in GRAD_CLIP_SCOPES, one_of("train.grad_clip_scope", t.grad_clip_scope, GRAD_CLIP_SCOPES))
    need(t.task_batching in TASK_BATCHING, one_of("train.task_batching", t.task_batching, TASK_BATCHING))
    need(
        str(t.devices) == "auto" or (str(t.devices).isdigit() and int(t.devices) >= 1),
        f"train.devices must be auto or a number >= 1 (got {t.devices!r})",
    )
    need(e.episodes >= 1, f"eval.episodes must be >= 1 (got {e.episodes})")
    need(e.inner_steps >= 0, f"eval.inner_steps must be >= 0 (got {e.inner_steps})")
    need(e.val_episodes >= 1, f"eval.val_episodes must be >= 1 (got {e.val_episodes})")
    need(e.batch_size >= 1, f"eval.batch_size must be >= 1 (got {e.batch_size})")
    need(e.query_shots is None or e.query_shots >= 1, f"eval.query_shots must be >= 1 or null (got {e.query_shots})")
    need(t.time_limit_minutes is None or t.time_limit_minutes > 0, "train.time_limit_minutes must be > 0 or null")
    problems += _algorithm_problems(a, cfg.model, t)
    if cfg.model.name == "conv4":
        m = cfg.model
        need(m.bn_epsilon > 0, f"model.bn_epsilon must be > 0 (got {m.bn_epsilon})")
        need(0 < m.bn_momentum <= 1, f"model.bn_momentum must be in (0, 1] (got {m.bn_momentum})")
    if len(problems) == 1:
        raise UserError(f"invalid config: {problems[0]}")
    if problems:
        raise UserError("invalid config:\n  " + "\n  ".join(problems))


def _is_target(value) -> bool:
    """``module.path:name`` or ``module.path.name``, names Python could import."""
    module, _, name = str(value).replace(":", ".").rpartition(".")
    return bool(module) and all(part.isidentifier() for part in [*module.split("."), name])


def _algorithm_problems(a, model, t) -> list[str]:
    problems = []
    per_step_bn = model.get("batch_norm") == "per_step"
    if a.name == "anil" and per_step_bn:
        problems.append(
            "algorithm=anil computes the body's features once per task: it cannot use "
            "model.batch_norm=per_step (per inner step); use transductive or none"
        )
    if per_step_bn and a.inner_steps < 1:
        problems.append("model.batch_norm=per_step needs algorithm.inner_steps >= 1")
    if a.name == "metasgd" and a.lr_init_range is not None:
        r = list(a.lr_init_range)
        if len(r) != 2 or r[0] > r[1]:
            problems.append(f"algorithm.lr_init_range must be [low, high] with low <= high (got {r})")
    if a.name == "mamlpp":
        if a.inner_steps < 1:
            problems.append("algorithm=mamlpp needs algorithm.inner_steps >= 1")
        if a.multi_step_loss and a.multi_step_loss_steps < 1:
            problems.append("algorithm.multi_step_loss_steps must be >= 1 (or multi_step_loss=false)")
        if a.first_order_steps < 0:
            problems.append(f"algorithm.first_order_steps must be >= 0 (got {a.first_order_steps})")
        if a.cosine_annealing and not 0 < a.min_outer_lr <= t.outer_lr:
            problems.append(f"algorithm.min_outer_lr must be in (0, train.outer_lr] (got {a.min_outer_lr})")
    if a.name == "reptile":
        for key in ("inner_batch_size", "eval_inner_batch_size"):
            if a[key] < 1:
                problems.append(f"algorithm.{key} must be >= 1 (got {a[key]})")
        if a.train_shots is not None and a.train_shots < 1:
            problems.append(f"algorithm.train_shots must be >= 1 or null (got {a.train_shots})")
        if not a.outer_step_size > 0 or a.outer_step_size_final < 0:
            problems.append("algorithm.outer_step_size must be > 0 and outer_step_size_final >= 0")
    return problems
