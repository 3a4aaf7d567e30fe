"""One training over several devices and several processes, with JAX's own machinery.

Devices: a one-axis mesh, ``tasks``, over the devices. The outer step runs under
``jax.shard_map``: each device draws and adapts only its share of the meta-batch
(``meta_batch_size / devices`` tasks, the same tasks a single device would draw: see
``data.episodes.task_part``), then the meta-gradients, metrics and batch statistics are averaged
over the axis with ``pmean``. Parameters and optimizer state are replicated, so every device
applies the same update. Equal shares make the mean of the device means the mean over the
meta-batch, so a run equals the single-device one up to float reassociation (tests/test_parallel.py).

Inside ``shard_map`` the replicated meta-parameters (and meta-state) are first cast to device-varying
(``lax.pcast``): the inner loop differentiates them against each device's own tasks, and without
the cast JAX would transpose the implicit broadcast into a ``psum``, adding up the inner gradients
of every device's tasks.

Processes: started as several processes (``srun`` under SLURM, or by hand with
``distributed.coordinator``), they join with ``jax.distributed.initialize`` before JAX does
anything else, and the mesh spans every process's devices. Each process then draws only the tasks
of its own devices; only process 0 writes the run directory's files (logs, metrics, config,
plots), while every process takes part in Orbax's checkpoint writes as Orbax requires.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from maml_cli.backend.plan import cores_are_devices
from maml_cli.errors import UserError

log = logging.getLogger(__name__)

TASKS = "tasks"  # the mesh axis the tasks of a meta-batch (and evaluation episodes) are split over


# --- processes -------------------------------------------------------------------------------------


def slurm_processes() -> int | None:
    """Processes of the SLURM job step this process belongs to (``srun``), or None outside one."""
    value = os.environ.get("SLURM_STEP_NUM_TASKS")
    return int(value) if value and value.isascii() and value.isdigit() else None


def process_id_from_env(dist_cfg) -> int:
    """This process's rank, known before JAX starts: ``distributed.process_id``, else SLURM's."""
    if dist_cfg.process_id is not None:
        return int(dist_cfg.process_id)
    if (slurm_processes() or 1) > 1:
        return int(os.environ.get("SLURM_PROCID", "0"))
    return 0


def wants_distributed(dist_cfg) -> bool:
    return dist_cfg.coordinator is not None or (slurm_processes() or 1) > 1


def check_distributed(dist_cfg) -> None:
    """The settings of ``distributed.*`` that cannot work, before anything starts."""
    c = dist_cfg
    if c.coordinator is None:
        if c.num_processes is not None or c.process_id is not None:
            raise UserError(
                "distributed.num_processes and distributed.process_id need distributed.coordinator="
                "HOST:PORT (the address of process 0), or leave all three null under SLURM's srun"
            )
        return
    host, _, port = str(c.coordinator).rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise UserError(f"distributed.coordinator must be HOST:PORT (got {c.coordinator!r})")
    if slurm_processes() is None and (c.num_processes is None or c.process_id is None):
        raise UserError(
            "distributed.coordinator needs distributed.num_processes and distributed.process_id "
            "outside SLURM (each process gets its own process_id, 0..num_processes-1)"
        )
    if c.num_processes is not None and c.num_processes < 1:
        raise UserError(f"distributed.num_processes must be >= 1 (got {c.num_processes})")
    if c.process_id is not None and c.num_processes is not None and not 0 <= c.process_id < c.num_processes:
        raise UserError(f"distributed.process_id must be in 0..{c.num_processes - 1} (got {c.process_id})")


_initialized = False


def initialize(dist_cfg) -> None:
    """Join the other processes (``jax.distributed.initialize``) when launched as several; a no-op
    for one process or when already joined. Must run before JAX's first computation."""
    global _initialized
    if _initialized or not wants_distributed(dist_cfg):
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
    _initialized = True


def is_writer() -> bool:
    """Whether this process writes the run directory's files (process 0 does)."""
    return jax.process_index() == 0


# --- devices ---------------------------------------------------------------------------------------


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


def replicate(tree, mesh: Mesh | None):
    """``tree`` as arrays replicated on every device of ``mesh`` (a global array in a run over
    several processes, built from each process's identical copy); unchanged without a mesh."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P())

    def put(a):
        if isinstance(a, jax.Array) and a.sharding == sharding:
            return a
        host = np.asarray(jax.device_get(a))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def varying(tree):
    """Mark replicated values as differing per device, so gradients taken inside ``shard_map``
    stay per device (see the module docstring)."""
    return jax.tree.map(lambda a: jax.lax.pcast(a, TASKS, to="varying"), tree)


def sharded_meta_gradient(mesh: Mesh, sample: Callable, algorithm, meta_batch_size: int, phase) -> Callable:
    """``(meta_params, meta_state, data, task_key, algorithm_key, step) -> (grads, meta_state,
    metrics)`` averaged over the meta-batch, each device drawing and adapting its own share."""
    parts = mesh.size

    def local(meta_params, meta_state, data, task_key, algorithm_key, step):
        index = jax.lax.axis_index(TASKS)
        episodes = sample(data, task_key, "train", meta_batch_size, shots=algorithm.train_shots, part=(index, parts))
        # Reptile splits ``algorithm_key`` per task: give each device its own, distinct key.
        algorithm_key = jax.random.fold_in(algorithm_key, index)
        # The meta-state too: Reptile's inner Adam moments start from it and, updated on this
        # device's tasks, come out of the inner scan varying; a scan's carry must keep its type.
        grads, new_state, out = algorithm.meta_gradient(
            varying(meta_params), varying(meta_state), episodes, algorithm_key, step, phase
        )
        grads, new_state, out = jax.lax.pmean((grads, new_state, out), TASKS)
        # pmean turns integers (an optimizer's step count, the same on every device) into floats.
        return grads, jax.tree.map(lambda a, b: a.astype(b.dtype), new_state, meta_state), out

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(), P(), P(), P()), out_specs=P())


def sharded_over_tasks(fn: Callable, mesh: Mesh) -> Callable:
    """``fn(meta_params, meta_state, data, keys) -> arrays [len(keys), ...]`` with the keys split over
    the devices, every device's results gathered back (replicated, so any process can read them)."""

    def local(meta_params, meta_state, data, keys):
        out = fn(varying(meta_params), varying(meta_state), data, keys)
        # Gathered as a sum of zero-padded shares: psum's result is known to be the same on every
        # device, which out_specs=P() asks for (all_gather's is not).

        def gather(share):
            size = share.shape[0]
            padded = jnp.zeros((size * mesh.size, *share.shape[1:]), share.dtype)
            padded = jax.lax.dynamic_update_slice_in_dim(padded, share, jax.lax.axis_index(TASKS) * size, 0)
            return jax.lax.psum(padded, TASKS)

        return jax.tree.map(gather, out)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(), P(TASKS)), out_specs=P())


def describe(mesh: Mesh | None) -> str:
    cores = cores_are_devices()
    if mesh is None:
        return f"1 device of {jax.device_count()}, one per core" if cores else "1 device"
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    kind = " CPU devices, one per core" if cores else " devices"
    return f"{mesh.size}{kind}{processes}, meta-batch sharded over a '{TASKS}' mesh axis"
