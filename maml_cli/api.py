"""maml-cli from Python: the functions the console scripts stand on.

    import maml_cli as mc
    cfg = mc.compose("sinusoid_tiny", ["train.steps=200"])   # checked as maml-train checks it
    run = mc.train(cfg, run_dir="runs/x")                     # trains, or resumes, the run in runs/x
    run = mc.load_run("runs/x")
    record = run.evaluate(episodes=200)                       # what maml-eval writes to eval.json
    learner = run.adapt(support_x, support_y)                 # a model adapted to one task
    learner.predict(query_x)                                  # -> numpy array

Bad input raises ``maml_cli.UserError`` with the message the commands print.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from maml_cli.atomic import WriteError, describe_os_error, write_text
from maml_cli.config import register_configs
from maml_cli.config.checks import check_values, typed_values
from maml_cli.config.composing import App, compose_checked, prepare, split_hydra
from maml_cli.config.resume import flatten
from maml_cli.config.schema import DATASET_SCHEMAS, AdaptAppConfig, EvalAppConfig, EvalDatasetOverrides, EvalOverrides
from maml_cli.engine.adapt import adapt, check_support, restore_one
from maml_cli.engine.evaluate import evaluate_run
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.training import train_and_evaluate
from maml_cli.errors import UserError
from maml_cli.run.checkpoints import Checkpointer
from maml_cli.run.metrics import read_jsonl
from maml_cli.run.provenance import check_run_dir
from maml_cli.run.reader import check_trained, open_run, run_spec

TRAIN_GROUPS = ("dataset", "model", "algorithm", "experiment", "logger", "launcher", "search")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as Hydra writes train.log


def compose(experiment: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The config of an ``experiment`` preset (None: maml-train's default, the sinusoid) with
    ``overrides`` (``KEY=VALUE``, ``GROUP=OPTION``), checked with the rules and errors of the
    command line: unknown keys and options, types, ``validate``. Paths are made absolute."""

    register_configs()
    if isinstance(overrides, str) or any(not isinstance(o, str) for o in overrides):
        raise UserError("overrides must be a list of strings such as ['train.steps=100']")
    overrides = list(overrides)
    if experiment is not None:
        overrides = [f"experiment={experiment}", *overrides]
    app = App("maml_cli.compose", "train", groups=TRAIN_GROUPS)
    (full,) = compose_checked(app, overrides)
    cfg, _ = split_hydra(full)
    cfg = prepare(cfg)
    _COMPOSED[id(cfg)] = (weakref.ref(cfg), OmegaConf.to_container(cfg, resolve=False), overrides)
    weakref.finalize(cfg, _COMPOSED.pop, id(cfg), None)
    return cfg


# What each config ``compose`` returned was composed from, so that ``train`` can record it in the
# run as maml-train's Hydra does: id(cfg) -> (a weak reference to it, its content then, overrides).
_COMPOSED: dict[int, tuple] = {}


def composed_from(cfg: DictConfig) -> list[str] | None:
    """The overrides ``cfg`` was composed from (``experiment=NAME`` first), with ``KEY=VALUE`` for
    each value edited since (``~KEY`` for a key removed); None for a config ``compose`` did not make
    (its origin is unknown)."""

    entry = _COMPOSED.get(id(cfg))
    if entry is None or entry[0]() is not cfg:
        return None
    _, then, overrides = entry
    before, now = flatten(then), flatten(OmegaConf.to_container(cfg, resolve=False))
    edits = [f"{k}={_override_value(now[k])}" for k in now if k not in before or before[k] != now[k]]
    return [*overrides, *edits, *(f"~{k}" for k in before if k not in now)]


def _override_value(value) -> str:
    """``value`` as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./:+@" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _record_overrides(run_dir: Path, overrides: list[str]) -> None:
    """``RUN_DIR/.hydra/overrides.yaml``, the record maml-train's Hydra writes of what a run was
    composed from (maml-report shows it), written whole. Only Hydra's kind of file: a run that
    fails before training leaves a folder that ``run_dir`` still counts as no run."""

    try:
        (run_dir / ".hydra").mkdir(exist_ok=True)
    except OSError as e:
        raise WriteError(f"cannot write {run_dir / '.hydra'} ({describe_os_error(e)})") from e
    write_text(run_dir / ".hydra" / "overrides.yaml", yaml.safe_dump(list(overrides), default_flow_style=False))


def train(cfg: DictConfig | str | None = None, overrides: Sequence[str] = (), *, run_dir: str | Path) -> Run:
    """Train the run in ``run_dir`` (resuming it if it holds one of the same config), as maml-train
    does: the same files, train.log included. ``cfg``: a config from ``compose``, or an experiment
    name (then ``overrides`` apply). Returns the trained ``Run``."""

    if cfg is None or isinstance(cfg, str):
        cfg = compose(cfg, overrides)
        recorded = composed_from(cfg)
    elif overrides:
        raise UserError("overrides go with an experiment name; apply them to a composed config with compose()")
    else:
        recorded = composed_from(cfg)  # what compose made it from, and the edits since
        cfg = prepare(OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)))  # edited since compose?
    run_dir = Path(run_dir)
    check_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if recorded is not None:
        _record_overrides(run_dir, recorded)
    with _log_to(run_dir / "train.log"):
        summary = train_and_evaluate(cfg, run_dir)
    run = Run(run_dir, trust_code=True)  # its code, if any, is the caller's own
    run.summary = summary
    return run


def load_run(run_dir: str | Path, trust_code: bool = False) -> Run:
    """A run directory maml-train (or ``train``) wrote. A run whose config names code to import
    (``model.target``, ``dataset.target``) is refused unless ``trust_code``."""
    return Run(run_dir, trust_code=trust_code)


class Run:
    """A trained run: its config, its metrics, and what can be done with its checkpoints."""

    def __init__(self, run_dir: str | Path, trust_code: bool = False):

        register_configs()
        self.run_dir = Path(run_dir)
        self.trust_code = trust_code
        self.cfg = open_run(self.run_dir, trust_code=trust_code)  # checks it is a run, and the trust
        self.summary = None  # what training printed, when this Run came from ``train``

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    @property
    def metrics(self) -> list:
        """The records of metrics.jsonl (train/* and val/* by step)."""

        return read_jsonl(self.run_dir / "metrics.jsonl")

    def checkpoints(self) -> list:
        """The steps of the checkpoints on disk."""

        checkpointer = Checkpointer(self.run_dir / "checkpoints", read_only=True)
        try:
            return list(checkpointer.steps())
        finally:
            checkpointer.close()

    def evaluate(
        self,
        episodes: int | None = None,
        *,
        checkpoint: int | str | None = None,
        split: str = "test",
        inner_steps: int | None = None,
        seed: int | None = None,
        query_shots: int | None = None,
        batch_size: int | None = None,
        dataset: dict | None = None,
        transductive: bool | None = None,
        devices: str = "auto",
    ) -> dict:
        """Score the run on fresh tasks: the record maml-eval writes to eval.json (``per_step``:
        mean, ci95, median and diverged tasks after each inner step), the same numbers. Unset
        values are the run's own. ``dataset``: where its data is now (``{"path": ...}``), or
        with a ``name``, another dataset's tasks (cross-domain). Nothing is written."""

        dataset = dict(dataset or {})
        name = dataset.get("name")
        if name and name not in DATASET_SCHEMAS:
            raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_SCHEMAS))}")
        schema = DATASET_SCHEMAS[name] if name else EvalDatasetOverrides
        overrides = typed_values(
            EvalOverrides,
            {
                "episodes": episodes,
                "inner_steps": inner_steps,
                "seed": seed,
                "query_shots": query_shots,
                "batch_size": batch_size,
            },
        )
        app = OmegaConf.structured(
            EvalAppConfig(
                run_dir=str(self.run_dir), split=split, devices=str(devices), progress=False, trust_code=self.trust_code
            )
        )
        try:
            app.dataset = OmegaConf.merge(OmegaConf.structured(schema), dataset)
            app.checkpoint = None if checkpoint is None else str(checkpoint)
            app.transductive = transductive
            app.eval = overrides
        except Exception as e:  # omegaconf's type and key errors
            raise UserError(str(e).splitlines()[0]) from None
        check_values(app)  # the dataset's numbers too (a cross-domain dataset's image_size, ...)
        return evaluate_run(app, given={f"dataset.{k}" for k in dataset}, trust_code=self.trust_code)

    def adapt(
        self,
        support_x,
        support_y,
        *,
        inner_steps: int | None = None,
        checkpoint: int | str | None = None,
        seed: int = 0,
    ) -> Any:
        """The run's model adapted to one task's support set (``support_x`` [n, *input_shape],
        ``support_y`` labels 0..ways-1 or regression targets), as maml-adapt and maml-eval adapt.
        ``inner_steps``: default the run's eval.inner_steps. Returns a ``Learner``."""

        values = typed_values(AdaptAppConfig, {"inner_steps": inner_steps, "seed": seed})
        cfg = self.cfg.copy()
        cfg.train.devices = "1"
        check_trained(self.run_dir)
        spec = run_spec(self.run_dir, cfg)
        # Checked before anything is built or read: the same checks as maml-adapt's files pass.
        support_x, support_y, used = check_support(spec, support_x, support_y)
        exp = build_experiment(cfg, training=False, spec=spec)
        exp.plan.use_compilation_cache()
        state = restore_one(exp, self.run_dir, checkpoint)
        steps = int(cfg.eval.inner_steps if values.inner_steps is None else values.inner_steps)
        return adapt(exp, state, support_x, support_y, steps, seed=values.seed, used_classes=used)


@contextlib.contextmanager
def _log_to(path: Path):
    """maml_cli's log messages appended to ``path`` (the run's train.log), as Hydra does for maml-train."""
    logger = logging.getLogger("maml_cli")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()
