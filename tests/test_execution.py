"""The ``auto`` execution plan: what it picks per backend and model, and that explicit settings win.
(That every choice computes the same numbers is tested in test_meta_math and test_omniglot.)"""

from __future__ import annotations

import pytest

from maml_cli.backend.plan import Execution, plan_execution
from maml_cli.engine.experiment import build_experiment
from tests.conftest import make_cfg


@pytest.mark.parametrize(
    "model,backend,downsample,inner_steps,expected",
    [
        ("conv4", "cpu", "stride", 5, Execution("map", True, "im2col")),  # Omniglot 20-way
        ("conv4", "cpu", "stride", 1, Execution("map", False, "im2col")),  # Omniglot 5-way: one step, no remat
        ("conv4", "cpu", "maxpool", 5, Execution("map", True, "lax_vjp")),  # MiniImageNet
        ("conv4", "gpu", "maxpool", 5, Execution("vmap", False, "lax")),
        ("conv4", "gpu", "stride", 1, Execution("vmap", False, "lax")),
        ("conv4", "tpu", "stride", 5, Execution("vmap", False, "lax")),
        ("mlp", "cpu", "stride", 5, Execution("vmap", False, None)),
        ("mlp", "gpu", "stride", 1, Execution("vmap", False, None)),
    ],
)
def test_auto_plan(model, backend, downsample, inner_steps, expected):
    plan = plan_execution(model, backend=backend, downsample=downsample, inner_steps=inner_steps)
    assert plan == expected
    assert plan.reasons and all(reason in plan.explain() for reason in plan.reasons)


def test_explicit_settings_win_over_auto():
    assert plan_execution("conv4", "vmap", None, "lax", backend="cpu") == Execution("vmap", False, "lax")
    assert plan_execution("conv4", "map", False, "auto", backend="cpu") == Execution("map", False, "im2col")
    assert plan_execution("conv4", "map", True, "lax", backend="cpu", downsample="maxpool").reasons == ()
    assert plan_execution("mlp", "auto", True, backend="gpu") == Execution("vmap", True, None)


def test_experiment_uses_the_resolved_plan():
    exp = build_experiment(make_cfg("train.task_batching=unroll", "train.remat=true"))
    assert exp.execution == Execution("unroll", True, None)
    assert "task_batching=unroll" in exp.execution.describe()


def test_the_log_says_why_auto_chose_the_plan(tmp_path):
    exp = build_experiment(make_cfg())
    assert "(auto: vmap: one batched program" in exp.describe()
