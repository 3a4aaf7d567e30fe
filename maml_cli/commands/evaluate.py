"""maml-eval: score a run's checkpoint on fresh tasks and write ``eval.json`` and ``eval.png``
into the run.

    maml-eval run_dir=runs/sine                       # latest checkpoint, test split
    maml-eval run_dir=runs/sine checkpoint=5000 eval.episodes=1000 eval.inner_steps=10 split=val
    maml-eval run_dir=runs/o5 dataset.path=/new/place/of/omniglot   # the data moved since training
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from maml_cli import composing, strict_json
from maml_cli.commands import shell as cli
from maml_cli.config import register_configs
from maml_cli.errors import UserError
from maml_cli.run_evaluation import diverged_warning, evaluate_run, format_table, record_path

log = logging.getLogger("maml_cli.commands.evaluate")
register_configs()
for _name in ("jax._src.xla_bridge", "matplotlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Orbax (through absl) logs what it then raises, and notes about read-only access; a reader's
# errors are reported once, by us.
logging.getLogger("absl").setLevel(logging.CRITICAL)

APP = cli.App(
    "maml-eval",
    "eval",
    groups=("dataset",),
    exit_codes=cli.READER_EXIT_CODES,
    usage="""\
maml-eval: score a maml-train run on fresh tasks; writes eval.json and eval.png into the run.

Usage:
  maml-eval run_dir=PATH [KEY=VALUE ...]
  maml-eval -m run_dir=A,B,C                       several runs, one after another

Examples:
  maml-eval run_dir=runs/o5                        # latest checkpoint, 600 test tasks
  maml-eval run_dir=runs/o5 checkpoint=20000 split=val eval.inner_steps=10
  maml-eval run_dir=runs/o5 checkpoint=best        # the checkpoint with the best validation
  maml-eval run_dir=runs/o5 checkpoint=best:5      # ensemble of the 5 best (MAML++'s scoring)
  maml-eval run_dir=runs/o5 dataset.path=DIR       # the data moved since training
  maml-eval run_dir=runs/o5 dataset=image_folder dataset.path=DIR   # cross-domain: tasks from DIR

The model, algorithm and dataset are the run's own (its config.yaml); the keys below change only
how it is scored and where its data is now. With dataset=NAME the run is scored on that dataset's
tasks instead, recorded in eval_NAME.json (its "data" says which): ways, shots, query_shots, image
size and channels follow the run unless given, and every class of an image folder is a test class
unless a split is given.

Each inner step shows the mean +- 95% CI over tasks, the median and how many tasks diverged (query
loss not finite or over 10x its value before adaptation); a step with diverged tasks is flagged
with the mean over the others, and stderr says so.""",
)


def run_jobs(line: cli.CommandLine, composed: list) -> bool:
    """Score each run the command line names, one after another, in this process (Hydra creates
    nothing: maml-eval writes only the records)."""
    if OmegaConf.is_missing(composed[0], "run_dir"):
        raise UserError("which run? pass run_dir=PATH, a directory maml-train wrote (maml-eval --help)")
    given = {o.split("=", 1)[0].lstrip("+~") for o in line.overrides}
    for full in composed:
        app, _ = composing.split_hydra(full)
        record = evaluate_run(app, given=given, trust_code=bool(app.trust_code))
        output = write_record(app, record)
        print(format_table(record))
        warning = diverged_warning(record)
        if warning:
            print(warning, file=sys.stderr)
        if record["data"]["cross_domain"]:
            print(f"cross-domain: tasks from {record['data']['source']}")
        print(f"wrote {output} and {output.with_suffix('.png').name}")
    return False  # done: nothing is handed to Hydra


def write_record(app: DictConfig, record: dict) -> Path:
    """eval.json (or ``output``) and the plot beside it; the table is printed if they cannot be written."""
    from maml_cli import plots
    from maml_cli.run_dir import atomic_write_text

    output = record_path(app, record["data"]["name"] if record["data"]["cross_domain"] else None)
    try:
        atomic_write_text(output, strict_json.dumps(record, indent=2) + "\n")
        plots.eval_curve(record, output.with_suffix(".png"))
    except OSError as err:
        print(format_table(record))
        raise UserError(f"cannot write {output} ({err.strerror or err}); the scores are above") from err
    return output


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(APP, argv, run_jobs, hydra_job)


@hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="eval")
def hydra_job(app: DictConfig) -> None:
    """Reached only with Hydra's own flags (--cfg, --info, ...): Hydra prints what they ask for."""


if __name__ == "__main__":
    main()
