"""The computations spread over the devices of the plan's mesh, with JAX's own machinery.

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

The mesh and how many devices it spans are the plan's (``plan.py``); the processes' start-up is
``processes.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

TASKS = "tasks"  # the mesh axis the tasks of a meta-batch (and evaluation episodes) are split over


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
