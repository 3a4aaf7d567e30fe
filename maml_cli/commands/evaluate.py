"""maml-eval: score a run's checkpoint on fresh tasks and write its record and plot into the run:
``eval.json`` and ``eval.png`` with the defaults, a file named from the options otherwise
(``eval_split-val_checkpoint-best.json``), so that no record of other options is overwritten.

    maml-eval run_dir=runs/sine                       # latest checkpoint, test split
    maml-eval run_dir=runs/sine checkpoint=5000 eval.episodes=1000 eval.inner_steps=10 split=val
    maml-eval run_dir=runs/o5 dataset.path=/new/place/of/omniglot   # the data moved since training
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from maml_cli import strict_json
from maml_cli.atomic import check_replaceable, write_text
from maml_cli.commands import shell as cli
from maml_cli.config import composing, register_configs
from maml_cli.errors import UserError
from maml_cli.paths import checked_path
from maml_cli.run import plots
from maml_cli.run.directory import is_run
from maml_cli.run.records import diverged_warning, format_table, record_path, scored_with

log = logging.getLogger("maml_cli.commands.evaluate")


def engine():
    """The scoring engine (JAX, Flax, Orbax: seconds to import), loaded once the command line has
    been checked: ``--help`` and a bad key answer without it."""
    from maml_cli.engine import evaluate

    return evaluate


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
maml-eval: score a maml-train run on fresh tasks; writes its record (eval.json) and plot into the run.

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

The defaults (latest checkpoint, test split, the run's eval.* settings) write eval.json, the record
maml-report reads; other options write a record of their own, named from them
(eval_split-val_checkpoint-best.json, eval_inner_steps-5.json, ...), beside eval_NAME.json of a
cross-domain score. output=FILE puts it elsewhere: a folder that is no run, or an eval*.json of this
run (stderr says so when that replaces a record of other options). With -m every job is checked
(its output, its run, the checkpoint it names) before the first is scored.

Each inner step shows the mean +- 95% CI over tasks, the median and how many tasks diverged (query
loss not finite or over 10x its value before adaptation); a step is flagged, with the mean over the
others, when leaving the diverged tasks out moves the mean by more than the 95% CI of the others'
mean (or the mean is not finite), and stderr says so.""",
)


def run_jobs(line: cli.CommandLine, composed: list) -> bool:
    """Score each run the command line names, one after another, in this process (Hydra creates
    nothing: maml-eval writes only the records)."""
    if OmegaConf.is_missing(composed[0], "run_dir"):
        raise UserError("which run? pass run_dir=PATH, a directory maml-train wrote (maml-eval --help)")
    given = {o.split("=", 1)[0].lstrip("+~") for o in line.overrides}
    # Every job's checks that need no compute (its output, the run, the checkpoint it names) before
    # the first is scored: a bad job found after another's record was written would leave half a sweep.
    plans = []
    for full in composed:
        app, _ = composing.split_hydra(full)
        check_output(app)
        plans.append(engine().check_evaluation(app, given=given, trust_code=bool(app.trust_code)))
    for plan in plans:
        record = engine().score_evaluation(plan)
        output = write_record(plan.app, record)
        print(format_table(record))
        warning = diverged_warning(record)
        if warning:
            print(warning, file=sys.stderr)
        if record["data"]["cross_domain"]:
            print(f"cross-domain: tasks from {record['data']['source']}")
        print(f"wrote {output} and {output.with_suffix('.png').name}")
    return False  # done: nothing is handed to Hydra


def check_output(app: DictConfig) -> None:
    """``output=`` before anything is scored: a file (not a folder, not the .png beside it) with a
    path that can be used (``maml_cli.paths``), in a folder that exists and can be written, and not a
    file that holds something other than a maml-eval record (replacing it would lose it). A record goes
    into its own run or into a folder that is no run (``check_output_place``)."""
    if not app.get("output"):
        return
    from maml_cli.run.reader import check_utf8_name

    path = checked_path(app.output, "output")  # UTF-8, lengths, no link to nothing
    check_utf8_name(path, "output")  # made absolute: a working directory whose name is not UTF-8 too
    if path.suffix.lower() == ".png":
        raise UserError(
            f"output={path} names the plot; name the record instead (a .json file): its .png goes beside it"
        )
    if path.is_dir():
        raise UserError(f"output={path} is a folder; name a file in it, e.g. output={path / 'eval.json'}")
    if not path.parent.is_dir():
        raise UserError(f"output={path}: the folder {path.parent} does not exist; create it or name a file elsewhere")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(f"output={path}: {path.parent} cannot be written; make it writable or name a file elsewhere")
    check_output_place(path, Path(app.run_dir))
    if path.exists() and read_record(path) is None:
        raise UserError(
            f"output={path} exists and is not a maml-eval record; replacing it would lose it: remove it or name "
            "another file"
        )


def check_output_place(path: Path, run_dir: Path) -> None:
    """Where the record lands must be a folder that is no run, or the scored run's own folder under an
    ``eval*.json`` name: a record in another run would be read as that run's (maml-report reads every
    run's eval.json), and any other name adds a file of the tool's own kind to the run. It lands in the
    real folder of ``path`` (links and ``..`` followed), under its name: a link there is replaced, as
    every file is (``maml_cli.atomic``), not written through."""
    target = Path(os.path.realpath(path.parent)) / path.name
    run = next((p for p in target.parents if is_run(p)), None)
    if run is None:
        return
    scored = Path(os.path.realpath(run_dir))
    if run != scored:
        raise UserError(
            f"output={path} is inside the run {run}, not the run scored ({run_dir}): its record would be read as "
            f"that run's; a record goes into its own run, or into a folder that is no run"
        )
    if target.parent != run:
        raise UserError(
            f"output={path} is inside {target.parent.relative_to(run)}/ of the run: its record goes into the run "
            f"folder itself, named eval*.json (e.g. output={run_dir / 'eval_mine.json'}), or into a folder that is "
            "no run"
        )
    if not (target.name.startswith("eval") and target.suffix == ".json"):
        raise UserError(
            f"output={path} would add {target.name} to the run: inside a run a record is named eval*.json (e.g. "
            f"output={run_dir / 'eval_mine.json'}); elsewhere, any name"
        )


def read_record(path: Path) -> dict | None:
    """The maml-eval record in ``path``, or None (missing, unreadable, not a record)."""
    try:
        record = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("per_step"), list) else None


def _what_was_scored(record: dict) -> dict:
    """What makes two records records of the same options: the run, how it was scored, and the
    tasks' dataset when it is not the run's own."""
    cross_domain = bool((record.get("data") or {}).get("cross_domain"))
    return {
        "run": record.get("run"),
        **scored_with(record),
        "dataset": record.get("dataset") if cross_domain else None,
    }


def replaced_note(path: Path, record: dict) -> str | None:
    """What writing ``record`` to ``path`` replaces, when that is a record of other options (or no
    readable record); None when there is nothing there or a record of the same options (re-scored)."""
    if not path.exists():
        return None
    old = read_record(path)
    if old is None:
        return "which held no readable record"
    before, now = _what_was_scored(old), _what_was_scored(record)
    if before["run"] is None or now["run"] is None:  # a record written before runs were named
        before["run"] = now["run"]
    changed = [k for k in now if before.get(k) != now[k]]
    if not changed:
        return None
    shown = ", ".join(f"{k} {_shown(before.get(k))} -> {_shown(now[k])}" for k in changed if k != "dataset")
    if "dataset" in changed:
        shown = ", ".join(filter(None, [shown, "another dataset"]))
    return f"a record of other options ({shown})"


def _shown(value) -> str:
    return "default" if value is None else str(value)


def write_record(app: DictConfig, record: dict) -> Path:
    """The record (``record_path``: eval.json for the defaults, a file named from the options
    otherwise, or ``output``) and its plot beside it, each written whole; the table is printed if
    they cannot be written. Replacing a record of other options says so on stderr."""

    output = record_path(app, record)
    replaced = replaced_note(output, record)
    try:
        check_replaceable([output, output.with_suffix(".png")])
        write_text(output, strict_json.dumps(record, indent=2) + "\n")
        plots.eval_curve(record, output.with_suffix(".png"))
    except UserError as err:
        print(format_table(record))
        raise UserError(f"{err}; the scores are above") from err
    if replaced:
        print(f"{APP.name}: replaced {output}, {replaced}", file=sys.stderr)
    return output


@cli.guarded("maml-eval")
def main(argv: Sequence[str] | None = None) -> None:
    cli.main(APP, argv, run_jobs, hydra_job)


@hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="eval")
def hydra_job(app: DictConfig) -> None:
    """Reached only with Hydra's own flags (--cfg, --info, ...): Hydra prints what they ask for."""


if __name__ == "__main__":
    main()
