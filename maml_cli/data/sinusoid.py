"""Sinusoid regression tasks (Finn et al. 2017, section 5.1), sampled on the device."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from maml_cli.data.episodes import Episodes, TaskSpec, task_part


class SinusoidTasks:
    """y = A sin(x - phase); every split draws from the same distribution with its own keys."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = TaskSpec(input_shape=(1,), output_dim=1, kind="regression")
        self.data = None  # nothing to hold: tasks are drawn from formulas
        self.source = "generated (no files)"

    def check(self, shots=None, query_shots=None, shots_from=None) -> None:
        """Any number of points can be drawn."""

    def task_parameters(self, key: jax.Array, num_tasks: int):
        """(amplitude, phase), each [num_tasks, 1, 1], of the tasks ``sample`` draws from ``key``."""
        c = self.cfg
        k_amp, k_phase, _ = jax.random.split(key, 3)
        amplitude = jax.random.uniform(k_amp, (num_tasks, 1, 1), minval=c.amplitude_min, maxval=c.amplitude_max)
        phase = jax.random.uniform(k_phase, (num_tasks, 1, 1), minval=c.phase_min, maxval=c.phase_max)
        return amplitude, phase

    def sample(
        self, data, key: jax.Array, split: str, num_tasks: int, shots=None, query_shots=None, part=None
    ) -> Episodes:
        """``shots`` / ``query_shots`` replace the dataset's K for this call (None: keep it);
        ``part = (index, parts)``: only that share of the tasks (``task_part``). The draws are a few
        numbers per task, so every part draws them all and keeps its own."""
        del data, split  # tasks are infinite; splits differ only by the caller's key
        c = self.cfg
        shots = c.shots if shots is None else shots
        query_shots = c.query_shots if query_shots is None else query_shots
        amplitude, phase = self.task_parameters(key, num_tasks)
        k_x = jax.random.split(key, 3)[2]
        x = jax.random.uniform(k_x, (num_tasks, shots + query_shots, 1), minval=c.x_min, maxval=c.x_max)
        y = amplitude * jnp.sin(x - phase)
        return task_part(
            Episodes(
                support_x=x[:, :shots],
                support_y=y[:, :shots],
                query_x=x[:, shots:],
                query_y=y[:, shots:],
            ),
            part,
        )
