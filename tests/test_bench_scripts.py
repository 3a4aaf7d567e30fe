"""The measuring code of scripts/bench_throughput.py and scripts/profile_step.py: its figures go into
docs, so the FLOP count and the profile's op accounting are checked here on known programs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from scripts.bench_throughput import interleaved, jaxpr_flops, round_robin, step_flops, xla_cost_flops
from scripts.profile_step import op_category, profile_preset


def test_flops_of_a_matmul_match_xla_and_loops_are_multiplied_out():
    x, w = jnp.ones((4, 5)), jnp.ones((5, 6))
    plain = jax.jit(lambda x, w: x @ w)
    assert jaxpr_flops(jax.make_jaxpr(plain)(x, w).jaxpr) == 2 * 4 * 5 * 6
    assert jaxpr_flops(jax.make_jaxpr(plain)(x, w).jaxpr) == xla_cost_flops(plain.lower(x, w).compile())

    def looped(x, w):  # three matmuls in a scan, each [4, 5] x [5, 5]
        return jax.lax.scan(lambda c, _: (c @ w[:, :5], None), x, None, length=3)[0]

    assert jaxpr_flops(jax.make_jaxpr(looped)(x, w).jaxpr) == 3 * 2 * 4 * 5 * 5
    assert jaxpr_flops(jax.make_jaxpr(jax.vmap(lambda x: x @ w))(jnp.ones((7, 4, 5))).jaxpr) == 7 * 2 * 4 * 5 * 6


def test_flops_inside_shard_map_count_every_device():
    """Under the cores-as-devices plan the step is a shard_map whose body is one device's share."""
    from jax.sharding import AbstractMesh
    from jax.sharding import PartitionSpec as P

    w = jnp.ones((5, 6))
    sharded = jax.shard_map(lambda x: x @ w, mesh=AbstractMesh((2,), ("tasks",)), in_specs=P(), out_specs=P())
    assert jaxpr_flops(jax.make_jaxpr(sharded)(jnp.ones((8, 5))).jaxpr) == 2 * (2 * 8 * 5 * 6)  # on each of 2


def test_loop_timing_keeps_only_the_windows_between_compilation_and_validation():
    from scripts.bench_throughput import window_rates

    rows = [
        {"step": 10, "elapsed_s": 30.0},  # compilation
        {"step": 20, "elapsed_s": 32.0},
        {"step": 30, "elapsed_s": 36.0},
        {"step": 40, "elapsed_s": 50.0},
    ]  # validation and checkpoint at the end
    assert window_rates(rows, meta_batch=32) == [10 * 32 / 2.0, 10 * 32 / 4.0]


def test_round_robin_times_each_step_after_an_untimed_call_of_its_own(monkeypatch):
    """A line must not pay for the one before it (issue 13: the 5-way step after the 20-way one)."""
    import bench_throughput

    clock, calls = [0.0], []

    def step(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds

        return run

    monkeypatch.setattr(bench_throughput.time, "perf_counter", lambda: clock[0])
    times = round_robin([step("a", 1.0), step("b", 2.0)], rounds=2)
    assert calls == ["a", "a", "b", "b", "a", "a", "b", "b"]
    assert times == [[1.0, 1.0], [2.0, 2.0]]  # only the second call of each pair is timed


def test_interleaved_reports_every_line_against_the_first():
    rows = interleaved(["sinusoid_tiny train.meta_batch_size=2", "sinusoid_tiny train.meta_batch_size=4"], rounds=2)
    assert [r["preset"] for r in rows] == [
        "sinusoid_tiny train.meta_batch_size=2",
        "sinusoid_tiny train.meta_batch_size=4",
    ]
    assert rows[0]["step_time_vs_first"] == 1.0 and all(r["rounds"] == 2 and r["step_ms_median"] > 0 for r in rows)


def test_flops_of_a_convolution():
    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x,
        k,
        (1, 1),
        "SAME",  # noqa: E731
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    assert jaxpr_flops(jax.make_jaxpr(conv)(x, k).jaxpr) == 2 * (2 * 8 * 8 * 4) * (3 * 3 * 3)


def test_step_flops_count_every_inner_step():
    from maml_cli.engine.experiment import build_experiment
    from scripts.bench_throughput import compose_preset

    counts = []
    for steps in (1, 2, 3):
        cfg = compose_preset("sinusoid_tiny", f"algorithm.inner_steps={steps}")
        exp = build_experiment(cfg)
        counts.append(step_flops(exp, exp.init_state()))
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] - counts[1] == pytest.approx(counts[1] - counts[0])  # each inner step costs the same


@pytest.mark.parametrize(
    "name,kind",
    [
        ("ynn_fusion.12", "matmul"),
        ("dot.3", "matmul"),
        ("wrapped_broadcast.22", "fill"),
        ("bitcast_dynamic-update-slice_fusion.68", "loop stacking"),
        ("slice_select_fusion.3", "data movement"),
        ("copy_bitcast_fusion", "data movement"),
        ("multiply_add_fusion.1", "elementwise/reduce"),
    ],
)
def test_op_categories(name, kind):
    assert op_category(name) == kind


def test_profile_accounts_for_the_step():
    result = profile_preset("sinusoid_tiny", [], calls=2)
    assert result["op_ms_total"] > 0 and "matmul" in result["by_kind_ms"]
    assert sum(result["by_kind_share"].values()) == pytest.approx(1.0, abs=0.01)
