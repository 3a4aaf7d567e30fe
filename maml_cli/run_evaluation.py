"""Scoring a trained run on fresh tasks: the record that maml-eval writes as eval.json and that
``Run.evaluate`` returns. Nothing here writes: the command does."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from maml_cli import strict_json
from maml_cli.composing import absolute_paths
from maml_cli.config import SPLITS, conform, validate
from maml_cli.errors import UserError, one_of

# Keys of a cross-domain dataset that follow the run unless given: the task shape it was trained on.
RUN_TASK_KEYS = ("ways", "shots", "query_shots")


def cross_domain_dataset(app_dataset: DictConfig, run_cfg: DictConfig, run_shape: tuple, given: set) -> DictConfig:
    """The dataset to score the run on: ``app_dataset`` with what was not given taken from the run
    (its task shape, its image size and channels, how its images were read). Every class of a
    folder is a test class unless the split was given."""
    from maml_cli.runs import preprocessing

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


def evaluate_run(app: DictConfig, given: set = frozenset(), trust_code: bool = False) -> dict:
    """Score the run named by ``app.run_dir`` (an ``EvalAppConfig``); returns the eval.json record.
    ``given``: the dataset keys the user set (``dataset.ways``, ...), which a cross-domain dataset
    keeps instead of following the run; ``trust_code``: the run may import the code its config names."""
    from tqdm import tqdm

    from maml_cli.execution import enable_compilation_cache
    from maml_cli.experiment import build_experiment
    from maml_cli.models import describe_batch_norm
    from maml_cli.run_dir import environment
    from maml_cli.runs import check_trained, checkpoint_steps, open_run, restore_state, run_spec
    from maml_cli.scoring import DIVERGED_RULE, eval_key, run_episodes, summarize

    enable_compilation_cache()

    run_dir = Path(app.run_dir)
    if app.split not in SPLITS:
        raise UserError(one_of("split", app.split, SPLITS))
    cfg = open_run(
        run_dir, app.devices, trust_code=trust_code
    )  # scored in one process on these devices, whatever trained it
    check_trained(run_dir)
    spec = run_spec(run_dir, cfg)
    run_shape = spec.input_shape
    # Chosen by the run's own validation, before anything is read or compiled.
    steps, selected_by = checkpoint_steps(run_dir, cfg, spec.metric, app.checkpoint)
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

    exp = build_experiment(cfg, training=False)
    if hasattr(exp.sampler, "require"):
        exp.sampler.require(app.split)
    if tuple(exp.spec.input_shape) != tuple(run_shape):
        raise UserError(
            f"the run's model takes examples of shape {tuple(run_shape)}, but dataset "
            f"{cfg.dataset.name} gives {tuple(exp.spec.input_shape)}: set dataset.image_size / "
            "dataset.channels to the run's (or leave them unset to follow it)"
        )
    states = [restore_state(exp, run_dir, s) for s in steps]
    ensemble = len(states) > 1
    if ensemble:  # the checkpoints stacked on a leading axis, each adapted on its own
        import jax

        stacked = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *[(s.meta_params, s.meta_state) for s in states])
        meta_params, meta_state = stacked
    else:
        meta_params, meta_state = states[0].meta_params, states[0].meta_state
    used = [int(s.step) for s in states]

    e = cfg.eval
    score = exp.scorer(app.split, e.inner_steps, ensemble=ensemble)
    with tqdm(
        total=e.episodes, unit="task", desc=f"eval {app.split}", disable=not (app.progress and sys.stderr.isatty())
    ) as bar:
        values = run_episodes(
            score,
            meta_params,
            meta_state,
            exp.data,
            eval_key(e.seed, app.split),
            e.episodes,
            exp.eval_batch(min(e.batch_size, e.episodes)),
            on_batch=bar.update,
        )
    per_step = summarize(values)
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
            "cross_domain": cross_domain,
            "trained_on": {k: trained_on.get(k) for k in ("name", "path") if k in trained_on},
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
        "per_step": per_step,
        "environment": environment(),
    }
    record["nonfinite_values"] = strict_json.finite_or_none(record)[1]  # written as null
    return record


def record_path(app: DictConfig, other_dataset: str | None = None) -> Path:
    """Where the record goes: ``output``, else the run's eval.json (eval_NAME.json when scored on
    another dataset, so the run's own record is kept)."""
    if app.get("output"):
        return Path(app.output)
    return Path(app.run_dir) / ("eval.json" if other_dataset is None else f"eval_{other_dataset}.json")


def _fmt(value, scale: float, unit: str) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value * scale:.4f}{unit}"


def format_table(record: dict) -> str:
    """The per-step table; a step where tasks diverged is flagged (its mean is not to be quoted
    bare), with the mean over the other tasks beside it."""
    scale, unit = (100.0, "%") if record["metric"] == "accuracy" else (1.0, "")
    used = record.get("checkpoints", [record["checkpoint_step"]])
    which = f"checkpoint step {used[0]}" if len(used) == 1 else f"ensemble of checkpoints {', '.join(map(str, used))}"
    if record.get("checkpoint_selection", "").startswith("best"):
        which += f" ({record['checkpoint_selection']})"
    lines = [
        f"{record['split']} {record['metric']} over {record['episodes']} tasks, {which} (mean +- 95% CI)",
        f"{'inner step':>10}  {record['metric']:>22}  {'median':>10}  {'diverged':>8}",
    ]
    flagged = False
    for row in record["per_step"]:
        n = row.get("diverged", 0)
        mean = f"{_fmt(row['mean'], scale, unit)} +- {_fmt(row['ci95'], scale, unit)}"
        line = f"{row['step']:>10}  {mean:>22}  {_fmt(row.get('median'), scale, unit):>10}  {n:>8}"
        if n:
            flagged = True
            line += (
                f"  ! without them: {_fmt(row.get('mean_without_diverged'), scale, unit)} +- "
                f"{_fmt(row.get('ci95_without_diverged'), scale, unit)}"
            )
        lines.append(line)
    if flagged:
        lines.append(f"! {record.get('diverged_rule', 'diverged tasks')}; their mean is dominated by them")
    return "\n".join(lines)


def diverged_warning(record: dict) -> str | None:
    """One line for stderr when any task diverged, else None."""
    bad = [(r["step"], r["diverged"]) for r in record["per_step"] if r.get("diverged")]
    if not bad:
        return None
    first, worst = bad[0][0], max(n for _, n in bad)
    return (
        f"warning: {worst} of {record['episodes']} tasks diverged (from inner step {first}): the mean of "
        f"those steps is not to be quoted bare; see the median and the mean without them"
    )
