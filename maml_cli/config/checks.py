"""The checks a composed config passes once, before anything is read or compiled: the schemas
(``conform``: unknown keys, wrong types) and ``validate`` (what types cannot say)."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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
    range_of,
)
from maml_cli.errors import UserError, one_of

# The scores after every inner step of every task are held in memory: [tasks, inner_steps + 1], twice.
MAX_SCORES = 100_000_000


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
    return conform(read_saved_config(path), source=str(path))


def read_saved_config(path: Path) -> DictConfig:
    """A run's config.yaml as written, or a UserError saying it is damaged (not YAML, not text,
    not a mapping, not a file)."""
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml's parse errors, UnicodeDecodeError, IsADirectoryError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is damaged ({reason}): it is the run's record of its config; restore it from the "
            "checkpoint's own copy (checkpoints/STEP/provenance/metadata) or train in another folder"
        ) from None
    if not isinstance(loaded, DictConfig):
        raise UserError(f"{path} is damaged (not a mapping of settings): restore it or train in another folder")
    return loaded


def _schema_of(node, hint) -> type | None:
    """The dataclass ``node`` was composed against (a dataset's own, say), else the field's type."""
    for candidate in (OmegaConf.get_type(node) if isinstance(node, DictConfig) else None, hint):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _numbers(value) -> list[tuple[str, Any]]:
    """(index suffix, number) of a value: itself, or each element of a list."""
    items = (
        [(f"[{i}]", v) for i, v in enumerate(value)] if isinstance(value, (list, tuple, ListConfig)) else [("", value)]
    )
    return [(i, v) for i, v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def range_problems(node: DictConfig, schema: type | None = None, prefix: str = "") -> list[str]:
    """Every number of ``node`` (a config composed against the schemas: a training config, a
    command's) outside the ``Range`` its field declares (``schema.opt``), as ``KEY must be >= N
    (got V)``; a list's elements each. Fields are found through the schemas, so a key added to
    them is checked without a line here."""
    schema = _schema_of(node, schema)
    if schema is None:
        return []
    hints = typing.get_type_hints(schema)
    problems = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if f.name not in node.keys() or OmegaConf.is_missing(node, f.name):  # noqa: SIM118 (see validate)
            continue
        try:
            value = node[f.name]
        except OmegaConfBaseException as e:  # an interpolation that does not resolve, or to the wrong type
            problems.append(f"{key}: {str(e).splitlines()[0]}")
            continue
        if isinstance(value, DictConfig):
            problems += range_problems(value, hints.get(f.name), f"{key}.")
            continue
        allowed = range_of(schema, f.name)
        if allowed is None or value is None:
            continue
        nullable = type(None) in typing.get_args(hints.get(f.name))
        for index, number in _numbers(value):
            problem = allowed.problem(number)
            if problem:
                problems.append(f"{key}{index} {problem}{' or null' if nullable and not index else ''} (got {number})")
    return problems


def raise_problems(problems: list[str]) -> None:
    """UserError with ``invalid config: ...``: every problem, on one line."""
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))


def check_values(cfg: DictConfig) -> DictConfig:
    """Raise a UserError when a number of ``cfg`` lies outside its field's range: the check that
    maml-eval's and maml-adapt's own keys pass (``composing.compose_checked``, ``Run.evaluate``,
    ``Run.adapt``), as ``validate`` runs it on a training config."""
    raise_problems(range_problems(cfg))
    return cfg


def typed_values(schema: type, values: dict) -> DictConfig:
    """``values`` (keyword arguments of the Python API) on ``schema``, checked as the command
    line's are: a wrong type or a number out of range is a UserError naming the key."""
    node = OmegaConf.structured(schema)
    for key, value in values.items():
        try:
            node[key] = value
        except OmegaConfBaseException as e:
            text = str(e).splitlines()[0]
            text = re.sub(
                r"Value '(.*)' of type '\w+' could not be converted to (\w+)",
                lambda m: f"{m.group(1)!r} is not a valid {m.group(2).lower()}",
                text,
            )
            raise UserError(f"{key}={value!r}: {text}") from None
    return check_values(node)


def validate(cfg: DictConfig) -> None:
    """Checks that types cannot express: every number within its range (``range_problems``), then
    the keys that must agree. Raises UserError with every problem found."""
    typed = conform(cfg)
    problems = []

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
    out_of_range = range_problems(typed)
    if out_of_range:  # the checks below compare numbers, which must be in range first
        raise_problems(problems + out_of_range)
    d, a, t, e = typed.dataset, typed.algorithm, typed.train, typed.eval
    if d.name in ("sinusoid", "function"):
        need(d.ways == 1, f"{d.name} is regression: dataset.ways must be 1 (got {d.ways})")
    if d.name == "sinusoid":
        need(d.amplitude_min <= d.amplitude_max, "dataset.amplitude_min must be <= amplitude_max")
        need(d.phase_min <= d.phase_max, "dataset.phase_min must be <= phase_max")
        need(d.x_min < d.x_max, "dataset.x_min must be < x_max")
    if d.name == "image_folder":
        need(d.layout in IMAGE_FOLDER_LAYOUTS, one_of("dataset.layout", d.layout, IMAGE_FOLDER_LAYOUTS))
        need(d.channels in (None, 1, 3), f"dataset.channels must be 1, 3 or null (got {d.channels})")
        need(d.resample in IMAGE_RESAMPLE, one_of("dataset.resample", d.resample, IMAGE_RESAMPLE))
        for key in ("train_classes", "val_classes"):
            need(
                d[key] < 1 or d[key] == int(d[key]),
                f"dataset.{key} must be a whole number of classes or a fraction below 1 (got {d[key]})",
            )
    need(t.grad_clip_scope in GRAD_CLIP_SCOPES, one_of("train.grad_clip_scope", t.grad_clip_scope, GRAD_CLIP_SCOPES))
    need(t.task_batching in TASK_BATCHING, one_of("train.task_batching", t.task_batching, TASK_BATCHING))
    need(
        str(t.devices) == "auto" or (re.fullmatch(r"[0-9]+", str(t.devices)) is not None and int(t.devices) >= 1),
        f"train.devices must be auto or a number >= 1 (got {t.devices!r})",
    )
    for key in ("episodes", "val_episodes"):
        need(
            e[key] * (e.inner_steps + 1) <= MAX_SCORES,
            f"eval.{key} x (eval.inner_steps + 1) must be <= {MAX_SCORES}: the score after every inner step "
            f"of every task is kept (got {e[key]} x {e.inner_steps + 1}); take fewer tasks or steps",
        )
    problems += _algorithm_problems(a, typed.model, t)
    raise_problems(problems)


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
        if a.cosine_annealing and not 0 < a.min_outer_lr <= t.outer_lr:
            problems.append(f"algorithm.min_outer_lr must be in (0, train.outer_lr] (got {a.min_outer_lr})")
    return problems
