"""maml-cli against learn2learn on the same machine in one sitting, interleaved.

    python scripts/bench_vs_peer.py --peer-python /tmp/l2l/bin/python
    python scripts/bench_vs_peer.py --peer-python /tmp/l2l/bin/python --rounds 3 --write-docs

This machine's speed drifts by tens of percent within an hour, so a ratio holds only between runs
taken side by side: for each round and workload, maml-cli then learn2learn, alternating. Each
measurement is its own process, started cold.

- maml-cli: the real ``maml-train experiment=WORKLOAD`` on ../shared/data/omniglot, or for the
  MiniImageNet workloads on a synthetic MiniImageNet in the real layout (20 JPEGs per class,
  scripts/make_synthetic_miniimagenet.py: the cost of a step does not depend on the pixels), as a
  user runs it (default execution plan), a short run logged every few steps; tasks/s is the median over the
  logging windows of (steps x meta-batch) / wall time, leaving out the first window (compilation)
  and the last (end-of-run validation and checkpoint); everything else the loop does is in.
- learn2learn: ``../shared/peers/l2l_speed.py`` (its own MAML and OmniglotCNN, second order, tasks
  looped in Python, episodes built outside the timed region, the first iteration left out), run
  with the peer's Python. Make that virtualenv outside the project; learn2learn also needs scipy:
  ``python3 -m venv /tmp/l2l && /tmp/l2l/bin/pip install torch==2.13.0 numpy pillow scipy``.
  The peer is never a dependency of maml-cli or its tests. For MiniImageNet the peer times its
  MiniImageNet CNN4 (32 filters, max-pool) on random 84x84x3 images (``l2l_speed.py miniimagenet``).
- Peak memory, both sides: the peak resident set (``ru_maxrss``) of each measured process, read
  with ``os.wait4``: everything each process held at its worst, the Python runtime, the framework,
  the compiler (ours compiles the step in-process) and the data included. maml-cli's process is the
  whole maml-train run, its end-of-run validation and checkpoint included.

Prints one JSON line per measurement, then one per workload with the medians and their ratio;
``--write-docs`` puts the table into docs/performance.md (section ``vs-peer``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_throughput import window_rates  # noqa: E402

SHARED = REPO.parent / "shared"
OMNIGLOT = SHARED / "data" / "omniglot"
PEER_SCRIPT = SHARED / "peers" / "l2l_speed.py"

# workload -> (ways, shots, meta-batch, inner steps: the preset's, for the peer), the steps our
# run logs at, the windows it times, and the peer's iterations; each side takes about 20-40 s.
# "experiment" and "set": the preset and overrides of our run (default: the workload's name, none).
WORKLOADS = {
    "omniglot_5w1s": {"peer": (5, 1, 32, 1), "log_every": 10, "windows": 6, "peer_iters": 20},
    "omniglot_20w1s": {"peer": (20, 1, 16, 5), "log_every": 2, "windows": 6, "peer_iters": 8},
    "miniimagenet_5w1s": {"peer": (5, 1, 4, 5), "log_every": 1, "windows": 6, "peer_iters": 7},
    "miniimagenet_5w5s": {"peer": (5, 5, 2, 5), "log_every": 2, "windows": 6, "peer_iters": 10},
    # Memory: MiniImageNet 5w5s with 10 inner steps, second order, must fit where the peer's does.
    "miniimagenet_5w5s_10steps": {
        "experiment": "miniimagenet_5w5s",
        "set": ["algorithm.inner_steps=10"],
        "peer": (5, 5, 2, 10),
        "log_every": 1,
        "windows": 4,
        "peer_iters": 6,
    },
}
MINIIMAGENET = ("miniimagenet_5w1s", "miniimagenet_5w5s", "miniimagenet_5w5s_10steps")
# Ratio of medians (issue 23), and whether our peak memory must stay at or under the peer's.
TARGETS = {
    "omniglot_5w1s": 3.4,
    "omniglot_20w1s": 2.5,
    "miniimagenet_5w1s": 3.0,
    "miniimagenet_5w5s": 3.0,
    "miniimagenet_5w5s_10steps": None,
}
MEMORY_TARGETS = set(MINIIMAGENET)


def run_measured(cmd: list) -> tuple:
    """Run ``cmd`` to its end: (stdout, stderr, exit code, its peak RSS in MB from ``os.wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), proc.returncode, round(usage.ru_maxrss / 1024)


def synthetic_miniimagenet() -> Path:
    from maml_cli.data.fakes import synthetic_miniimagenet

    return synthetic_miniimagenet(Path(tempfile.mkdtemp(prefix="bench-miniimagenet-")), "images", images_per_class=20)


def ours(workload: str, data: Path, extra: list, python: str) -> dict:
    w = WORKLOADS[workload]
    every = w["log_every"]
    extra = [*w.get("set", []), *extra]
    steps = every * (w["windows"] + 2)
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [
            str(Path(python).with_name("maml-train")),
            f"experiment={w.get('experiment', workload)}",
            f"dataset.path={data}",
            f"train.steps={steps}",
            f"train.log_every={every}",
            f"train.steps_per_call={every}",
            f"train.eval_every={steps}",
            f"train.checkpoint_every={steps}",
            "train.progress=false",
            "train.plots=false",
            "eval.val_episodes=1",
            "eval.batch_size=1",
            f"hydra.run.dir={run_dir}",
            *extra,
        ]
        _, stderr, code, peak_mb = run_measured(cmd)
        if code != 0:
            raise SystemExit(f"maml-train failed ({shlex.join(cmd)}):\n{stderr[-3000:]}")
        rows = [json.loads(r) for r in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        env = json.loads((Path(run_dir) / "environment.json").read_text())["sessions"][-1]
        plan = next(
            (
                line.split(" - ", 1)[1]
                for line in (Path(run_dir) / "train.log").read_text().splitlines()
                if " on " in line and "task_batching=" in line
            ),
            "",
        )
    rates = window_rates(rows, meta_batch=w["peer"][2])
    return {
        "tool": "maml-cli",
        "workload": workload,
        "tasks_per_s": round(statistics.median(rates), 2),
        "windows": [round(r, 1) for r in rates],
        "jax": env["versions"]["jax"],
        "python": env["python"],
        "devices": len(env["devices"]),
        "peak_rss_mb": peak_mb,
        "plan": plan.split("; data:")[0],
        "overrides": extra,
    }


def peer(workload: str, python: str, data: Path) -> dict:
    w = WORKLOADS[workload]
    source = "miniimagenet" if workload in MINIIMAGENET else str(data)
    cmd = [python, str(PEER_SCRIPT), source, *map(str, w["peer"]), str(w["peer_iters"])]
    stdout, stderr, code, peak_mb = run_measured(cmd)
    if code != 0:
        raise SystemExit(f"the peer failed ({shlex.join(cmd)}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"tool": result.pop("peer"), "workload": workload, **result, "peak_rss_mb": peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", required=True, help="the Python of learn2learn's virtualenv (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (maml-cli, learn2learn) per workload")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--data", type=Path, default=OMNIGLOT, help="the Omniglot folder (images_*.npz)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra maml-train overrides for our side (the default plan when none)",
    )
    ap.add_argument(
        "--ours-python",
        nargs="+",
        default=[sys.executable],
        metavar="PYTHON",
        help="the Python of each maml-cli install to time (another JAX, say; maml-train beside it); "
        "the ratio is the first one's, the others are extra columns",
    )
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/performance.md")
    ap.add_argument("--section", default="vs-peer")
    args = ap.parse_args()
    if not (args.data / "images_background.npz").is_file():
        raise SystemExit(f"no Omniglot arrays in {args.data} (see ../shared/data/README.md), or pass --data DIR")
    if not PEER_SCRIPT.is_file():
        raise SystemExit(f"the peer's script is missing: {PEER_SCRIPT} (see ../shared/peers/README.md)")
    if not Path(args.peer_python).is_file():
        raise SystemExit(
            f"--peer-python {args.peer_python}: no such file; make the peer's virtualenv first:\n"
            "  python3 -m venv /tmp/l2l && /tmp/l2l/bin/pip install torch==2.13.0 numpy pillow scipy"
        )

    mini = synthetic_miniimagenet() if set(args.workloads) & set(MINIIMAGENET) else None
    results = []
    for round_ in range(1, args.rounds + 1):
        for workload in args.workloads:
            data = mini if workload in MINIIMAGENET else args.data
            measures = [
                lambda py=py, workload=workload, data=data: ours(workload, data, args.set, py)
                for py in args.ours_python
            ]
            for measure in [*measures, lambda workload=workload: peer(workload, args.peer_python, args.data)]:
                results.append({"round": round_, **measure()})
                print(json.dumps(results[-1]), flush=True)
    summary = []
    for workload in args.workloads:
        theirs = [r["tasks_per_s"] for r in results if r["workload"] == workload and r["tool"] != "maml-cli"]
        for i, install in enumerate(_installs(results)):
            mine = [
                r["tasks_per_s"]
                for r in results
                if r["workload"] == workload and r["tool"] == "maml-cli" and _install(r) == install
            ]
            ratio = statistics.median(mine) / statistics.median(theirs)
            ours_rows = [r for r in results if r["workload"] == workload and r["tool"] == "maml-cli"]
            memory = {
                "maml_cli": statistics.median(r["peak_rss_mb"] for r in ours_rows if _install(r) == install),
                "learn2learn": statistics.median(
                    r["peak_rss_mb"] for r in results if r["workload"] == workload and r["tool"] != "maml-cli"
                ),
            }
            summary.append(
                {
                    "workload": workload,
                    "maml_cli": mine,
                    "install": install,
                    "learn2learn": theirs,
                    "maml_cli_median": statistics.median(mine),
                    "learn2learn_median": statistics.median(theirs),
                    "ratio_of_medians": round(ratio, 2),
                    "maml_cli_peak_rss_mb": memory["maml_cli"],
                    "learn2learn_peak_rss_mb": memory["learn2learn"],
                    "target": TARGETS[workload],
                    "memory_target": workload in MEMORY_TARGETS,
                    "headline": i == 0,
                }
            )
            print(json.dumps(summary[-1]), flush=True)
    if args.write_docs:
        write_docs(results, summary, shlex.join(sys.argv[1:]), args.section)


def _install(result: dict) -> str:
    return f"jax {result['jax']}, Python {result['python']}"


def _installs(results: list) -> list:
    return list(dict.fromkeys(_install(r) for r in results if r["tool"] == "maml-cli"))


def write_docs(results: list, summary: list, argv: str, section: str) -> None:
    from _report import cpu, replace_section, today

    torch = next(r for r in results if r["tool"] != "maml-cli")
    plans = {r["workload"]: r["plan"] for r in results if r["tool"] == "maml-cli"}
    lines = [
        f"Measured {today()} on {cpu()}, with `python scripts/bench_vs_peer.py {argv}`: maml-cli (its "
        f"default plan, below) and learn2learn (torch {torch['torch']}, {torch['threads']} threads), alternating, "
        "each measurement its own process. Peak memory: the peak resident set (`ru_maxrss`) of each process, "
        "median over the rounds. With several maml-cli installs (`--ours-python`), each ran in the same rounds; "
        "the ratio in bold is the first one's.",
        "",
        "| workload | maml-cli install | maml-cli tasks/s (rounds) | learn2learn tasks/s (rounds) | "
        "ratio of medians | target | peak RSS MB, maml-cli / learn2learn |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        target = s["target"]
        speed = "" if target is None else f">= {target:.1f}x ({'met' if s['ratio_of_medians'] >= target else 'short'})"
        ratio = f"**{s['ratio_of_medians']:.2f}x**" if s["headline"] else f"{s['ratio_of_medians']:.2f}x"
        mine, theirs = s["maml_cli_peak_rss_mb"], s["learn2learn_peak_rss_mb"]
        memory = f"{mine:.0f} / {theirs:.0f}"
        if s["memory_target"]:
            memory += f" ({'met' if mine <= theirs else 'short'}: at most the peer's)"
        lines.append(
            f"| {s['workload']} | {s['install']} | {', '.join(f'{v:.2f}' for v in s['maml_cli'])} | "
            f"{', '.join(f'{v:.2f}' for v in s['learn2learn'])} | {ratio} | {speed} | {memory} |"
        )
    lines += ["", "maml-cli's plan per workload (as its training log gives it):", ""]
    lines += [f"- {workload}: `{plan}`" for workload, plan in plans.items()]
    lines += ["", "Raw output:", "", "```", *[json.dumps(r) for r in results + summary], "```"]
    replace_section(REPO / "docs" / "performance.md", section, "\n".join(lines))


if __name__ == "__main__":
    main()
