"""The training loop: the one place where training has side effects (run directory, writers,
checkpoints, progress bar, NaN stop, signals). The outer steps and the validation it runs are jitted
pure functions from ``experiment``; what it reads and writes around them happens here, between
jitted calls."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from maml_cli import stop_signals
from maml_cli.backend.compilation import release_freed_memory
from maml_cli.backend.processes import is_writer
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.scoring import diverged, eval_key, regression_curves, run_episodes
from maml_cli.errors import UserError
from maml_cli.run.checkpoints import Checkpointer
from maml_cli.run.directory import RUN_DATA, RunDirError, RunLock, atomic_write_text, check_place, record_session
from maml_cli.run.metrics import MetricWriter, read_jsonl
from maml_cli.run.plots import adaptation, learning_curves
from maml_cli.run.provenance import check_resumable, run_id_of
from maml_cli.run.selection import score_of, validation_scores
from maml_cli.run.trackers import make_tracker

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """A stop signal arrived; a checkpoint of the last completed step was written.

    ``requeue``: the signal came from a scheduler or a closed session (SIGTERM, SIGUSR1, SIGUSR2:
    a preemption or a time limit; SIGHUP), not from a person's Ctrl-C (SIGINT). ``resubmit``: when
    the job runs under submitit (Hydra's slurm and submitit_local launchers), submitit's own
    handler, which hands the same job back to the queue and exits."""

    def __init__(self, message: str, signum: int, resubmit=None):
        super().__init__(message)
        self.signum = signum
        self.requeue = signum != signal.SIGINT
        self.resubmit = resubmit


class NonFiniteLoss(UserError):
    pass


def _submitit_resubmit(handlers: dict, signum: int):
    """submitit's checkpoint-and-requeue handler among the handlers ours replaced (it answers to
    USR2, or ``SUBMITIT_PREEMPT_SIGNAL``), as a call that requeues the job; None outside submitit."""
    for handler in handlers.values():
        owner = getattr(handler, "__self__", None)
        if type(owner).__module__.startswith("submitit") and hasattr(owner, "checkpoint_and_try_requeue"):
            return lambda: owner.checkpoint_and_try_requeue(signum, None)
    return None


def _next_boundary(step: int, every: int) -> int:
    return (step // every + 1) * every


def due(step: int, every: int, total: int) -> bool:
    """Whether what is done every ``every`` steps (logging, validation, a checkpoint) is due after
    ``step``: at each multiple of ``every``, and always at the last step."""
    return step % every == 0 or step == total


@dataclass
class Summary:
    """What the console shows when maml-train ends."""

    run_dir: Path
    start_step: int
    step: int
    steps: int
    seconds: float
    last_val: dict
    metric: str

    def text(self) -> str:
        """The summary; with the TensorBoard logger (the default), the command that opens its event
        files, and the install that brings the viewer when it is missing (the default install has
        tensorboardX, which writes them, but no viewer)."""

        val = self.last_val.get(f"val/{self.metric}")
        shown = "none yet" if val is None else f"{val * 100:.2f}%" if self.metric == "accuracy" else f"{val:.4g}"
        done = "done" if self.step >= self.steps else "stopped early (run the same command to continue)"
        lines = [
            f"== maml-train {done}",
            f"   steps      {self.step} of {self.steps} ({self.step - self.start_step} in this session)",
            f"   wall time  {self.seconds / 60:.1f} min",
            f"   val {self.metric:<6} {shown}",
            f"   run dir    {self.run_dir}",
            f"   next       maml-eval run_dir={self.run_dir}",
        ]
        try:  # the logger this session used: the config it wrote when it started
            logger = (yaml.safe_load((Path(self.run_dir) / "config.yaml").read_text()) or {}).get("logger") or {}
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            logger = {}
        if logger.get("name") == "tensorboard":
            viewer = f"tensorboard --logdir {self.run_dir}"
            if importlib.util.find_spec("tensorboard") is None:
                viewer = f'pip install "maml-cli[tensorboard]" && {viewer}'
            lines.append(f"   curves     {viewer}")
        return "\n".join(lines)


def _write_plots(exp, workdir: Path, state=None) -> None:
    """learning_curves.png from metrics.jsonl; with ``state``, adaptation.png for regression."""

    records = read_jsonl(workdir / "metrics.jsonl")
    state = None if state is None else jax.device_get(state)  # host copies: drawn by this process alone
    title = f"{workdir.name}: {exp.cfg.algorithm.name}, {exp.cfg.dataset.name}"
    if records:
        learning_curves(records, exp.metric, workdir / "plots" / "learning_curves.png", title)
    if state is not None and exp.sampler.spec.kind == "regression" and hasattr(exp.sampler, "task_parameters"):
        steps = sorted({0, 1, max(exp.cfg.eval.inner_steps, 1)})
        curves = regression_curves(
            exp, state.meta_params, state.meta_state, eval_key(exp.cfg.eval.seed, "test"), steps=steps
        )
        adaptation(curves, steps, workdir / "plots" / "adaptation.png", f"{title}, step {int(state.step)}: test tasks")


def train_and_evaluate(cfg: DictConfig, workdir: Path) -> Summary:
    """Train (or resume) the run in ``workdir``; returns what the console summary shows."""
    workdir = Path(workdir)
    exp = build_experiment(cfg)  # the plan first: the processes joined before JAX computes anything
    if is_writer():  # maml-train checked it before Hydra started; a sweep's job or a direct caller may not have
        check_place(workdir, force=cfg.train.force_run_dir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # In a run over several processes, process 0 owns the run directory (backend/processes.py).
        with RunLock(workdir) if is_writer() else contextlib.nullcontext():
            return _Session(exp, workdir).run()
    except OSError as e:  # a write that failed outside the checkpointer: full or read-only disk
        raise RunDirError(
            f"cannot write to {workdir} ({e.strerror or e}): free some space or make it "
            "writable, then run the same command to resume from the last checkpoint"
        ) from e


class _Session:
    """One session of training a run: restore or start, open the writers, the loop (outer steps,
    logging, validation, checkpoints), the summary. Only the loop's own state lives here; the steps
    are the jitted pure functions of the Experiment."""

    def __init__(self, exp, workdir: Path):
        self.began = time.perf_counter()
        self.exp, self.cfg, self.workdir = exp, exp.cfg, workdir
        self.writes = is_writer()
        self.programs: dict = {}  # (steps per call, phase) -> the compiled multi-step
        self.multi_step = None
        self.writer = None
        self.last_val: dict = {}
        self.pending: list = []  # per-call metric arrays since the last log line
        self.last_phase = None

    def run(self) -> Summary:
        exp, cfg, workdir = self.exp, self.cfg, self.workdir
        exp.plan.use_compilation_cache()
        self.checkpointer, self.state, self.start = self.restore_or_start()
        self.step = self.start
        if self.writes:
            self.write_records()
        log.info("%s", exp.describe())
        self.multi_step = exp.multi_step()
        self.validate = self.validator()
        try:
            if self.writes:
                tracker = make_tracker(cfg.logger, workdir, self.start, OmegaConf.to_container(cfg, resolve=True))
                self.writer = MetricWriter(workdir, resume_step=self.start, tracker=tracker)
            self.loop()
        finally:
            if self.writer is not None:
                self.writer.close()
            self.checkpointer.close()
        if self.start >= cfg.train.steps:
            log.info(
                "%s is already trained to step %d (train.steps=%d): nothing to do", workdir, self.start, cfg.train.steps
            )
            records = read_jsonl(workdir / "metrics.jsonl")
            self.last_val = {k: v for r in records for k, v in r.items() if k.startswith("val/")}
        if self.writes and cfg.train.plots and (self.step > self.start or not (workdir / "plots").is_dir()):
            _write_plots(exp, workdir, self.state)
        return Summary(
            run_dir=workdir,
            start_step=self.start,
            step=self.step,
            steps=cfg.train.steps,
            seconds=time.perf_counter() - self.began,
            last_val=self.last_val,
            metric=exp.metric,
        )

    def restore_or_start(self) -> tuple:
        """(the checkpointer, the state, its step): the newest good checkpoint of the run, else a
        new state; the scores of earlier sessions' validations rank the best checkpoints kept."""
        exp, cfg, workdir = self.exp, self.cfg, self.workdir
        check_resumable(workdir, cfg)  # maml-train checked it too, before Hydra started; a race is caught here
        checkpointer = Checkpointer(
            workdir / "checkpoints", keep=cfg.train.keep_checkpoints, keep_best=cfg.train.keep_best
        )
        state, start = exp.init_state(), 0
        if checkpointer.steps():  # check_resumable above refused checkpoints of another config or run
            restored, restored_step = checkpointer.restore_latest_good(state)
            if restored is not None:
                state, start = restored, restored_step
                log.info("resuming %s from step %d", workdir, start)
        self.run_id = run_id_of(workdir) or uuid.uuid4().hex[:12]
        checkpointer.provenance = {"run_id": self.run_id, "config": OmegaConf.to_container(cfg, resolve=True)}
        # Validations after ``start`` were made by a session that died before saving those steps.
        checkpointer.rank_by(validation_scores(workdir, exp.metric, cfg, through=start))
        return checkpointer, exp.place(state), start

    def write_records(self) -> None:
        """config.yaml, data.json and this session's entry in environment.json (process 0)."""
        atomic_write_text(self.workdir / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
        atomic_write_text(self.workdir / RUN_DATA, json.dumps(self.exp.data_record(), indent=2) + "\n")
        record_session(self.workdir, self.start, self.run_id)

    def run_steps(self, length: int, phase):
        """The compiled multi-step for (length, phase), compiled ahead of its first call so that the
        heap the compiler freed is returned before the step allocates its own (peak memory)."""
        if (length, phase) not in self.programs:
            self.programs[length, phase] = self.multi_step.lower(self.state, self.exp.data, length, phase).compile()
            release_freed_memory()
        return self.programs[length, phase](self.state, self.exp.data)

    def validator(self):
        """``state -> {val/...}``: the validation tasks' scores before adapting, after the trained
        inner steps and after eval.inner_steps (if more), and how many of them diverged."""
        exp, cfg = self.exp, self.cfg
        trained_steps = cfg.algorithm.inner_steps
        val_steps = max(trained_steps, cfg.eval.inner_steps)
        score = exp.scorer("val", val_steps)
        key = eval_key(cfg.eval.seed, "val")
        batch = exp.eval_batch(min(cfg.eval.batch_size, cfg.eval.val_episodes))

        def validate(state) -> dict:
            values = run_episodes(
                score, state.meta_params, state.meta_state, exp.data, key, cfg.eval.val_episodes, batch
            )
            with np.errstate(invalid="ignore", over="ignore"):
                means = values["metric"].mean(axis=0)
            figures = {
                f"val/{exp.metric}_pre": means[0],
                f"val/{exp.metric}": means[trained_steps],
                f"val/{exp.metric}_step{val_steps}": means[val_steps],
                f"val/diverged_step{val_steps}": int(diverged(values["loss"])[:, val_steps].sum()),
            }
            return {k: float(v) for k, v in figures.items()}

        return validate

    def loop(self) -> None:
        """Outer steps until train.steps, the time limit or a stop signal; a stop saves, then raises
        TrainingInterrupted."""
        t = self.cfg.train
        show_bar = bool(t.progress) and sys.stderr.isatty()  # no carriage returns in redirected logs
        bar = tqdm(
            total=t.steps, initial=self.start, unit="step", disable=not show_bar, dynamic_ncols=True, desc="meta-train"
        )
        # a stop signal now finishes the call under way, then saves
        with stop_signals.flagging() as stop, logging_redirect_tqdm(), bar:
            if self.start == 0 and t.steps > 0:
                log.info("compiling the outer step (first call)")
            self.last_log, self.train_seconds = self.step, 0.0
            deadline = None if t.time_limit_minutes is None else self.began + 60 * t.time_limit_minutes
            out_of_time = False
            while self.step < t.steps and stop.signum is None and not out_of_time:
                self.advance(bar)
                out_of_time = self.record_and_save(bar, deadline)
            if out_of_time:
                log.info(
                    "train.time_limit_minutes=%g reached at step %d; checkpoint saved. Run the same "
                    "command to continue.",
                    t.time_limit_minutes,
                    self.step,
                )
            if stop.signum is not None:
                self.checkpointer.save(self.step, self.state)
                raise TrainingInterrupted(
                    f"stopped at step {self.step} by {stop_signals.name(stop.signum)}; checkpoint saved. "
                    "Run the same command with the same hydra.run.dir to resume.",
                    stop.signum,
                    _submitit_resubmit(stop.replaced, stop.signum),
                )

    def advance(self, bar) -> None:
        """One jitted call: the outer steps up to the next log, validation, checkpoint or phase
        change. A loss that is not finite stops the run before its state could be saved."""
        exp, t, step = self.exp, self.cfg.train, self.step
        end = min(
            t.steps,
            step + t.steps_per_call,
            _next_boundary(step, t.log_every),
            _next_boundary(step, t.eval_every),
            _next_boundary(step, t.checkpoint_every),
            exp.next_phase_change(step) or t.steps,
        )
        phase = exp.phase_at(step)
        if exp.algorithm.boundaries() and phase != self.last_phase:  # e.g. MAML++'s schedule of switches
            log.info("from step %d: %s", step, phase)
            self.last_phase = phase
        call_began = time.perf_counter()
        self.state, chunk = self.run_steps(end - step, phase)
        chunk = jax.device_get(chunk)
        self.train_seconds += time.perf_counter() - call_began
        losses = chunk["train/query_loss"]
        if not np.all(np.isfinite(losses)):  # checked on every call: a NaN state is never saved
            bad = step + 1 + int(np.argmin(np.isfinite(losses)))
            raise NonFiniteLoss(
                f"meta-training loss is {losses[bad - step - 1]} at step {bad}; last checkpoint: "
                f"step {self.checkpointer.latest_step()}. Lower train.outer_lr or algorithm.inner_lr, "
                "or set train.grad_clip."
            )
        self.pending.append(chunk)
        bar.update(end - step)
        self.step = end

    def record_and_save(self, bar, deadline: float | None) -> bool:
        """After a call: the log line, the validation, metrics.jsonl, the plots and the checkpoints
        that are due at this step (a checkpoint too once the time limit is reached). Returns whether
        it is."""
        exp, t, step = self.exp, self.cfg.train, self.step
        row = {}  # one metrics.jsonl record per step
        if due(step, t.log_every, t.steps):
            row.update(self.train_metrics())
            bar.set_postfix(loss=f"{row['train/query_loss']:.4g}")
        validated = due(step, t.eval_every, t.steps)
        if validated:
            self.last_val = self.validate(self.state)
            row.update(self.last_val)
            log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in self.last_val.items()))
        if row and self.writes:
            self.writer.write(step, row)
        if validated and t.plots and self.writes:
            _write_plots(exp, self.workdir)
        out_of_time = deadline is not None and time.perf_counter() >= deadline
        # Every validated step is saved too while the best ones are kept (checkpoint=best:N).
        if validated and t.keep_best:
            self.checkpointer.save(step, self.state, score=score_of(self.last_val, exp.metric, self.cfg))
        if due(step, t.checkpoint_every, t.steps) or out_of_time:
            self.checkpointer.save(step, self.state)
        return out_of_time

    def train_metrics(self) -> dict:
        """The mean of each training metric since the last log line, and the outer steps per second
        of the jitted calls alone (validation, plots and checkpoints aside; the first window
        includes compilation)."""
        metrics = {k: float(np.mean(np.concatenate([c[k] for c in self.pending]))) for k in self.pending[0]}
        self.pending = []
        metrics["train/steps_per_s"] = (self.step - self.last_log) / max(self.train_seconds, 1e-9)
        self.last_log, self.train_seconds = self.step, 0.0
        return metrics
