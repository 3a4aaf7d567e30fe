"""Experiment trackers, chosen by ``logger=NAME`` as Hydra users expect: tensorboard (the default),
csv, wandb (offline unless told otherwise) and mlflow (a SQLite store in the run directory unless
told otherwise). metrics.jsonl is written whatever the choice: it is the run's own record, the one
resuming, maml-report and the plots read.

Each tracker continues the same run when the run resumes: events after the resumed step are
dropped (tensorboard, csv) or written again at the same steps (wandb, mlflow, which keep one run id
per run directory)."""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path

from maml_cli.config.resume import flatten
from maml_cli.errors import UserError, one_of
from maml_cli.run.directory import atomic_write_text

LOGGERS = ("tensorboard", "csv", "wandb", "mlflow", "none")
WANDB_MODES = ("offline", "online", "disabled")  # wandb.init(mode=...)


class Tracker:
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, run_dir: Path, resume_step: int):
        from tensorboardX import SummaryWriter

        # purge_step tells TensorBoard to discard events at and after it from earlier sessions.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step, metrics):
        for name, value in metrics.items():
            self.writer.add_scalar(name, float(value), int(step))

    def close(self):
        self.writer.close()


class CSV(Tracker):
    """metrics.csv in long form (step, name, value): train and validation rows carry different
    metrics, and a resumed run appends after the rows it keeps."""

    def __init__(self, run_dir: Path, resume_step: int):

        self.path = run_dir / "metrics.csv"
        kept = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                kept = [
                    row
                    for row in csv.reader(f)
                    if row and row[0].isascii() and row[0].isdigit() and int(row[0]) <= resume_step
                ]
        atomic_write_text(self.path, "step,name,value\n" + "".join(",".join(r) + "\n" for r in kept))
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 (open for the run's length)
        self.writer = csv.writer(self.file)

    def log(self, step, metrics):
        self.writer.writerows([int(step), name, repr(float(value))] for name, value in metrics.items())
        self.file.flush()

    def close(self):
        self.file.close()


def _run_id(run_dir: Path) -> str:
    """One id per run directory, so a resumed run continues its tracker's run."""
    return "maml-" + hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


class WandB(Tracker):
    def __init__(self, run_dir: Path, resume_step: int, settings, config: dict):
        wandb = _need("wandb", "wandb")
        self.run = wandb.init(
            project=settings.project,
            entity=settings.get("entity"),
            mode=settings.mode,
            dir=str(run_dir),
            id=_run_id(run_dir),
            resume="allow",
            config=config,
            name=run_dir.name,
        )

    def log(self, step, metrics):
        self.run.log({k: float(v) for k, v in metrics.items()}, step=int(step))

    def close(self):
        self.run.finish()


class MLflow(Tracker):
    def __init__(self, run_dir: Path, resume_step: int, settings, config: dict):
        mlflow = _need("mlflow", "mlflow")
        self.mlflow = mlflow
        # MLflow's own default local store since 3.x (its ./mlruns file store is in maintenance mode).
        uri = settings.get("tracking_uri") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(settings.experiment)
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        self.run = mlflow.start_run(run_id=run_id, run_name=run_dir.name)
        if run_id is None:
            id_file.write_text(self.run.info.run_id + "\n")

            flat = flatten(config)
            mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})

    def log(self, step, metrics):
        self.mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in metrics.items()}, step=int(step))

    def close(self):
        self.mlflow.end_run()


def _need(module: str, extra: str):

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f'logger={extra} needs the {module} package: pip install "maml-cli[{extra}]" '
            f'(or pip install -e ".[{extra}]" in a checkout)'
        ) from None


def check_logger(settings) -> None:
    """Before anything starts: a known tracker whose package is installed."""
    name = settings.name
    if name not in LOGGERS:
        raise UserError(one_of("logger", name, LOGGERS))
    if name == "wandb" and settings.mode not in WANDB_MODES:
        raise UserError(one_of("logger.mode", settings.mode, WANDB_MODES))
    if name in ("wandb", "mlflow") and importlib.util.find_spec(name) is None:
        _need(name, name)


def make_tracker(settings, run_dir: Path, resume_step: int, config: dict) -> Tracker:
    """The tracker ``logger=`` names, continuing from ``resume_step``."""
    run_dir = Path(run_dir)
    name = settings.name
    if name == "tensorboard":
        return TensorBoard(run_dir, resume_step)
    if name == "csv":
        return CSV(run_dir, resume_step)
    if name == "wandb":
        return WandB(run_dir, resume_step, settings, config)
    if name == "mlflow":
        return MLflow(run_dir, resume_step, settings, config)
    return Tracker()
