"""What a config builds, once per job, shared by training, evaluation, adaptation and the scripts:
the task sampler, the network, the algorithm, the outer optimizer, the execution plan and the
devices (the mesh), and the jitted programs made from them. Nothing here touches disk beyond what
the dataset loader reads."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from maml_cli.backend import sharding
from maml_cli.backend.plan import Execution, Plan, make_plan
from maml_cli.data import TaskSpec, build_sampler
from maml_cli.engine.scoring import make_scorer
from maml_cli.meta.algorithms import Algorithm, build_algorithm
from maml_cli.meta.losses import make_task_loss
from maml_cli.meta.outer import TrainState, init_state, make_multi_step, make_train_step
from maml_cli.models import build_model


@dataclass
class Experiment:
    cfg: DictConfig
    sampler: Any
    algorithm: Algorithm
    optimizer: Any
    plan: Plan  # how the job runs on this machine: devices, mesh, batching, remat, convolutions
    spec: Any = None  # the tasks' TaskSpec (the sampler's; given when no data is read: maml-adapt)
    _data: Any = None

    @property
    def execution(self) -> Execution:
        return self.plan.execution

    @property
    def mesh(self):
        """The devices the tasks are split over (``backend/sharding.py``); None: one device."""
        return self.plan.mesh

    @property
    def data(self):
        """The sampler's arrays, on every device of the mesh."""
        if self._data is None:
            self._data = sharding.replicate(self.sampler.data, self.mesh)
        return self._data

    def place(self, state: TrainState) -> TrainState:
        """A state (initial or restored) replicated on the mesh's devices."""
        return sharding.replicate(state, self.mesh)

    def eval_batch(self, batch_size: int) -> int:
        """``batch_size`` rounded up to a multiple of the devices (the extra episodes are padding)."""
        n = 1 if self.mesh is None else self.mesh.size
        return -(-batch_size // n) * n

    @property
    def metric(self) -> str:
        return self.spec.metric

    def data_record(self) -> dict:
        """What the run was trained on, for ``data.json``: maml-eval and maml-adapt read the input
        shape from it without reading the data."""
        splits = getattr(self.sampler, "splits", None)
        return {
            "dataset": self.cfg.dataset.name,
            "input_shape": list(self.spec.input_shape),
            "output_dim": self.spec.output_dim,
            "kind": self.spec.kind,
            "source": self.sampler.source,
            **({"classes": {k: len(v) for k, v in splits.items()}} if splits else {}),
        }

    @property
    def network(self):
        return self.algorithm.network

    def init_state(self, seed: int | None = None) -> TrainState:
        return init_state(
            self.algorithm, self.spec.input_shape, self.optimizer, self.cfg.seed if seed is None else seed
        )

    def multi_step(self) -> Callable:
        """The jitted ``(state, data, length, phase) -> (state, metrics)`` outer step."""
        return make_multi_step(
            make_train_step(
                self.sampler.sample,
                self.algorithm,
                self.optimizer,
                self.cfg.train.meta_batch_size,
                self.metric,
                self.mesh,
            )
        )

    def phase_at(self, step: int):
        return self.algorithm.phase(step)

    def next_phase_change(self, step: int) -> int | None:
        """The first outer step after ``step`` whose phase differs (None: none)."""
        boundaries = self.algorithm.boundaries()
        i = bisect.bisect_right(boundaries, step)
        return boundaries[i] if i < len(boundaries) else None

    def describe(self) -> str:
        """One line for the log: the algorithm, where it runs, how, and where the data came from."""
        data = self.sampler.source if self.sampler else "none read"
        return f"{self.algorithm.cfg.name} on {self.plan.describe()}; data: {data}"

    def scorer(self, split: str, inner_steps: int, ensemble: bool = False) -> Callable:
        return make_scorer(
            self.sampler.sample,
            self.algorithm,
            inner_steps=inner_steps,
            split=split,
            task_batching=self.execution.task_batching,
            query_shots=self.cfg.eval.query_shots,
            mesh=self.mesh,
            ensemble=ensemble,
        )


_LAST_BUILT: dict = {}  # the last config built -> its Experiment (maml-train checks, then trains)


def build_experiment(cfg: DictConfig, training: bool = True, spec: TaskSpec | None = None) -> Experiment:
    """Everything a config describes, checked before anything is compiled (impossible task shapes
    raise a UserError here). Building the same resolved config again returns the same Experiment,
    so the data that maml-train checks before Hydra starts is read once. ``training=False``
    (maml-eval): the meta-batch need not split over the devices. With ``spec`` no data is read
    (``sampler`` is None): the network and algorithm for tasks of that shape (maml-adapt)."""
    key = (OmegaConf.to_yaml(cfg, resolve=True), training, spec)
    if key not in _LAST_BUILT:
        _LAST_BUILT.clear()
        _LAST_BUILT[key] = _build(cfg, training, spec)
    return _LAST_BUILT[key]


def _build(cfg: DictConfig, training: bool, spec: TaskSpec | None = None) -> Experiment:
    plan = make_plan(cfg, training)
    execution = plan.execution
    sampler = build_sampler(cfg.dataset) if spec is None else None
    spec = sampler.spec if spec is None else spec
    network = build_model(
        cfg.model, spec, execution.conv_impl, inner_steps=cfg.algorithm.inner_steps, anil=cfg.algorithm.name == "anil"
    )
    algorithm = build_algorithm(cfg.algorithm, make_task_loss(network, spec.kind), execution, cfg.train)
    if sampler is not None:
        if training and hasattr(sampler, "require"):
            sampler.require("train", "val")
        # The task shapes this run will ask for besides the dataset's own.
        if algorithm.train_shots is not None:
            sampler.check(shots=algorithm.train_shots, shots_from="algorithm.train_shots + dataset.query_shots")
        if cfg.eval.query_shots is not None:
            sampler.check(query_shots=cfg.eval.query_shots, shots_from="dataset.shots + eval.query_shots")
    return Experiment(
        cfg=cfg,
        sampler=sampler,
        algorithm=algorithm,
        optimizer=algorithm.optimizer(),
        plan=plan,
        spec=spec,
    )
