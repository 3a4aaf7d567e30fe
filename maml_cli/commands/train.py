"""maml-train: check the command line, then run the job (``maml_cli.engine.training``) in the run directory
Hydra makes: one run through Hydra's job runner, a sweep (``-m``) through Hydra's main.

maml-train                                   # sinusoid, the MAML paper's hyperparameters and 70k steps
maml-train experiment=sinusoid_paper         # the MAML paper's sinusoid protocol
maml-train hydra.run.dir=runs/sine           # run again with the same dir to resume
maml-train -m algorithm.inner_lr=0.001,0.01 seed=0,1   # a sweep, one directory per job
maml-train experiment=omniglot_5w1s train.dry_run=true   # check config and data only
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import run_job as hydra_run_job
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from maml_cli.backend import launch
from maml_cli.commands import report
from maml_cli.commands import shell as cli
from maml_cli.config import composing, register_configs
from maml_cli.config.composing import prepare
from maml_cli.errors import UserError
from maml_cli.run.directory import check_sweep_place, remove_if_not_a_run
from maml_cli.run.provenance import check_run_dir

log = logging.getLogger("maml_cli.commands.train")
register_configs()
# Orbax logs every save at INFO through absl; keep the terminal for our own messages.
for _name in ("absl", "jax._src.xla_bridge", "matplotlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PLUGINS = {
    "launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}

APP = cli.App(
    "maml-train",
    "train",
    groups=("dataset", "model", "algorithm", "experiment", "logger", "launcher", "search"),
    plugins=PLUGINS,
    usage="""\
maml-train: meta-train MAML and its family; resumable, sweepable (Hydra).

Usage:
  maml-train [GROUP=OPTION ...] [KEY=VALUE ...]   one run, in hydra.run.dir (default runs/<time>)
  maml-train -m KEY=A,B [KEY=C,D ...]             a sweep: one run directory per combination
  maml-train ... train.dry_run=true               check config and data, print the plan; train nothing
  maml-train GROUP=OPTION --help                  this page for that choice (its keys)

Examples:
  maml-train experiment=omniglot_5w1s dataset.path=DIR hydra.run.dir=runs/o5
  maml-train experiment=omniglot_5w1s algorithm=mamlpp dataset.path=DIR   # MAML++'s paper settings
  maml-train hydra.run.dir=runs/o5 ...             # the same command again resumes the run
  maml-eval run_dir=runs/o5                        # score a run on test tasks
  maml-train -m launcher=joblib seed=0,1,2,3       # sweep jobs in parallel (pip install -e ".[cluster]")
  maml-train -m search=optuna experiment=sinusoid_paper   # hyperparameter search
  maml-report multirun/<date>                      # one table over a sweep's runs

Algorithms (algorithm=NAME):
  maml     second-order MAML (Finn et al. 2017)
  fomaml   first-order MAML
  anil     only the head adapts in the inner loop (Raghu et al. 2020)
  metasgd  a learned step size per parameter entry (Li et al. 2017)
  mamlpp   MAML++: multi-step loss, learned per-layer per-step step sizes, derivative-order
           annealing, cosine outer learning rate, per-step batch norm (Antoniou et al. 2019)
  reptile  Adam on mini-batches, outer step towards the adapted weights (Nichol et al. 2018)
With an experiment preset, an algorithm whose paper changes more than the algorithm gets that
paper's settings from paper/<experiment>_<algorithm> (chosen automatically).""",
)


def check_command_line(line: cli.CommandLine, composed: list):
    """Everything that can be checked before Hydra creates a run directory. False: nothing more to
    do (dry run); a list: Hydra overrides this process adds (see ``backend/processes.py``)."""

    jobs = [composing.split_hydra(full) for full in composed]
    for cfg, hydra_node in jobs:
        prepare(cfg)
        check_hydra_settings(hydra_node)
    pinned = []
    if line.multirun:  # the sweep's folder, known now so that its table can be printed at the end
        line.sweep_dir = Path(str(jobs[0][1].sweep.dir))

        check_sweep_place(line.sweep_dir, force=any(cfg.train.force_run_dir for cfg, _ in jobs))
        if not any(o.split("=")[0].lstrip("+") == "hydra.sweep.dir" for o in line.overrides):
            pinned = [f"hydra.sweep.dir={line.sweep_dir}"]
    if any(cfg.train.dry_run for cfg, _ in jobs):
        return dry_run(jobs)
    if len(jobs) > 1:  # a sweep: each job reads its data when it starts
        return pinned or True
    cfg, hydra_node = jobs[0]
    explicit_dir = not line.multirun and any(o.split("=")[0].lstrip("+") == "hydra.run.dir" for o in line.overrides)
    several = launch.wants_distributed(cfg.distributed)
    if several and not explicit_dir:
        raise UserError(
            "a run over several processes needs hydra.run.dir=DIR, the same folder for every process "
            "(on a shared file system)"
        )
    process_id = launch.process_id_from_env(cfg.distributed) if several else 0
    if process_id == 0 and not line.multirun:  # the run directory, before any data is read
        run_dir = Path(hydra_node.run.dir)
        check_run_dir(cfg, run_dir)  # before Hydra rewrites the run's .hydra/ record
    from maml_cli.engine.experiment import build_experiment

    build_experiment(cfg)  # reads the data: a missing dataset is reported here (and kept for the job)
    if process_id != 0:  # process 0 writes the run's .hydra/ and train.log; the others log to stderr only
        return ["hydra.output_subdir=null", "hydra/job_logging=stdout", *pinned]
    if line.multirun:
        return pinned or True
    run_one(composed[0])
    return False  # done here: Hydra composed once


def check_hydra_settings(hydra_node: DictConfig) -> None:
    """Hydra's own settings that would write outside the run directory, or resolve the run's paths
    against another folder than the one maml-train runs from: refused before Hydra starts."""

    for key in ("run.dir", "sweep.dir"):
        try:
            value = OmegaConf.select(hydra_node, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"hydra.{key} cannot be resolved: {first}") from None
        if value is not None and not str(value).strip():
            raise UserError(f"hydra.{key} is empty: give a folder")
    subdir = hydra_node.get("output_subdir")
    if subdir is not None and (Path(str(subdir)).is_absolute() or ".." in Path(str(subdir)).parts):
        raise UserError(
            f"hydra.output_subdir={subdir} would put Hydra's record outside the run directory: give a "
            "folder name inside it (default .hydra) or null"
        )
    name = str(hydra_node.job.get("name") or "")
    if "/" in name or os.sep in name or name in (".", ".."):
        raise UserError(f"hydra.job.name={name} names the log file: give a plain name (default train), no folders")
    if hydra_node.job.get("chdir"):
        raise UserError(
            "hydra.job.chdir=true is not supported: maml-train resolves every path against the folder "
            "it is run from, and writes only into hydra.run.dir"
        )
    handlers = OmegaConf.to_container(hydra_node.get("job_logging") or {}, resolve=False).get("handlers") or {}
    for handler, settings in handlers.items():
        filename = str((settings or {}).get("filename", "${hydra.runtime.output_dir}"))
        if not filename.startswith("${hydra.runtime.output_dir}/") and filename != "${hydra.runtime.output_dir}":
            raise UserError(
                f"hydra.job_logging.handlers.{handler}.filename={filename} would write the log outside the run "
                "directory: keep it under ${hydra.runtime.output_dir}"
            )


def dry_run(jobs: list) -> bool:
    """``train.dry_run=true``: every job's (config, hydra node) data read and its plan printed (one
    job: its config too), nothing trained. Returns False: nothing more to do."""
    from maml_cli.engine.experiment import build_experiment

    speaks = launch.process_id_from_env(jobs[0][0].distributed) == 0
    plans = []
    for i, (cfg, hydra_node) in enumerate(jobs):
        plan = build_experiment(cfg).describe()
        plans.append(plan)
        if not speaks:
            continue
        if len(jobs) == 1:
            print(OmegaConf.to_yaml(cfg, resolve=True), end="")
            print(f"# plan: {plan}")
        else:
            print(f"# job {i} ({' '.join(hydra_node.overrides.task)}): plan: {plan}")
    if speaks:
        print(dry_run_outcome(" ".join(plans)))
    return False


def dry_run_outcome(plan: str) -> str:
    """The dry run's last line: what it wrote, which is at most the data cache entries it had to
    build to check the data (``data.cache.built_entries``, those of this experiment's data, which
    its ``plan`` names). Nothing is compiled into the compilation cache: maml-train turns that
    cache on only in the job that trains."""
    from maml_cli.data.cache import built_entries

    built = [entry for entry in built_entries() if str(entry) in plan]
    if not built:
        return "# dry run: config and data are fine; nothing was trained or written"
    return (
        "# dry run: config and data are fine; nothing was trained; written: the data cache "
        + ("entry " if len(built) == 1 else "entries ")
        + ", ".join(str(p) for p in built)
        + " (reused by training)"
    )


class _NoCallbacks:
    """Hydra's job callbacks (``hydra.callbacks``), none configured by maml-train."""

    def on_job_start(self, config, task_function) -> None:
        pass

    def on_job_end(self, config, job_return) -> None:
        pass


def run_one(full: DictConfig) -> None:
    """One run (no ``-m``): the job Hydra's main would start, started with Hydra's own job runner
    (``hydra.core.utils.run_job``, as its launchers call it) on the config composed and checked
    above: the run directory, its ``.hydra/`` record and ``train.log`` are Hydra's, and nothing is
    composed twice."""

    _JOB_STARTED.clear()
    try:
        done = hydra_run_job(
            task_function=train_job,
            config=full,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
            hydra_context=HydraContext(config_loader=None, callbacks=_NoCallbacks()),
        )
    except Exception as e:
        if _JOB_STARTED:
            raise
        # Hydra itself failed to set the job up (its logging, its records): a hydra.* setting

        remove_if_not_a_run(Path(str(full.hydra.run.dir)))
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"Hydra could not set up the run with these hydra.* settings: {first}") from None
    done.return_value  # noqa: B018 (raises what the job raised)


_JOB_STARTED: list = []  # set when train_job starts: an error before that is Hydra's set-up


@cli.guarded("maml-train")
def main(argv: Sequence[str] | None = None) -> None:
    line = cli.main(APP, argv, check_command_line, run_job)
    if line.sweep_dir is not None and line.sweep_dir.is_dir():
        print_sweep_table(line.sweep_dir)


def print_sweep_table(sweep_dir: Path) -> None:
    """At the end of ``-m``: the table maml-report makes of the sweep (and its report files)."""

    try:
        report.main([str(sweep_dir)])
    except (SystemExit, Exception) as e:  # the sweep itself is done: a report that fails only says so
        print(f"{APP.name}: no sweep table ({e}); run maml-report {sweep_dir}", file=sys.stderr)


def train_job(cfg: DictConfig) -> float | None:
    """The job: train the run in Hydra's output directory. Returns what a sweeper optimises."""
    from maml_cli.engine.training import TrainingInterrupted, train_and_evaluate

    _JOB_STARTED.append(True)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        prepare(cfg)
        summary = train_and_evaluate(cfg, run_dir)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        if not e.requeue:
            sys.exit(cli.EXIT_INTERRUPTED)
        if e.resubmit is not None:  # under submitit: it requeues this same job, which resumes here
            log.warning("asking submitit to requeue this job")
            e.resubmit()
        sys.exit(cli.EXIT_REQUEUE)
    except Exception as e:
        if in_sweep or not isinstance(e, UserError) or not remove_if_not_a_run(run_dir):
            # A real run or a sweep's job: keep the reason with it.
            with contextlib.suppress(OSError), open(run_dir / "train.log", "a") as f:
                f.write(f"[ERROR] {e if isinstance(e, UserError) else traceback.format_exc()}\n")
        if not in_sweep:  # said here: raised, Hydra's job runner would add a line of its own
            sys.exit(cli.report(APP.name, e))
        return sweep_job_failed(hydra_cfg, run_dir, e)
    from maml_cli.backend.processes import is_writer

    if is_writer():
        print(summary.text(), file=sys.stderr)
    # The value a sweeper optimises: the validation metric after the trained number of steps.
    val = summary.last_val
    return val.get("val/mse", val.get("val/accuracy"))


# Hydra's main, for sweeps (-m: launchers and sweepers start the jobs) and Hydra's own flags.
run_job = hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="train")(train_job)


class SweepJobFailed(CompactHydraException):
    """A sweep's job failed; Hydra's launchers run the other jobs, then report it (compact: the
    message, no traceback)."""


def sweep_job_failed(hydra_cfg, run_dir: Path, error: Exception) -> float:
    """One failed job must not stop a sweep: its error stays in its train.log, and Hydra hears of
    it in the way that lets the other jobs go on. An Optuna search counts the trial as the worst
    value for its direction (Optuna stops a study on a raised error); other sweepers get an error,
    which Hydra's launchers collect and report after every job has run (exit code 1)."""
    print(f"{APP.name}: error: job {hydra_cfg.job.num} ({run_dir}) failed: {error}", file=sys.stderr)
    if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
        return float("inf") if str(hydra_cfg.sweeper.direction).lower().endswith("minimize") else float("-inf")
    raise SweepJobFailed(f"job {hydra_cfg.job.num} ({run_dir}): {error} (details in its train.log)") from None


if __name__ == "__main__":
    main()
