"""Throughput of the real jitted outer step, one JSON line per preset (and per algorithm).

    python scripts/bench_throughput.py                       # every line below, prints JSON lines
    python scripts/bench_throughput.py --presets omniglot_5w1s --write-docs
    python scripts/bench_throughput.py --presets "omniglot_5w1s algorithm=anil"   # a preset + overrides
    python scripts/bench_throughput.py --memory               # peak memory vs inner steps, +- remat
    python scripts/bench_throughput.py --presets omniglot_5w1s --devices 1 2 4   # the meta-batch over N devices

Each preset runs in its own process (clean memory and compile figures), with the execution plan
maml-train would pick: on CPU, one JAX device per core and a convolutional meta-batch spread over
them (``maml_cli/backend/plan.py``; ``MAML_CLI_CPU_DEVICES=1`` for one device). Per preset:
``tasks_per_s`` (meta_batch_size / median step time), ``gflops_per_s`` (the step's matmul and
convolution FLOPs / median time; counted on the step's jaxpr with every loop multiplied out, because
XLA's cost analysis, reported as ``xla_cost_analysis_gflop``, counts a loop body once: the inner
``lax.scan`` and a ``lax.map`` over tasks would be undercounted), ``ceiling_gflops_per_s`` (a 2048^3
f32 matmul timed in the same process), ``compile_s`` (lowering + compiling the step, persistent cache off),
``peak_rss_mb``, ``step_ms_median``, ``outside_step_share`` (the share of the training loop's
wall time spent outside the jitted step: 1 - loop rate / pure step rate, measured with the real
``train_and_evaluate``; measured for the plain presets, not the algorithm lines, since it is a
property of the loop), backend and device. A line names a preset and optional overrides; the
default lines are the presets below and then every algorithm of the family on ``omniglot_5w1s``
with its paper settings (``experiment=omniglot_5w1s algorithm=X``), MAML++ with and without its
multi-step loss. The phase timed is the one at step 0. Omniglot presets use ../shared/data/omniglot when it
is there, else random images of the same shape; MiniImageNet presets a synthetic set (20 images
per class, scripts/make_synthetic_miniimagenet.py), which costs the same per step as the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Figures without the persistent compilation cache, which maml_cli.train (like maml-train) turns on:
# writing it raised omniglot_5w1s's peak RSS from 1349 to 2216 MB here (2026-12-06), which would
# hide the step's own memory. MAML_CLI_COMPILE_CACHE=DIR measures with it.
os.environ.setdefault("MAML_CLI_COMPILE_CACHE", "off")
sys.path.insert(0, str(REPO / "scripts"))
PRESETS = ["sinusoid_paper", "omniglot_5w1s", "omniglot_20w1s", "miniimagenet_5w1s"]
ALGORITHM_LINES = [f"omniglot_5w1s algorithm={name}" for name in ("fomaml", "anil", "metasgd", "mamlpp", "reptile")] + [
    "omniglot_5w1s algorithm=mamlpp algorithm.multi_step_loss=false"
]
LINES = PRESETS + ALGORITHM_LINES
OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"


def compose_preset(preset: str, *overrides: str):
    """The preset's config, composed and checked as maml-train does (``maml_cli.compose``)."""
    import maml_cli as mc

    extra = []
    if preset.startswith("omniglot"):
        from maml_cli.data.fakes import synthetic_omniglot

        src = (
            OMNIGLOT if (OMNIGLOT / "images_background.npz").is_file() else synthetic_omniglot(Path(tempfile.mkdtemp()))
        )
        extra = [f"dataset.path={src}"]
    if preset.startswith("miniimagenet"):  # no real images here: a synthetic set in the real layout
        from maml_cli.data.fakes import synthetic_miniimagenet

        extra = [f"dataset.path={synthetic_miniimagenet(Path(tempfile.mkdtemp()), 'images', images_per_class=20)}"]
    return mc.compose(preset, [*extra, *overrides])


def median_seconds(fn, *args, repeats: int = 5) -> float:
    """Median wall time of ``fn(*args)`` (a jitted function), after one warm-up call."""
    import jax
    import numpy as np

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def _ceiling_gflops() -> float:
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    return 2 * n**3 / median_seconds(jax.jit(lambda x: x @ x), a) / 1e9


def jaxpr_flops(jaxpr) -> float:
    """FLOPs (2 per multiply-add) of the dot_generals and convolutions in ``jaxpr``, loops unrolled."""
    import math

    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * eqn.outvars[0].aval.size * math.prod(lhs[d] for d in contract)
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * eqn.outvars[0].aval.size * math.prod(rhs) / out_features
        elif name == "while":
            raise ValueError("a while loop with an unknown trip count: cannot count its FLOPs")
        # A scan runs its body ``length`` times; a shard_map's body is one device's share of the tasks.
        times = eqn.params["length"] if name == "scan" else eqn.params["mesh"].size if name == "shard_map" else 1
        subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
        subs += [b for v in eqn.params.values() if isinstance(v, tuple) for b in v if hasattr(b, "jaxpr")]
        counts = [jaxpr_flops(getattr(sub, "jaxpr", sub)) for sub in subs]
        if counts:
            total += times * (max(counts) if name == "cond" else sum(counts))
    return total


def step_flops(exp, state) -> float:
    """Matmul/convolution FLOPs of one outer step: the useful work, counted on the plain form of the
    step (vmap over tasks, no rematerialisation) so that every execution plan is credited the same."""
    import dataclasses

    import jax

    from maml_cli.backend.plan import Execution
    from maml_cli.meta.algorithms import build_algorithm

    execution = Execution("vmap", False, exp.execution.conv_impl)
    algorithm = build_algorithm(exp.cfg.algorithm, exp.algorithm.task_loss, execution, exp.cfg.train)
    multi = dataclasses.replace(
        exp, algorithm=algorithm, plan=dataclasses.replace(exp.plan, execution=execution)
    ).multi_step()
    phase = exp.phase_at(0)
    return jaxpr_flops(jax.make_jaxpr(lambda s, d: multi(s, d, 1, phase))(state, exp.sampler.data).jaxpr)


def xla_cost_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", 0.0))


def bench_one(line: str, measure_steps: int) -> dict:
    import jax
    import numpy as np

    from maml_cli.engine.experiment import build_experiment

    preset, *overrides = line.split()
    cfg = compose_preset(preset, *overrides)
    t = cfg.train
    exp = build_experiment(cfg)
    state = exp.place(exp.init_state())
    data = exp.data
    multi = exp.multi_step()
    tic = time.perf_counter()
    compiled = multi.lower(state, data, 1, exp.phase_at(0)).compile()
    compile_s = time.perf_counter() - tic
    flops = step_flops(exp, state)
    counted_by_xla = xla_cost_flops(compiled)
    for _ in range(3):  # warm-up
        state, _ = compiled(state, data)
    jax.block_until_ready(state)
    times = []
    for _ in range(measure_steps):
        tic = time.perf_counter()
        state, _ = compiled(state, data)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - tic)
    step_s = float(np.median(times))

    outside = None
    if not overrides:  # the real loop, for the share of time spent outside the step
        loop_steps = max(4, t.steps_per_call) * 4
        with tempfile.TemporaryDirectory() as run_dir:
            loop_cfg = compose_preset(
                preset,
                f"train.steps={loop_steps}",
                f"train.log_every={loop_steps // 4}",
                f"train.steps_per_call={loop_steps // 4}",
                f"train.eval_every={loop_steps}",
                f"train.checkpoint_every={loop_steps}",
                "train.progress=false",
                "train.plots=false",
                "eval.val_episodes=1",
                "eval.batch_size=1",
            )
            import maml_cli as mc

            rows = mc.train(loop_cfg, run_dir=run_dir).metrics
        # Wall time between records, so everything the loop does counts (steps/s: meta-batch 1).
        loop_rate = float(np.median(window_rates(rows, meta_batch=1)))
        outside = round(max(0.0, 1 - loop_rate * step_s), 4)
    ceiling = _ceiling_gflops()
    gflops = flops / step_s / 1e9
    return {
        "preset": line,
        "algorithm": cfg.algorithm.name,
        "tasks_per_s": round(t.meta_batch_size / step_s, 2),
        "gflops_per_s": round(gflops, 2),
        "ceiling_gflops_per_s": round(ceiling, 2),
        "gflop_per_step": round(flops / 1e9, 3),
        "xla_cost_analysis_gflop": round(counted_by_xla / 1e9, 3),
        "fraction_of_ceiling": round(gflops / ceiling, 3),
        "compile_s": round(compile_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "step_ms_median": round(step_s * 1e3, 3),
        "outside_step_share": outside,
        "meta_batch_size": int(t.meta_batch_size),
        "inner_steps": int(cfg.algorithm.inner_steps),
        "task_batching": exp.execution.task_batching,
        "remat": exp.execution.remat,
        "conv_impl": exp.execution.conv_impl,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "devices": 1 if exp.mesh is None else exp.mesh.size,
        "jax": jax.__version__,
    }


def window_rates(rows: list, meta_batch: int) -> list:
    """Tasks/s between consecutive records of a run's metrics.jsonl (wall clock, ``elapsed_s``). The
    first record's window holds the compilation and the last one the end-of-run validation and
    checkpoint: only the windows between them are kept."""
    return [(b["step"] - a["step"]) * meta_batch / (b["elapsed_s"] - a["elapsed_s"]) for a, b in zip(rows, rows[1:])][
        :-1
    ]


def interleaved(lines: list, rounds: int) -> list:
    """Every line's compiled step in one process, timed round-robin (one call of each line per
    round, ``rounds`` rounds): slow drifts of a shared machine hit every line alike, so the ratio of
    the medians holds where separate runs minutes apart disagree by tens of percent. Each timed call
    follows an untimed one of the same program (``round_robin``): without it a line paid for the
    one before it (after the 20-way step the 5-way step took 1.28x its time after itself)."""
    import jax
    import numpy as np

    from maml_cli.engine.experiment import build_experiment

    programs = []
    for line in lines:
        preset, *overrides = line.split()
        cfg = compose_preset(preset, *overrides)
        exp = build_experiment(cfg)
        state = exp.place(exp.init_state())
        compiled = exp.multi_step().lower(state, exp.data, 1, exp.phase_at(0)).compile()
        for _ in range(2):  # warm-up
            state, _ = compiled(state, exp.data)
        programs.append([line, cfg, compiled, jax.block_until_ready(state), exp.data, [], exp.plan.describe()])

    def step_of(program):
        def step():
            program[3], _ = program[2](program[3], program[4])
            jax.block_until_ready(program[3])

        return step

    for program, times in zip(programs, round_robin([step_of(p) for p in programs], rounds)):
        program[5].extend(times)
    first = float(np.median(programs[0][5]))
    return [
        {
            "preset": line,
            "algorithm": cfg.algorithm.name,
            "meta_batch_size": int(cfg.train.meta_batch_size),
            "step_ms_median": round(1e3 * float(np.median(times)), 1),
            "step_ms_quartiles": [round(1e3 * float(q), 1) for q in np.percentile(times, [25, 75])],
            "tasks_per_s": round(cfg.train.meta_batch_size / float(np.median(times)), 2),
            "step_time_vs_first": round(float(np.median(times)) / first, 3),
            "rounds": rounds,
            "devices": devices,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
        }
        for line, cfg, _, _, _, times, devices in programs
    ]


def round_robin(steps: list, rounds: int) -> list:
    """Seconds of each of ``steps`` (callables that run one step and wait for it), called in turn
    ``rounds`` times. Each timed call follows an untimed call of the same step, so that the caches
    hold that step's data, as in training."""
    times = [[] for _ in steps]
    for _ in range(rounds):
        for step, seconds in zip(steps, times):
            step()
            tic = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - tic)
    return times


def memory_one(preset: str, inner_steps: int, remat: bool) -> dict:
    """XLA's planned temporary memory for the compiled step (the peak the step needs)."""
    from maml_cli.engine.experiment import build_experiment

    cfg = compose_preset(preset, f"algorithm.inner_steps={inner_steps}", f"train.remat={str(remat).lower()}")
    exp = build_experiment(cfg)
    state = exp.init_state()
    compiled = exp.multi_step().lower(state, exp.sampler.data, 1, exp.phase_at(0)).compile()
    mem = compiled.memory_analysis()
    return {
        "preset": preset,
        "inner_steps": inner_steps,
        "remat": remat,
        "task_batching": exp.execution.task_batching,
        "temp_mb": round(mem.temp_size_in_bytes / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _child(args: list, devices: int = 0) -> dict:
    env = dict(os.environ, MAML_CLI_COMPILE_CACHE="off")
    if devices:  # on CPU, that many simulated devices (XLA must hear it before JAX starts)
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--presets",
        nargs="+",
        default=LINES,
        help="lines to time: a preset, optionally followed by overrides in the same argument",
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per preset")
    ap.add_argument("--memory", action="store_true", help="peak memory against inner steps, with and without remat")
    ap.add_argument("--memory-preset", default="omniglot_20w1s")
    ap.add_argument("--write-docs", action="store_true", help="write the figures into docs/performance.md")
    ap.add_argument("--section", help="the docs/performance.md section to write (default: from the lines)")
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="time the lines side by side in one process, round-robin (for ratios between lines)",
    )
    ap.add_argument(
        "--devices",
        type=int,
        nargs="+",
        help="time each line with train.devices=N for each N; on CPU, N simulated devices of the same "
        "cores (this shows the sharding's overhead, not a speed-up)",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)
    if args.child:
        from maml_cli.backend.processes import use_cores_as_devices

        use_cores_as_devices()  # as maml-train does: on CPU, one device per core (unless --devices forced them)
        kind, preset, *rest = args.child
        if kind == "interleave":
            print(json.dumps(interleaved(json.loads(preset), int(rest[0]))))
            return
        result = (
            bench_one(preset, int(rest[0])) if kind == "bench" else memory_one(preset, int(rest[0]), rest[1] == "1")
        )
        print(json.dumps(result))
        return
    if args.interleave:
        results = _child(["--child", "interleave", json.dumps(args.presets), str(args.steps)])
        for r in results:
            print(json.dumps(r), flush=True)
        if args.write_docs:
            _write_interleaved_docs(results, shlex.join(sys.argv[1:]), args.section or "throughput-interleaved")
        return

    if args.devices:
        results = []
        for preset in args.presets:
            for n in args.devices:
                results.append(_child(["--child", "bench", f"{preset} train.devices={n}", str(args.steps)], devices=n))
                print(json.dumps(results[-1]), flush=True)
        if args.write_docs:
            _write_devices_docs(results, shlex.join(sys.argv[1:]), args.section or "devices-simulated-cpu")
        return

    results, memory = [], []
    for preset in args.presets:
        results.append(_child(["--child", "bench", preset, str(args.steps)]))
        print(json.dumps(results[-1]), flush=True)
    if args.memory:
        for steps in (1, 5, 10, 25):
            for remat in (False, True):
                memory.append(_child(["--child", "memory", args.memory_preset, str(steps), "1" if remat else "0"]))
                print(json.dumps(memory[-1]), flush=True)
    if args.write_docs:
        section = args.section or (
            "throughput"
            if args.presets == LINES
            else "throughput-" + "-".join(line.split()[0] for line in args.presets)
        )
        _write_docs(results, memory, shlex.join(sys.argv[1:]), section)


def _write_interleaved_docs(results: list, argv: str, section: str) -> None:
    from _report import machine, replace_section, today

    lines = [
        f"Measured {today()} on {machine()} with `python scripts/bench_throughput.py {argv}`: every line's "
        f"compiled outer step in one process, called round-robin {results[0]['rounds']} times (each timed "
        "call after an untimed one of the same line), so that the machine's drift hits all alike; median "
        "step time, its interquartile range, and the ratio to the first line's median.",
        "",
        "| line | algorithm | meta-batch | devices | step (ms), median [IQR] | tasks/s | step time / first line's |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q = r["step_ms_quartiles"]
        lines.append(
            f"| `{r['preset']}` | {r['algorithm']} | {r['meta_batch_size']} | {r.get('devices', '1 device')} | "
            f"{r['step_ms_median']} [{q[0]}-{q[1]}] | {r['tasks_per_s']} | {r['step_time_vs_first']:.2f} |"
        )
    lines += ["", "Raw output:", "", "```", *[json.dumps(r) for r in results], "```"]
    replace_section(REPO / "docs" / "performance.md", section, "\n".join(lines))


def _write_devices_docs(results: list, argv: str, section: str) -> None:
    from _report import machine, replace_section, today

    lines = [
        f"Measured {today()} on {machine()} with `python scripts/bench_throughput.py {argv}`: the meta-batch "
        "split over N devices (`train.devices=N`); on CPU these are simulated devices "
        "(`--xla_force_host_platform_device_count`) sharing the same 2 cores. Each simulated device runs "
        "its share on its own thread: a convolutional step that one device runs mostly on one core then uses "
        "both (a CPU-only gain, not a multi-device one), while a tiny step only pays for the collectives. "
        "Real devices: see the GPU section when one was lent.",
        "",
        "| line | devices | tasks/s | step (ms) | step time / 1 device's | compile (s) |",
        "|---|---|---|---|---|---|",
    ]
    base = {}
    for r in results:
        line = r["preset"].rsplit(" train.devices=", 1)[0]
        base.setdefault(line, r["step_ms_median"])
        lines.append(
            f"| `{line}` | {r['devices']} | {r['tasks_per_s']} | {r['step_ms_median']} | "
            f"{r['step_ms_median'] / base[line]:.2f} | {r['compile_s']} |"
        )
    lines += ["", "Raw output:", "", "```", *[json.dumps(r) for r in results], "```"]
    replace_section(REPO / "docs" / "performance.md", section, "\n".join(lines))


def _share(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _execution(r: dict) -> str:
    parts = [r["task_batching"], "remat" if r["remat"] else "no remat", r["conv_impl"]]
    return ", ".join(p for p in parts if p)


def _write_docs(results: list, memory: list, argv: str, section: str) -> None:
    from _report import machine, replace_section, today

    lines = [
        f"Measured {today()} on {machine()} with `python scripts/bench_throughput.py {argv}`.",
        "",
        "| preset | tasks/s | step (ms) | GFLOP/s | matmul ceiling (GFLOP/s) | fraction | compile (s) "
        "| peak RSS (MB) | outside the step | execution |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['preset']} | {r['tasks_per_s']} | {r['step_ms_median']} | {r['gflops_per_s']} | "
            f"{r['ceiling_gflops_per_s']} | {r['fraction_of_ceiling']:.0%} | {r['compile_s']} | "
            f"{r['peak_rss_mb']} | {_share(r['outside_step_share'])} | {_execution(r)} |"
        )
    lines += ["", "Raw output:", "", "```", *[json.dumps(r) for r in results], "```"]
    if memory:
        lines += [
            "",
            f"Peak temporary memory of the compiled step ({memory[0]['preset']}, "
            f"task_batching={memory[0]['task_batching']}, XLA's memory analysis) "
            "against inner steps:",
            "",
            "| inner steps | without remat (MB) | with remat (MB) |",
            "|---|---|---|",
        ]
        by = {(m["inner_steps"], m["remat"]): m["temp_mb"] for m in memory}
        for steps in sorted({m["inner_steps"] for m in memory}):
            lines.append(f"| {steps} | {by.get((steps, False))} | {by.get((steps, True))} |")
    replace_section(REPO / "docs" / "performance.md", section, "\n".join(lines))


if __name__ == "__main__":
    main()
