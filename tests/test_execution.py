"""The ``auto`` execution plan: what it picks per backend and model, and that explicit settings win.
(That every choice computes the same numbers is tested in test_meta_math and test_omniglot.)"""

from __future__ import annotations

import pytest

from maml_cli.execution import Execution, plan_execution
from maml_cli.experiment import build_experiment
from tests.conftest import make_cfg


@pytest.mark.parametrize(
    "model,backend,expected",
    [
        ("conv4", "cpu", Execution("map", True, "im2col")),
        ("conv4", "gpu", Execution("vmap", False, "lax")),
        ("conv4", "tpu", Execution("vmap", False, "lax")),
        ("mlp", "cpu", Execution("vmap", False, None)),
        ("mlp", "gpu", Execution("vmap", False, None)),
    ],
)
def test_auto_plan(model, backend, expected):
    assert plan_execution(model, backend=backend) == expected


def test_explicit_settings_win_over_auto():
    assert plan_execution("conv4", "vmap", None, "lax", backend="cpu") == Execution("vmap", False, "lax")
    assert plan_execution("conv4", "map", False, "auto", backend="cpu") == Execution("map", False, "im2col")
    assert plan_execution("mlp", "auto", True, backend="gpu") == Execution("vmap", True, None)


def test_experiment_uses_the_resolved_plan():
    exp = build_experiment(make_cfg("train.task_batching=unroll", "train.remat=true"))
    assert exp.execution == Execution("unroll", True, None)
    assert "task_batching=unroll" in exp.execution.describe()
