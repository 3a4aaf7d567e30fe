"""Where the time of one outer step goes, and how fast this machine moves memory.

    python scripts/profile_step.py                                   # omniglot_20w1s, auto plan
    python scripts/profile_step.py --presets omniglot_5w1s omniglot_20w1s --write-docs
    python scripts/profile_step.py --set train.task_batching=vmap train.remat=false   # compare a plan

Traces a few calls of the real jitted outer step with ``jax.profiler`` and sums the time of each
XLA operation (the profiler's own per-op events on CPU), grouped by kind: matrix multiplies,
data movement (im2col slices, pads, copies, transposes, concatenations), loop stacking (the
buffers ``lax.scan`` fills with per-iteration values and reads back), fills (broadcasts) and the
remaining elementwise ops and reductions. Then times one elementwise op (``x * 2 + 1``) over f32
arrays from 2 MB to 128 MB: the GB/s it reaches in cache and beyond it. One JSON line per preset,
then one for the bandwidth. The step is traced on one device: under maml-train's CPU plan each core
runs this program on its share of the tasks (``maml_cli/backend/plan.py``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

CONTAINERS = {"while", "call", "conditional"}  # ops whose events enclose other ops' events


def op_category(name: str) -> str:
    base = name.split(".")[0]
    if base.startswith("ynn_fusion") or "dot" in base or "convolution" in base:
        return "matmul"
    if "dynamic-update-slice" in base or "dynamic-slice" in base:
        return "loop stacking"
    if base.startswith(("wrapped_broadcast", "broadcast")) and base.count("_") <= 1:
        return "fill"
    if any(k in base for k in ("slice", "pad", "copy", "transpose", "concatenate", "gather")):
        return "data movement"
    return "elementwise/reduce"


def _hlo_ops(hlo_text: str) -> dict:
    """instruction name -> opcode, from the compiled module's text."""
    ops = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+(?: \S+)*? ([\w\-]+)\(", hlo_text, re.M):
        ops[m.group(1)] = m.group(2)
    return ops


def profile_preset(preset: str, overrides: list, calls: int) -> dict:
    import jax
    from bench_throughput import compose_preset

    from maml_cli.engine.experiment import build_experiment

    cfg = compose_preset(preset, *overrides)
    exp = build_experiment(cfg)
    state = exp.init_state()
    compiled = exp.multi_step().lower(state, exp.sampler.data, 1, exp.phase_at(0)).compile()
    ops = _hlo_ops(compiled.as_text())
    for _ in range(3):
        state, _ = compiled(state, exp.sampler.data)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as trace_dir:
        tic = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(calls):
                state, _ = compiled(state, exp.sampler.data)
            jax.block_until_ready(state)
        wall = (time.perf_counter() - tic) / calls
        with gzip.open(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]) as trace:
            events = json.load(trace)["traceEvents"]
    per_op = collections.defaultdict(float)
    for e in events:
        if "dur" in e and e["name"] in ops and ops[e["name"]] not in CONTAINERS:
            per_op[e["name"]] += e["dur"] / 1e3 / calls  # ms per step
    by_kind = collections.defaultdict(float)
    for name, ms in per_op.items():
        by_kind[op_category(name)] += ms
    total = sum(per_op.values())
    return {
        "preset": preset,
        "overrides": overrides,
        "execution": exp.execution.describe(),
        "step_ms_traced": round(wall * 1e3, 1),
        "op_ms_total": round(total, 1),
        "by_kind_ms": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "by_kind_share": {k: round(v / total, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_ops_ms": {k: round(v, 2) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:8]},
    }


def bandwidth() -> dict:
    """GB/s (bytes read + written) of ``x * 2 + 1`` on f32 arrays of growing size."""
    import jax
    import jax.numpy as jnp
    from bench_throughput import median_seconds

    op = jax.jit(lambda x: x * 2 + 1)
    out = {
        f"{mb}MB": round(
            2 * mb * 2**20 / median_seconds(op, jnp.ones((mb * 2**20 // 4,), jnp.float32), repeats=20) / 1e9, 1
        )
        for mb in (2, 8, 16, 32, 64, 128)
    }
    return {"elementwise_gb_per_s": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["omniglot_20w1s"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every preset")
    ap.add_argument("--calls", type=int, default=3, help="traced calls of the outer step")
    ap.add_argument("--write-docs", action="store_true", help="write the figures into docs/performance.md")
    args = ap.parse_args()

    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)
    results = []
    for preset in args.presets:
        results.append(profile_preset(preset, args.set, args.calls))
        print(json.dumps(results[-1]), flush=True)
    results.append(bandwidth())
    print(json.dumps(results[-1]), flush=True)
    if args.write_docs:
        _write_docs(results, " ".join(sys.argv[1:]))


def _write_docs(results: list, argv: str) -> None:
    from _report import machine, replace_section, today

    *profiles, bw = results
    kinds = ["matmul", "data movement", "elementwise/reduce", "loop stacking", "fill"]
    lines = [
        f"Measured {today()} on {machine()} with `python scripts/profile_step.py {argv}`.",
        "",
        "Milliseconds per outer step in each kind of XLA operation (share of the summed op time):",
        "",
        "| preset | execution | summed op time (ms) | wall while traced (ms) | " + " | ".join(kinds) + " |",
        "|---|---|---|---|" + "---|" * len(kinds),
    ]
    for p in profiles:
        cells = [f"{p['by_kind_ms'].get(k, 0.0)} ({p['by_kind_share'].get(k, 0.0):.0%})" for k in kinds]
        lines.append(
            f"| {p['preset']} | {p['execution']} | {p['op_ms_total']} | {p['step_ms_traced']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Tracing adds a cost per operation: a program of many small ops (`map`, one task at a time) "
        "runs slower while traced than `scripts/bench_throughput.py` times it, so read the shares, "
        "not the absolute times.",
    ]
    lines += [
        "",
        "Elementwise `x * 2 + 1` on one f32 array, GB/s (read + written):",
        "",
        "| " + " | ".join(bw["elementwise_gb_per_s"]) + " |",
        "|" + "---|" * len(bw["elementwise_gb_per_s"]),
        "| " + " | ".join(str(v) for v in bw["elementwise_gb_per_s"].values()) + " |",
        "",
        "Raw output:",
        "",
        "```",
        *[json.dumps(r) for r in results],
        "```",
    ]
    section = "profile-" + "-".join(sorted({p["preset"] for p in profiles}))
    if profiles and profiles[0]["overrides"]:
        section += "-" + "-".join(re.sub(r"[^\w]+", "_", o) for o in profiles[0]["overrides"])
    replace_section(REPO / "docs" / "performance.md", section, "\n".join(lines))


if __name__ == "__main__":
    main()
