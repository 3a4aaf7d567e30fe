"""The training loop: the one place where training has side effects (run directory, writers,
checkpoints, progress bar, NaN stop, signals). The outer steps and the validation it runs are jitted
pure functions from ``experiment``; what it reads and writes around them happens here, between
jitted calls."""

from __future__ import annotations

import contextlib
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
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from maml_cli import stop_signals
from maml_cli.backend.plan import release_freed_memory
from maml_cli.backend.sharding import initialize, is_writer
from maml_cli.engine.experiment import build_experiment
from maml_cli.engine.scoring import diverged, eval_key, run_episodes
from maml_cli.errors import UserError
from maml_cli.run.checkpoints import Checkpointer
from maml_cli.run.directory import (
    RUN_DATA,
    RunDirError,
    RunLock,
    atomic_write_text,
    check_place,
    check_resumable,
    record_session,
    run_id_of,
)
from maml_cli.run.metrics import MetricWriter, read_jsonl
from maml_cli.run.reader import ranking_score, selection_key, validation_scores

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
        import importlib.util

        import yaml

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
    from maml_cli.engine.scoring import regression_curves
    from maml_cli.run import plots

    records = read_jsonl(workdir / "metrics.jsonl")
    state = None if state is None else jax.device_get(state)  # host copies: drawn by this process alone
    title = f"{workdir.name}: {exp.cfg.algorithm.name}, {exp.cfg.dataset.name}"
    if records:
        plots.learning_curves(records, exp.metric, workdir / "plots" / "learning_curves.png", title)
    if state is not None and exp.sampler.spec.kind == "regression" and hasattr(exp.sampler, "task_parameters"):
        steps = sorted({0, 1, max(exp.cfg.eval.inner_steps, 1)})
        curves = regression_curves(
            exp, state.meta_params, state.meta_state, eval_key(exp.cfg.eval.seed, "test"), steps=steps
        )
        plots.adaptation(
            curves, steps, workdir / "plots" / "adaptation.png", f"{title}, step {int(state.step)}: test tasks"
        )


def train_and_evaluate(cfg: DictConfig, workdir: Path) -> Summary:
    """Train (or resume) the run in ``workdir``; returns what the console summary shows."""
    workdir = Path(workdir)
    initialize(cfg.distributed)  # maml-train did it before Hydra started; a direct caller may not have
    if is_writer():  # maml-train checked it before Hydra started; a sweep's job or a direct caller may not have
        check_place(workdir, force=cfg.train.force_run_dir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        # In a run over several processes, process 0 owns the run directory (backend/sharding.py).
        with RunLock(workdir) if is_writer() else contextlib.nullcontext():
            return _train(cfg, workdir)
    except OSError as e:  # a write that failed outside the checkpointer: full or read-only disk
        raise RunDirError(
            f"cannot write to {workdir} ({e.strerror or e}): free some space or make it "
            "writable, then run the same command to resume from the last checkpoint"
        ) from e


def _train(cfg: DictConfig, workdir: Path) -> Summary:
    began = time.perf_counter()
    t = cfg.train
    exp = build_experiment(cfg)

    check_resumable(workdir, cfg)  # maml-train checked it too, before Hydra started; a race is caught here
    selection = selection_key(exp.metric, cfg)  # the validation figure that ranks checkpoints
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        keep=t.keep_checkpoints,
        keep_best=t.keep_best,
        scores=validation_scores(workdir, selection, exp.metric),
    )
    state = exp.init_state()
    start = 0
    if checkpointer.steps():  # check_resumable above refused checkpoints of another config or run
        restored, restored_step = checkpointer.restore_latest_good(state)
        if restored is not None:
            state, start = restored, restored_step
            log.info("resuming %s from step %d", workdir, start)
    run_id = run_id_of(workdir) or uuid.uuid4().hex[:12]
    checkpointer.provenance = {"run_id": run_id, "config": OmegaConf.to_container(cfg, resolve=True)}
    checkpointer.forget_scores_after(start)
    state = exp.place(state)
    writes = is_writer()
    if writes:
        atomic_write_text(workdir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_text(workdir / RUN_DATA, json.dumps(exp.data_record(), indent=2) + "\n")
        record_session(workdir, start, run_id)
    log.info("%s", exp.describe())

    multi_step = exp.multi_step()
    programs: dict = {}  # (steps per call, phase) -> the compiled multi-step

    def run_steps(state, length: int, phase):
        """The compiled multi-step for (length, phase), compiled ahead of its first call so that the
        heap the compiler freed is returned before the step allocates its own (peak memory)."""
        if (length, phase) not in programs:
            programs[length, phase] = multi_step.lower(state, exp.data, length, phase).compile()
            release_freed_memory()
        return programs[length, phase](state, exp.data)

    trained_steps = cfg.algorithm.inner_steps
    val_steps = max(trained_steps, cfg.eval.inner_steps)
    val_score = exp.scorer("val", val_steps)
    val_key = eval_key(cfg.eval.seed, "val")

    def validate_now(step: int) -> dict:
        values = run_episodes(
            val_score,
            state.meta_params,
            state.meta_state,
            exp.data,
            val_key,
            cfg.eval.val_episodes,
            exp.eval_batch(min(cfg.eval.batch_size, cfg.eval.val_episodes)),
        )
        with np.errstate(invalid="ignore", over="ignore"):
            means = values["metric"].mean(axis=0)
        return {
            f"val/{exp.metric}_pre": means[0],
            f"val/{exp.metric}": means[trained_steps],
            f"val/{exp.metric}_step{val_steps}": means[val_steps],
            f"val/diverged_step{val_steps}": int(diverged(values["loss"])[:, val_steps].sum()),
        }

    writer = None
    last_val: dict = {}
    step = start
    out_of_time = False
    last_phase = None
    pending: list = []  # per-call metric arrays since the last log line
    show_bar = bool(t.progress) and sys.stderr.isatty()  # no carriage returns in redirected logs
    try:
        if writes:
            from maml_cli.run.trackers import make_tracker

            tracker = make_tracker(cfg.logger, workdir, start, OmegaConf.to_container(cfg, resolve=True))
            writer = MetricWriter(workdir, resume_step=start, tracker=tracker)
        with (
            stop_signals.flagging() as stop,  # a stop signal now finishes the call, then saves
            logging_redirect_tqdm(),
            tqdm(
                total=t.steps,
                initial=start,
                unit="step",
                disable=not show_bar,
                dynamic_ncols=True,
                desc="meta-train",
            ) as bar,
        ):
            if start == 0 and t.steps > 0:
                log.info("compiling the outer step (first call)")
            last_log, train_seconds = step, 0.0
            deadline = None if t.time_limit_minutes is None else began + 60 * t.time_limit_minutes
            while step < t.steps and stop.signum is None and not out_of_time:
                end = min(
                    t.steps,
                    step + t.steps_per_call,
                    _next_boundary(step, t.log_every),
                    _next_boundary(step, t.eval_every),
                    _next_boundary(step, t.checkpoint_every),
                    exp.next_phase_change(step) or t.steps,
                )
                phase = exp.phase_at(step)
                if exp.algorithm.boundaries() and phase != last_phase:  # e.g. MAML++'s schedule of switches
                    log.info("from step %d: %s", step, phase)
                    last_phase = phase
                call_began = time.perf_counter()
                state, chunk = run_steps(state, end - step, phase)
                chunk = jax.device_get(chunk)
                train_seconds += time.perf_counter() - call_began
                losses = chunk["train/query_loss"]
                if not np.all(np.isfinite(losses)):  # checked on every call: a NaN state is never saved
                    bad = step + 1 + int(np.argmin(np.isfinite(losses)))
                    raise NonFiniteLoss(
                        f"meta-training loss is {losses[bad - step - 1]} at step {bad}; last checkpoint: "
                        f"step {checkpointer.latest_step()}. Lower train.outer_lr or algorithm.inner_lr, "
                        "or set train.grad_clip."
                    )
                pending.append(chunk)
                bar.update(end - step)
                step = end

                row = {}  # one metrics.jsonl record per step
                if step % t.log_every == 0 or step == t.steps:
                    metrics = {k: float(np.mean(np.concatenate([c[k] for c in pending]))) for k in pending[0]}
                    pending = []
                    # Outer steps per second of the jitted calls alone (validation, plots and
                    # checkpoints aside; the first window includes compilation).
                    metrics["train/steps_per_s"] = (step - last_log) / max(train_seconds, 1e-9)
                    last_log, train_seconds = step, 0.0
                    row.update(metrics)
                    bar.set_postfix(loss=f"{metrics['train/query_loss']:.4g}")
                validated = step % t.eval_every == 0 or step == t.steps
                if validated:
                    last_val = {k: float(v) for k, v in validate_now(step).items()}
                    row.update(last_val)
                    log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in last_val.items()))
                if row and writes:
                    writer.write(step, row)
                if validated and t.plots and writes:
                    _write_plots(exp, workdir)
                out_of_time = deadline is not None and time.perf_counter() >= deadline
                # Every validated step is saved too while the best ones are kept (checkpoint=best:N).
                if validated and t.keep_best:
                    checkpointer.save(step, state, score=ranking_score(last_val[selection], exp.metric))
                if step % t.checkpoint_every == 0 or step == t.steps or out_of_time:
                    checkpointer.save(step, state)
            if out_of_time:
                log.info(
                    "train.time_limit_minutes=%g reached at step %d; checkpoint saved. Run the same "
                    "command to continue.",
                    t.time_limit_minutes,
                    step,
                )
            if stop.signum is not None:
                checkpointer.save(step, state)
                raise TrainingInterrupted(
                    f"stopped at step {step} by {stop_signals.name(stop.signum)}; checkpoint saved. "
                    "Run the same command with the same hydra.run.dir to resume.",
                    stop.signum,
                    _submitit_resubmit(stop.replaced, stop.signum),
                )
    finally:
        if writer is not None:
            writer.close()
        checkpointer.close()
    if start >= t.steps:
        log.info("%s is already trained to step %d (train.steps=%d): nothing to do", workdir, start, t.steps)
        last_val = {k: v for r in read_jsonl(workdir / "metrics.jsonl") for k, v in r.items() if k.startswith("val/")}
    if writes and t.plots and (step > start or not (workdir / "plots").is_dir()):
        _write_plots(exp, workdir, state)
    return Summary(
        run_dir=workdir,
        start_step=start,
        step=step,
        steps=t.steps,
        seconds=time.perf_counter() - began,
        last_val=last_val,
        metric=exp.metric,
    )
