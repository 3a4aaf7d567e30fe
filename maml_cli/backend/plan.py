"""How the meta-learning math is executed on this backend: the one place that choice is made.

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

Cores as devices. A program of many small per-task kernels keeps one core busy and the others
mostly waiting: XLA:CPU splits a kernel over threads, not a loop of tasks. So the console scripts
start JAX with one CPU device per core (``use_cores_as_devices``; ``MAML_CLI_CPU_DEVICES=auto|N``,
1 turns it off), and ``train.devices=auto`` spreads a convolutional meta-batch over them with the
same ``shard_map`` that spreads it over GPUs (``maml_cli/backend/sharding.py``): each core draws and adapts
its share of the tasks. Dense models (``vmap``) stay on one device, where the collectives would cost
more than they save. The result equals one device's up to float reassociation (tests/test_parallel.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax

from maml_cli.data.cache import check_writable_dir, default_cache_dir
from maml_cli.errors import UserError

CONV_MODELS = ("conv4",)
MAX_CPU_DEVICES = 8  # each CPU device holds its own copy of the dataset's arrays
_cores_are_devices = False


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


def enable_compilation_cache() -> None:
    """Keep compiled programs on disk so a second run of the same config starts in seconds.
    ``MAML_CLI_COMPILE_CACHE`` names the folder (default ``$MAML_CLI_CACHE/jax``); "off" disables.

    The cache's size is bounded (``MAML_CLI_COMPILE_CACHE_GB``, default 4; least recently used
    programs go first). Bounded, JAX also takes a file lock around every read and write of it, so
    jobs that share it never read a program another is still writing; one cut short by a kill
    fails to decompress, and JAX then compiles instead of using it."""
    folder = compilation_cache_dir()
    if folder is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", int(compilation_cache_gigabytes() * 2**30))


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept (None: off), checked to be a folder that can be written:
    an unusable one is refused (``UserError``), never replaced by the working directory."""
    setting = os.environ.get("MAML_CLI_COMPILE_CACHE")
    if setting is not None and setting.strip().lower() in ("off", "0", "false"):
        return None
    if setting is not None and not setting.strip():
        raise UserError(
            "MAML_CLI_COMPILE_CACHE is set but empty: unset it (compiled programs then go to "
            "$MAML_CLI_CACHE/jax), set it to a folder, or to off"
        )
    folder = default_cache_dir() / "jax" if setting is None else Path(setting).expanduser().absolute()
    return check_writable_dir(folder, "MAML_CLI_COMPILE_CACHE" if setting is not None else "MAML_CLI_CACHE")


def compilation_cache_gigabytes() -> float:
    value = os.environ.get("MAML_CLI_COMPILE_CACHE_GB", "4")
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = math.nan
    if not (math.isfinite(gigabytes) and gigabytes > 0):
        raise UserError(f"MAML_CLI_COMPILE_CACHE_GB must be a number of gigabytes > 0 (got {value!r})")
    return gigabytes


def host_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cores_as_devices(distributed: bool = False) -> int:
    """Start JAX with one CPU device per core (see the module docstring); call before JAX's first
    computation. Returns the CPU devices made, or 0 when left to JAX: ``MAML_CLI_CPU_DEVICES=1``,
    one core, a run over several processes (one device per process there), devices already forced
    with ``XLA_FLAGS=--xla_force_host_platform_device_count``, or JAX already started."""
    global _cores_are_devices
    setting = os.environ.get("MAML_CLI_CPU_DEVICES", "auto").strip().lower()
    if setting == "auto":
        count = min(host_cores(), MAX_CPU_DEVICES)
    elif setting.isascii() and setting.isdigit() and int(setting) >= 1:
        count = int(setting)
    else:
        raise ValueError(f"MAML_CLI_CPU_DEVICES must be auto or a number >= 1 (got {setting!r})")
    forced = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if count <= 1 or distributed or forced:
        return 0
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has started (a notebook that computed something first): leave it be
        return 0
    _cores_are_devices = True
    return count


def cores_are_devices() -> bool:
    """Whether JAX's devices are this machine's cores, made by ``use_cores_as_devices``."""
    return _cores_are_devices and jax.default_backend() == "cpu"


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


def release_freed_memory() -> None:
    """Hand the heap that compiling freed back to the operating system (glibc's ``malloc_trim``).
    glibc keeps it otherwise: after compiling MiniImageNet's step the process held about 0.4 GB it
    no longer used, on top of which the step then allocated (peak RSS 1.77 GB; 1.40 GB trimmed).
    A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return
    if trim is not None:
        trim(0)
