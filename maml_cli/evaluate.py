"""maml-eval: score a run's checkpoint on fresh tasks and write ``eval.json`` and ``eval.png``
into the run.

    maml-eval run_dir=runs/sine                       # latest checkpoint, test split
    maml-eval run_dir=runs/sine checkpoint=5000 eval.episodes=1000 eval.inner_steps=10 split=val
    maml-eval run_dir=runs/o5 dataset.path=/new/place/of/omniglot   # the data moved since training
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from maml_cli import cli
from maml_cli.config import SPLITS, UserError, load_run_config, one_of, register_configs, validate

log = logging.getLogger("maml_cli.evaluate")
register_configs()
for _name in ("jax._src.xla_bridge", "matplotlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Orbax (through absl) logs what it then raises, and notes about read-only access; a reader's
# errors are reported once, by us.
logging.getLogger("absl").setLevel(logging.CRITICAL)

APP = cli.App("maml-eval", "eval", groups=(), usage="""\
maml-eval: score a maml-train run on fresh tasks; writes eval.json and eval.png into the run.

Usage:
  maml-eval run_dir=PATH [KEY=VALUE ...]
  maml-eval -m run_dir=A,B,C                       several runs, one after another

Examples:
  maml-eval run_dir=runs/o5                        # latest checkpoint, 600 test tasks
  maml-eval run_dir=runs/o5 checkpoint=20000 split=val eval.inner_steps=10
  maml-eval run_dir=runs/o5 dataset.path=DIR       # the data moved since training

The model, algorithm and dataset are the run's own (its config.yaml); the keys below change only
how it is scored and where its data is now.""")


def evaluate_run(app: DictConfig) -> dict:
    """Evaluate the run named by ``app.run_dir``; returns (and writes) the eval.json record."""
    from tqdm import tqdm

    from maml_cli import plots
    from maml_cli.checkpoints import Checkpointer
    from maml_cli.evaluation import eval_key, run_episodes, summarize
    from maml_cli.execution import enable_compilation_cache
    from maml_cli.experiment import build_experiment
    from maml_cli.models import describe_batch_norm
    from maml_cli.run_dir import atomic_write_text, environment

    enable_compilation_cache()

    run_dir = Path(app.run_dir)
    if app.split not in SPLITS:
        raise UserError(one_of("split", app.split, SPLITS))
    if not run_dir.is_dir():
        raise UserError(f"run_dir={run_dir} {'is a file' if run_dir.exists() else 'does not exist'}: pass "
                        "the folder maml-train wrote (its hydra.run.dir, or runs/<date>_<time>)")
    cfg = load_run_config(run_dir)
    for key, value in app.eval.items():
        if value is not None:
            cfg.eval[key] = value
    with open_dict(cfg.dataset):
        for key, value in app.dataset.items():
            if value is not None:
                cfg.dataset[key] = value
    cfg.train.devices = app.devices  # where it is scored now, not where it was trained
    for key in ("coordinator", "num_processes", "process_id"):  # one process, whatever trained the run
        cfg.distributed[key] = None
    cli.absolute_paths(cfg)
    validate(cfg)
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{run_dir} has no checkpoints/ yet: train it first (maml-train hydra.run.dir={run_dir})")

    exp = build_experiment(cfg, training=False)
    checkpointer = Checkpointer(run_dir / "checkpoints", read_only=True)
    try:
        state = exp.place(checkpointer.restore(exp.init_state(), app.checkpoint))
    finally:
        checkpointer.close()
    step = int(state.step)

    e = cfg.eval
    score = exp.scorer(app.split, e.inner_steps)
    with tqdm(total=e.episodes, unit="task", desc=f"eval {app.split}",
              disable=not (app.progress and sys.stderr.isatty())) as bar:
        values = run_episodes(score, state.meta_params, state.meta_state, exp.data,
                              eval_key(e.seed, app.split), e.episodes, exp.eval_batch(min(e.batch_size, e.episodes)),
                              on_batch=bar.update)
    record = {
        "metric": exp.metric,
        "episodes": int(e.episodes),
        "split": app.split,
        "checkpoint_step": step,
        "inner_lr": float(cfg.algorithm.inner_lr),
        "inner_steps": int(e.inner_steps),
        "query_shots": int(cfg.dataset.query_shots if e.query_shots is None else e.query_shots),
        "eval_seed": int(e.seed),
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "algorithm": cfg.algorithm.name,
        "first_order": bool(cfg.algorithm.first_order),
        "algorithm_settings": OmegaConf.to_container(cfg.algorithm, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        # How batch norm normalises, stated because results depend on it: "transductive" uses the
        # statistics of the batch at hand (support when adapting, query when scoring), as MAML did;
        # "per_step (running statistics at evaluation)" those accumulated in meta-training (MAML++).
        "batch_norm": describe_batch_norm(cfg.model),
        "ci": "1.96 * std / sqrt(episodes)",
        "per_step": summarize(values),
        "environment": environment(),
    }
    try:
        atomic_write_text(run_dir / "eval.json", json.dumps(record, indent=2) + "\n")
        plots.eval_curve(record, run_dir / "eval.png")
    except OSError as err:
        print(format_table(record))
        raise UserError(f"cannot write eval.json into {run_dir} ({err.strerror or err}); the scores are above") from err
    return record


def format_table(record: dict) -> str:
    scale, unit = (100.0, "%") if record["metric"] == "accuracy" else (1.0, "")
    lines = [
        f"{record['split']} {record['metric']} over {record['episodes']} tasks, checkpoint step "
        f"{record['checkpoint_step']} (mean +- 95% CI)",
        f"{'inner step':>10}  {record['metric']:>18}",
    ]
    for row in record["per_step"]:
        lines.append(f"{row['step']:>10}  {row['mean'] * scale:>10.4f}{unit} +- {row['ci95'] * scale:.4f}{unit}")
    return "\n".join(lines)


def check_command_line(line: cli.CommandLine, composed: list) -> bool:
    """What maml-eval checks beyond the keys and types before Hydra starts."""
    if OmegaConf.is_missing(composed[0], "run_dir"):
        raise UserError("which run? pass run_dir=PATH, a directory maml-train wrote (maml-eval --help)")
    return True


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(APP, argv, check_command_line, run_job)


@hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="eval")
def run_job(app: DictConfig) -> None:
    try:
        record = evaluate_run(app)
    except UserError as e:
        cli.fail(APP, e)
    print(format_table(record))
    print(f"wrote {Path(app.run_dir) / 'eval.json'} and eval.png")


if __name__ == "__main__":
    main()
