"""How the meta-learning math is executed on this backend: the one place that choice is made.

Every option computes the same numbers (tests compare loss and meta-gradient across all of them);
they differ only in speed and memory. ``auto`` picks, per backend and model:

- ``conv_impl``: on CPU, convolutions as strided slices + one matmul (``im2col``): with per-task
  weights XLA:CPU would otherwise run grouped convolutions, its slow path. Elsewhere XLA's own.
- ``task_batching``: on CPU, convolutional models map tasks one at a time (``lax.map``) so that
  one task's activations stay in cache; elsewhere, and for small dense models, ``vmap`` builds one
  batched program (large kernels for GPUs).
- ``remat``: on CPU with ``map``, each inner step's activations are recomputed in the backward
  pass (``jax.checkpoint``) instead of being stacked in memory, again to stay in cache.

Why cache matters on CPU (``scripts/profile_step.py`` measures it): the 2-core EPYC this was
tuned on streams an elementwise op several times faster while the data fits in its 32 MB L3 than
beyond it, and a batched second-order step over 16 Omniglot 20-way tasks builds tensors of tens to
hundreds of MB. docs/performance.md has the figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import jax

from maml_cli.data.cache import CACHE_HOME

CONV_MODELS = ("conv4",)


@dataclass(frozen=True)
class Execution:
    task_batching: str  # vmap | map | unroll
    remat: bool
    conv_impl: Optional[str]  # im2col | lax; None for models without convolutions

    def describe(self) -> str:
        conv = f", conv_impl={self.conv_impl}" if self.conv_impl else ""
        return f"task_batching={self.task_batching}, remat={str(self.remat).lower()}{conv}"


def plan_execution(model_name: str, task_batching: str = "auto", remat: Optional[bool] = None,
                   conv_impl: Optional[str] = "auto", backend: Optional[str] = None) -> Execution:
    """Resolve the ``auto`` settings of a config for ``backend`` (default: JAX's default backend)."""
    backend = backend or jax.default_backend()
    on_cpu = backend == "cpu"
    has_conv = model_name in CONV_MODELS
    if task_batching == "auto":
        task_batching = "map" if on_cpu and has_conv else "vmap"
    if remat is None:
        remat = on_cpu and has_conv and task_batching == "map"
    if not has_conv:
        conv_impl = None
    elif conv_impl in (None, "auto"):
        conv_impl = "im2col" if on_cpu else "lax"
    return Execution(task_batching=task_batching, remat=bool(remat), conv_impl=conv_impl)


def enable_compilation_cache() -> None:
    """Keep compiled programs on disk so a second run of the same config starts in seconds.
    ``MAML_CLI_COMPILE_CACHE`` names the folder (default ~/.cache/maml-cli/jax); "off" disables."""
    folder = os.environ.get("MAML_CLI_COMPILE_CACHE", str(CACHE_HOME / "jax"))
    if folder.lower() in ("", "off", "0", "false"):
        return
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
