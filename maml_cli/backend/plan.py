"""The plan of a job: how the meta-learning math runs on this machine, decided once per job by
``make_plan`` and carried in the Experiment: the processes joined, the devices and their mesh,
task batching, remat, the convolution form and the compilation cache.

Every option computes the same numbers (tests compare loss and meta-gradient across all of them);
they differ only in speed and memory. ``auto`` picks, per backend, model and input size (each rule
measured, docs/performance.md "Choosing the CPU plan"), and the plan carries its reasons, which the
training log prints:

- ``conv_impl`` (``maml_cli/models/convolution.py``): elsewhere than on CPU, XLA's own. On CPU, for
  nets that downsample by stride (Omniglot, 28x28) nine strided slices + one matmul (``im2col``),
  the fastest there; for nets that max-pool (stride-1 convolutions on MiniImageNet's 84x84x3),
  XLA's convolution with our own derivative rule (``lax_vjp``): at 84x84 the patch tensors of
  ``im2col`` no longer fit in cache (a 42x42x32 layer of 75 images: 29 ms against 110 forward),
  and XLA's own second derivatives fall onto a slow path (a step took 51 s).
- ``task_batching``: on CPU, convolutional models map tasks one at a time (``lax.map``), each
  task's gradient taken inside the map, so that one task's activations are held at a time;
  elsewhere, and for small dense models, ``vmap`` builds one batched program (large kernels for GPUs).
- ``remat``: on CPU with ``map`` and more than one inner step, each inner step's activations are
  recomputed in the backward pass (``jax.checkpoint``) instead of being stored: memory stays flat in
  the inner steps. With one inner step there is nothing to save and it only costs a forward pass.

Why cache matters on CPU (``scripts/profile_step.py`` measures it): the 2-core EPYC this was
tuned on streams an elementwise op several times faster while the data fits in its 32 MB L3 than
beyond it, and a batched second-order step over 16 Omniglot 20-way tasks builds tensors of tens to
hundreds of MB.

Cores as devices (``processes.py``): on CPU, ``train.devices=auto`` spreads a convolutional
meta-batch over one device per core with the same ``shard_map`` that spreads it over GPUs
(``sharding.py``); dense models (``vmap``) stay on one device, where the collectives would cost
more than they save. The result equals one device's up to float reassociation (tests/test_parallel.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh

from maml_cli.backend import compilation, processes
from maml_cli.backend.processes import cores_are_devices
from maml_cli.backend.sharding import TASKS
from maml_cli.errors import UserError

CONV_MODELS = ("conv4",)


@dataclass(frozen=True)
class Plan:
    """Everything decided about how a job runs, with the reasons ``auto`` chose what it chose."""

    execution: Execution  # task batching, remat, convolution form
    mesh: Mesh | None  # the devices the tasks are split over; None: one device in one process
    compilation_cache: Path | None  # where compiled programs are kept (None: off)

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def describe(self) -> str:
        """Where and how the job runs, for the log."""
        return f"{jax.default_backend()} ({describe_devices(self.mesh)}): {self.execution.explain()}"

    def use_compilation_cache(self) -> None:
        """Turn the compilation cache on: by the jobs that compile (never by a dry run)."""
        compilation.enable_compilation_cache(self.compilation_cache)


def make_plan(cfg, training: bool = True) -> Plan:
    """The plan for ``cfg`` on this machine, checked (devices asked for that are not here, a
    meta-batch that does not split over them: UserError). ``training=False`` (scoring): the
    meta-batch need not split over the devices."""
    processes.start(cfg.distributed)  # before JAX's first computation
    execution = plan_execution(
        cfg.model.name,
        cfg.train.task_batching,
        cfg.train.remat,
        cfg.model.get("conv_impl"),
        downsample=cfg.model.get("downsample", "stride"),
        inner_steps=cfg.algorithm.inner_steps,
    )
    auto = auto_devices(execution, jax.device_count(), cfg.train.meta_batch_size if training else None)
    devices = device_count(cfg.train.devices, auto)
    if training:
        check_divisible(cfg.train.meta_batch_size, devices, cfg.train.devices)
    return Plan(execution, task_mesh(devices), compilation.compilation_cache_dir())


@dataclass(frozen=True)
class Execution:
    task_batching: str  # vmap | map | unroll
    remat: bool
    conv_impl: str | None  # im2col | lax | lax_vjp; None for models without convolutions
    reasons: tuple = field(default=(), compare=False)  # why auto chose what it chose, for the log

    def describe(self) -> str:
        conv = f", conv_impl={self.conv_impl}" if self.conv_impl else ""
        return f"task_batching={self.task_batching}, remat={str(self.remat).lower()}{conv}"

    def explain(self) -> str:
        """The plan and, where ``auto`` chose, why."""
        return self.describe() + (f" (auto: {'; '.join(self.reasons)})" if self.reasons else "")


def plan_execution(
    model_name: str,
    task_batching: str = "auto",
    remat: bool | None = None,
    conv_impl: str | None = "auto",
    backend: str | None = None,
    *,
    downsample: str = "stride",
    inner_steps: int = 1,
) -> Execution:
    """Resolve the ``auto`` settings of a config for ``backend`` (default: JAX's default backend).
    ``downsample``: how a convolutional net downsamples (stride | maxpool); ``inner_steps``: those
    of meta-training."""
    backend = backend or jax.default_backend()
    on_cpu = backend == "cpu"
    has_conv = model_name in CONV_MODELS
    reasons = []
    if task_batching == "auto":
        task_batching = "map" if on_cpu and has_conv else "vmap"
        reasons.append(
            "map: one task's activations in cache at a time"
            if task_batching == "map"
            else ("vmap: one batched program" + ("" if on_cpu else f" on {backend}"))
        )
    if remat is None:
        remat = on_cpu and has_conv and task_batching == "map" and inner_steps > 1
        if on_cpu and has_conv and task_batching == "map":
            reasons.append(
                f"remat: memory flat in the {inner_steps} inner steps"
                if remat
                else "no remat: one inner step, nothing to save"
            )
    if not has_conv:
        conv_impl = None
    elif conv_impl in (None, "auto"):
        if not on_cpu:
            conv_impl = "lax"
            reasons.append(f"lax: XLA's convolutions on {backend}")
        elif downsample == "maxpool":
            conv_impl = "lax_vjp"
            reasons.append("lax_vjp: stride-1 convolutions on large images, patch tensors too big for im2col")
        else:
            conv_impl = "im2col"
            reasons.append("im2col: strided convolutions on small images")
    return Execution(task_batching=task_batching, remat=bool(remat), conv_impl=conv_impl, reasons=tuple(reasons))


def auto_devices(execution: Execution, available: int, meta_batch_size: int | None) -> int:
    """What ``train.devices=auto`` means: every device, except where the devices are this machine's
    cores, and then only for per-task (``map``) programs, as many as split the meta-batch evenly."""
    if not cores_are_devices():
        return available
    if execution.task_batching != "map":
        return 1
    if meta_batch_size is None:
        return available
    return max(d for d in range(1, available + 1) if meta_batch_size % d == 0)


def device_count(setting, auto: int | None = None) -> int:
    """How many devices ``train.devices`` (auto | N) asks for, checked against what is here;
    ``auto``: what auto means for this run (default: every device)."""
    available = jax.device_count()
    if str(setting) == "auto":
        return available if auto is None else auto
    try:
        n = int(setting)
    except ValueError:
        raise UserError(f"train.devices must be auto or a number of devices (got {setting!r})") from None
    if not 1 <= n <= available:
        raise UserError(
            f"train.devices={n}, but {available} device(s) are available "
            f"({jax.default_backend()}{', one per core' if cores_are_devices() else ''}); "
            f"use train.devices=auto or a number in 1..{available}"
        )
    if jax.process_count() > 1 and n != available:
        raise UserError(
            f"train.devices={n}: a run over {jax.process_count()} processes uses every device of every "
            f"process ({available}); use train.devices=auto"
        )
    return n


def task_mesh(devices: int) -> Mesh | None:
    """The ``tasks`` mesh over the first ``devices`` devices; None for one device in one process
    (then nothing is sharded and the single-device programs run unchanged)."""
    if devices == 1 and jax.process_count() == 1:
        return None
    return Mesh(np.array(jax.devices()[:devices]), (TASKS,))


def check_divisible(meta_batch_size: int, devices: int, setting) -> None:
    if meta_batch_size % devices:
        lower = max(d for d in range(1, devices + 1) if meta_batch_size % d == 0)
        raise UserError(
            f"train.meta_batch_size={meta_batch_size} does not split evenly over {devices} devices "
            f"(train.devices={setting}): use a meta-batch that is a multiple of {devices} "
            f"(e.g. {-(-meta_batch_size // devices) * devices}) or train.devices={lower}"
        )


def describe_devices(mesh: Mesh | None) -> str:
    cores = cores_are_devices()
    if mesh is None:
        return f"1 device of {jax.device_count()}, one per core" if cores else "1 device"
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    kind = " CPU devices, one per core" if cores else " devices"
    return f"{mesh.size}{kind}{processes}, meta-batch sharded over a '{TASKS}' mesh axis"
