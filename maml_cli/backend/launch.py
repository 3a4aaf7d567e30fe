"""How this process was launched, read from ``distributed.*`` and the environment (SLURM's
``srun``) before JAX starts: whether it is one of several processes, and which. No JAX here: the
commands' checks and ``--help`` import this without starting it."""

from __future__ import annotations

import os

from maml_cli.errors import UserError


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
