"""What must happen before JAX's first computation, once per process: its CPU devices (one per
core) and, launched as several processes, joining the others.

Cores as devices. A program of many small per-task kernels keeps one core busy and the others
mostly waiting: XLA:CPU splits a kernel over threads, not a loop of tasks. So the console scripts
start JAX with one CPU device per core (``use_cores_as_devices``; ``MAML_CLI_CPU_DEVICES=auto|N``,
1 turns it off), and ``train.devices=auto`` spreads a convolutional meta-batch over them with the
same ``shard_map`` that spreads it over GPUs (``sharding.py``; the choice: ``plan.py``).

Processes: started as several processes (``srun`` under SLURM, or by hand with
``distributed.coordinator``), they join with ``jax.distributed.initialize`` before JAX does
anything else, and the mesh spans every process's devices. Each process then draws only the tasks
of its own devices; only process 0 writes the run directory's files (logs, metrics, config,
plots), while every process takes part in Orbax's checkpoint writes as Orbax requires.
"""

from __future__ import annotations

import logging
import os

import jax

from maml_cli.backend.launch import check_distributed, wants_distributed
from maml_cli.errors import UserError

log = logging.getLogger(__name__)

MAX_CPU_DEVICES = 8  # each CPU device holds its own copy of the dataset's arrays
_cores_are_devices = False
_joined = False


def start(dist_cfg) -> None:
    """This process's devices and processes, before JAX's first computation: one CPU device per
    core (a no-op once JAX has started), then the other processes joined when launched as several."""
    distributed = wants_distributed(dist_cfg)
    try:
        use_cores_as_devices(distributed=distributed)
    except ValueError as e:
        raise UserError(str(e)) from None
    join(dist_cfg)


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


def join(dist_cfg) -> None:
    """Join the other processes (``jax.distributed.initialize``) when launched as several; a no-op
    for one process or when already joined. Must run before JAX's first computation."""
    global _joined
    if _joined or not wants_distributed(dist_cfg):
        return
    check_distributed(dist_cfg)
    kwargs = {}
    if dist_cfg.coordinator is not None:
        kwargs = {
            "coordinator_address": dist_cfg.coordinator,
            "num_processes": dist_cfg.num_processes,
            "process_id": dist_cfg.process_id,
        }
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # the rest from SLURM
    log.info("joining %s", dist_cfg.coordinator or "the SLURM job step's processes")
    jax.distributed.initialize(**kwargs)
    _joined = True


def is_writer() -> bool:
    """Whether this process writes the run directory's files (process 0 does)."""
    return jax.process_index() == 0
