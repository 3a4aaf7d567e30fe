"""Scoring a trained run on fresh tasks: the record that maml-eval writes as eval.json and that
``Run.evaluate`` returns. Nothing here writes: the command does."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from maml_cli import strict_json
from maml_cli.config import SPLITS, conform, validate
from maml_cli.config.checks import check_values, load_run_config
from maml_cli.config.composing import absolute_paths
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.scoring import DIVERGED_RULE, eval_key, run_episodes, summarize
from maml_cli.errors import UserError, one_of
from maml_cli.models import describe_batch_norm
from maml_cli.paths import checked_path
from maml_cli.run.directory import environment
from maml_cli.run.provenance import run_id_of
from maml_cli.run.reader import check_trained, check_utf8_name, open_run, preprocessing, restore_chosen, run_spec
from maml_cli.run.records import FLAG_RULE, eval_options
from maml_cli.run.selection import checkpoint_steps

# Keys of a cross-domain dataset that follow the run unless given: the task shape it was trained on.
RUN_TASK_KEYS = ("ways", "shots", "query_shots")


def cross_domain_dataset(app_dataset: DictConfig, run_cfg: DictConfig, run_shape: tuple, given: set) -> DictConfig:
    """The dataset to score the run on: ``app_dataset`` with what was not given taken from the run
    (its task shape, its image size and channels, how its images were read). Every class of a
    folder is a test class unless the split was given."""

    d = OmegaConf.to_container(app_dataset, resolve=True)
    for key, value in preprocessing(run_cfg.dataset).items():  # as maml-adapt reads images for this run
        if key in d and f"dataset.{key}" not in given:
            d[key] = value
    for key in RUN_TASK_KEYS:
        if f"dataset.{key}" not in given and key in run_cfg.dataset:
            d[key] = run_cfg.dataset[key]
    if len(run_shape) == 3:
        for key, value in (("image_size", run_shape[0]), ("channels", run_shape[2])):
            if key in d and f"dataset.{key}" not in given:
                d[key] = value
    if d.get("name") == "image_folder" and not {"dataset.train_classes", "dataset.val_classes"} & given:
        d["train_classes"], d["val_classes"] = 0, 0
    return OmegaConf.create(d)


@dataclass
class EvaluationPlan:
    """What ``check_evaluation`` found, all of it without reading data or compiling: the run's config
    as it will be scored, its task shape, and the checkpoints its ``checkpoint=`` names (chosen now;
    chosen again when restored if a live trainer deleted them since)."""

    app: DictConfig
    run_dir: Path
    run_cfg: DictConfig  # the run's own config (what checkpoint=best ranks by)
    cfg: DictConfig  # as it is scored: the eval.* settings given, the data where it is now
    metric: str
    run_shape: tuple
    chosen: tuple  # checkpoint_steps's (steps, how they were chosen)
    trained_on: dict
    cross_domain: bool


def evaluate_run(app: DictConfig, given: set = frozenset(), trust_code: bool = False) -> dict:
    """Score the run named by ``app.run_dir`` (an ``EvalAppConfig``); returns the eval.json record.
    ``given``: the dataset keys the user set (``dataset.ways``, ...), which a cross-domain dataset
    keeps instead of following the run; ``trust_code``: the run may import the code its config names."""
    return score_evaluation(check_evaluation(app, given=given, trust_code=trust_code))


def check_evaluation(app: DictConfig, given: set = frozenset(), trust_code: bool = False) -> EvaluationPlan:
    """Every check of scoring ``app.run_dir`` that needs no data read and nothing compiled: the
    options, the run (it opens, its name can be read, it has checkpoints), the checkpoint
    ``checkpoint=`` names (it exists), and the config it is scored with. maml-eval -m runs these for
    every job before the first is scored."""

    run_dir = checked_path(app.run_dir, "run_dir")
    if app.split not in SPLITS:
        raise UserError(one_of("split", app.split, SPLITS))
    check_values(app)  # eval.episodes, eval.seed, ...: each within its range (EvalOverrides)
    check_utf8_name(run_dir)  # made absolute: a working directory whose name is not UTF-8 too
    run_cfg = open_run(
        run_dir, app.devices, trust_code=trust_code
    )  # scored in one process on these devices, whatever trained it
    check_trained(run_dir)
    cfg = copy.deepcopy(run_cfg)  # run_cfg stays the run's own: checkpoint=best ranks by it
    spec = run_spec(run_dir, cfg)
    run_shape = spec.input_shape
    # Chosen by the run's own validation, before anything is read or compiled.
    chosen = checkpoint_steps(run_dir, run_cfg, spec.metric, app.checkpoint)
    for key, value in app.eval.items():
        if value is not None:
            cfg.eval[key] = value
    if app.transductive is not None:
        if cfg.algorithm.name != "reptile":
            raise UserError(
                f"transductive= is Reptile's evaluation switch; this run is {cfg.algorithm.name}, whose "
                "batch norm mode is the model's (model.batch_norm in its config.yaml)"
            )
        cfg.algorithm.transductive = bool(app.transductive)
    trained_on = OmegaConf.to_container(cfg.dataset, resolve=True)
    cross_domain = bool(app.dataset.get("name"))
    if cross_domain:
        new = cross_domain_dataset(app.dataset, cfg, run_shape, given)
        if new.ways != cfg.dataset.ways:
            raise UserError(
                f"the run was trained on {cfg.dataset.ways}-way tasks (its model has {cfg.dataset.ways} "
                f"outputs); it cannot score dataset.ways={new.ways}. For fewer classes of your own, "
                "use maml-adapt (it masks the unused outputs)"
            )
        if (
            len(run_shape) == 3
            and "image_size" in new
            and (new.image_size, new.get("channels") or run_shape[2]) != (run_shape[0], run_shape[2])
        ):
            raise UserError(
                f"the run's model takes {run_shape[0]}x{run_shape[1]} images with {run_shape[2]} "
                f"channel(s); dataset.image_size={new.image_size} dataset.channels={new.get('channels')} "
                "do not match: leave them unset to follow the run"
            )
        raw = OmegaConf.to_container(cfg, resolve=True)
        raw["dataset"] = OmegaConf.to_container(new)
        cfg = conform(OmegaConf.create(raw), source="the cross-domain dataset")
    else:
        with open_dict(cfg.dataset):
            for key, value in app.dataset.items():
                if value is not None:
                    cfg.dataset[key] = value
    absolute_paths(cfg)
    validate(cfg)

    return EvaluationPlan(
        app=app,
        run_dir=run_dir,
        run_cfg=run_cfg,
        cfg=cfg,
        metric=spec.metric,
        run_shape=tuple(run_shape),
        chosen=chosen,
        trained_on=trained_on,
        cross_domain=cross_domain,
    )


def score_evaluation(plan: EvaluationPlan) -> dict:
    """Score what ``check_evaluation`` checked: the data read, the checkpoints restored (chosen again
    if a live trainer deleted them since), the tasks adapted and scored; returns the eval.json record."""
    app, cfg = plan.app, plan.cfg
    exp = build_experiment(cfg, training=False)
    exp.plan.use_compilation_cache()
    if hasattr(exp.sampler, "require"):
        exp.sampler.require(app.split)
    if tuple(exp.spec.input_shape) != tuple(plan.run_shape):
        raise UserError(
            f"the run's model takes examples of shape {tuple(plan.run_shape)}, but dataset "
            f"{cfg.dataset.name} gives {tuple(exp.spec.input_shape)}: set dataset.image_size / "
            "dataset.channels to the run's (or leave them unset to follow it)"
        )
    states, selected_by = restore_chosen(
        exp, plan.run_dir, plan.run_cfg, plan.metric, app.checkpoint, chosen=plan.chosen
    )
    values = _score_tasks(exp, app, states)
    return _record(plan, exp, summarize(values), [int(s.step) for s in states], selected_by)


def _score_tasks(exp, app: DictConfig, states: list) -> dict:
    """Every evaluation task adapted and scored after each inner step; several checkpoints are
    stacked on a leading axis, each adapted on its own, and their query outputs averaged per task."""
    ensemble = len(states) > 1
    if ensemble:
        meta_params, meta_state = jax.tree.map(
            lambda *xs: jax.numpy.stack(xs), *[(s.meta_params, s.meta_state) for s in states]
        )
    else:
        meta_params, meta_state = states[0].meta_params, states[0].meta_state
    e = exp.cfg.eval
    score = exp.scorer(app.split, e.inner_steps, ensemble=ensemble)
    shown = app.progress and sys.stderr.isatty()
    with tqdm(total=e.episodes, unit="task", desc=f"eval {app.split}", disable=not shown) as bar:
        return run_episodes(
            score,
            meta_params,
            meta_state,
            exp.data,
            eval_key(e.seed, app.split),
            e.episodes,
            exp.eval_batch(min(e.batch_size, e.episodes)),
            on_batch=bar.update,
        )


def _record(plan: EvaluationPlan, exp, per_step: list, used: list, selected_by: str) -> dict:
    """The eval.json record: the figures per inner step and everything that says what was scored."""
    app, cfg, run_dir, e = plan.app, plan.cfg, plan.run_dir, plan.cfg.eval
    record = {
        "metric": exp.metric,
        "episodes": int(e.episodes),
        "split": app.split,
        "checkpoint_step": used[0],
        # Which checkpoints were scored and why: the latest, a given step, or the best by validation
        # (several: an ensemble whose query outputs were averaged per task).
        "checkpoints": used,
        "checkpoint_selection": selected_by,
        "inner_lr": float(cfg.algorithm.inner_lr),
        "inner_steps": int(e.inner_steps),
        "query_shots": int(cfg.dataset.query_shots if e.query_shots is None else e.query_shots),
        "eval_seed": int(e.seed),
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        # Which data the tasks came from; cross-domain: not the data the run was trained on.
        "data": {
            "name": cfg.dataset.name,
            "source": exp.sampler.source,
            "cross_domain": plan.cross_domain,
            "trained_on": {k: plan.trained_on.get(k) for k in ("name", "path") if k in plan.trained_on},
        },
        "algorithm": cfg.algorithm.name,
        "first_order": bool(cfg.algorithm.first_order),
        "algorithm_settings": OmegaConf.to_container(cfg.algorithm, resolve=True),  # transductive= included
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        # How batch norm normalises, stated because results depend on it: "transductive" uses the
        # statistics of the batch at hand (support when adapting, query when scoring), as MAML did;
        # "per_step (running statistics at evaluation)" those accumulated in meta-training (MAML++).
        "batch_norm": describe_batch_norm(cfg.model),
        "ci": "1.96 * std / sqrt(episodes)",
        "diverged_rule": DIVERGED_RULE,
        "run": str(run_dir.resolve()),
        # The run's id (environment.json, kept by a copy of the folder): maml-report reads a record
        # only for the run it was scored from.
        "run_id": run_id_of(run_dir),
        "per_step": per_step,
        "environment": environment(),
    }
    record["flag_rule"] = FLAG_RULE  # when a step's mean is flagged (per_step[i]["flagged"])
    # How it was scored, where that differs from the run's defaults ({}: the run's eval.json).
    record["options"] = eval_options(record, load_run_config(run_dir))
    record["nonfinite_values"] = strict_json.finite_or_none(record)[1]  # written as null
    return record
