"""A long run with preemptions: does it stay flat, and does it lose anything?

    python scripts/soak.py                                # 60 minutes, SIGTERM + resume every 5
    python scripts/soak.py --minutes 3 --interval 1       # a quick try

Two ``maml-train`` runs of the same config (``omniglot_5w1s`` on ../shared/data/omniglot by
default) start together and run side by side for ``--minutes``:
- **soak**: sent SIGTERM every ``--interval`` minutes; each time it must save, exit 75 ("requeue
  me") and be started again with the same command, which resumes it;
- **reference**: never interrupted.
Both are sent SIGTERM at the end. Then the script reports
- whether every metrics.jsonl row both reached is equal: every validation figure bit for bit, and
  every training row except the logging windows a stop cut short (the documented exception: a cut
  window averages only the steps after the resume), and the timing fields;
- the resident memory (VmRSS, sampled every few seconds) of each run's process at minute 10 and at
  the end, with the growth between them: the soak's process changes at each resume, the
  reference's lives the whole time (the day-long run's figure);
- the open files of each process (``/proc/PID/fd``) at the same times;
- the checkpoint folder's size and count against what ``train.keep_checkpoints`` and
  ``train.keep_best`` allow, and the run folder's size.
It prints one markdown block (for docs/reliability.md) and writes ``soak.json`` in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = Path(sys.executable).parent / "maml-train"
EXIT_REQUEUE = 75
TIMING = {"time", "elapsed_s", "train/steps_per_s"}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


class Run:
    """One maml-train run directory, started (and started again) with the same command."""

    def __init__(self, name: str, workdir: Path, overrides: list[str], cache: Path):
        self.name = name
        self.dir = workdir / name
        self.command = [str(TRAIN), *overrides, f"hydra.run.dir={self.dir}"]
        self.env = {**os.environ, "MAML_CLI_CACHE": str(cache), "MAML_CLI_COMPILE_CACHE": str(cache / "jax")}
        self.process: subprocess.Popen | None = None
        self.samples: list[dict] = []  # minute, pid, rss_mb, open_files
        self.exits: list[int] = []
        self.log = open(workdir / f"{name}.console.txt", "a")  # noqa: SIM115 (held for every restart)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=self.log, env=self.env)

    def sample(self, minute: float) -> None:
        if self.process is not None and self.process.poll() is None:
            pid = self.process.pid
            rss = rss_mb(pid)
            if rss is not None:
                self.samples.append({"minute": minute, "pid": pid, "rss_mb": rss, "open_files": open_files(pid)})

    def stop(self, timeout: float = 600) -> int:
        """SIGTERM, then wait: the run saves and exits 75."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.exits.append(code)
        return code

    def at(self, minute: float) -> dict | None:
        """The sample nearest ``minute``."""
        return min(self.samples, key=lambda s: abs(s["minute"] - minute), default=None)


def trend(samples: list[dict]) -> dict:
    """The resident memory's range and least-squares slope (MB per hour) over ``samples``: a leak
    climbs steadily, a plateau with noise (validation and checkpoint buffers) does not."""
    if len(samples) < 2:
        return {}
    import numpy as np

    minutes = np.array([s["minute"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    slope = np.polyfit(minutes, rss, 1)[0] * 60
    return {"rss_range_mb": [round(float(rss.min())), round(float(rss.max()))], "mb_per_hour": round(float(slope), 1)}


def metrics(run_dir: Path) -> dict[int, dict]:
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["step"]] = row
    return rows


def resume_steps(run_dir: Path) -> list[int]:
    sessions = json.loads((run_dir / "environment.json").read_text())["sessions"]
    return [s["start_step"] for s in sessions[1:]]


def compare(soak: Path, reference: Path, log_every: int) -> dict:
    a, b = metrics(soak), metrics(reference)
    common = sorted(set(a) & set(b))
    resumes = resume_steps(soak)
    # The window a stop cut: from the last log boundary before a resume to the next one.
    cut = {(r // log_every + 1) * log_every for r in resumes if r % log_every}
    val_equal = train_equal = 0
    differ = []
    for step in common:
        for key in sorted((set(a[step]) | set(b[step])) - TIMING - {"step"}):
            same = a[step].get(key) == b[step].get(key)
            if key.startswith("val/"):
                val_equal += same
            elif step not in cut:
                train_equal += same
            else:
                continue
            if not same:
                differ.append((step, key, a[step].get(key), b[step].get(key)))
    return {
        "rows_compared": len(common),
        "last_common_step": common[-1] if common else None,
        "val_values_equal": val_equal,
        "train_values_equal": train_equal,
        "windows_cut_by_a_stop": sorted(cut & set(common)),
        "differences": differ[:20],
        "equal": not differ and bool(common),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--interval", type=float, default=5, help="minutes between SIGTERMs to the soak run")
    parser.add_argument("--preset", default="omniglot_5w1s")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--workdir", default="/tmp/maml-soak")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("overrides", nargs="*", help="more maml-train overrides for both runs")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    overrides = [
        f"experiment={args.preset}",
        f"dataset.path={args.data}",
        "train.progress=false",
        "logger=tensorboard",
        *args.overrides,
    ]
    cache = workdir / "cache"
    soak, reference = Run("soak", workdir, overrides, cache), Run("reference", workdir, overrides, cache)
    # The dataset cache and the compiled programs first, so neither run's minute 0 is spent on them.
    subprocess.run([*soak.command[:-1], "train.dry_run=true"], env=soak.env, check=True, capture_output=True)

    began = time.monotonic()
    minute = lambda: (time.monotonic() - began) / 60  # noqa: E731
    soak.start()
    reference.start()
    next_stop = args.interval
    print(f"soak: {args.minutes} min, SIGTERM every {args.interval} min; runs in {workdir}", flush=True)
    while minute() < args.minutes:
        time.sleep(args.sample_every)
        now = minute()
        soak.sample(now)
        reference.sample(now)
        for run in (soak, reference):
            if run.process.poll() is not None:
                sys.exit(f"{run.name} ended on its own with exit code {run.process.returncode}: see {run.log.name}")
        if now >= next_stop and now < args.minutes - 0.5:
            code = soak.stop()
            print(f"minute {now:.1f}: soak stopped (exit {code}), started again", flush=True)
            if code != EXIT_REQUEUE:
                sys.exit(f"soak exited {code} on SIGTERM, not {EXIT_REQUEUE}: see {soak.log.name}")
            soak.start()
            next_stop += args.interval
    end = minute()
    for run in (soak, reference):
        code = run.stop()
        if code != EXIT_REQUEUE:
            sys.exit(f"{run.name} exited {code} on the final SIGTERM, not {EXIT_REQUEUE}")

    import yaml

    train_cfg = yaml.safe_load((soak.dir / "config.yaml").read_text())["train"]
    checkpoints = [p for p in (soak.dir / "checkpoints").iterdir() if p.name.isdigit()]
    allowed = train_cfg["keep_checkpoints"] + train_cfg["keep_best"]
    early = 10 if args.minutes >= 20 else args.minutes / 3
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "scripts/soak.py", *sys.argv[1:]]),
        "minutes": round(end, 1),
        "preset": args.preset,
        "soak_restarts": len(soak.exits) - 1,
        "soak_exit_codes": sorted(set(soak.exits)),
        "steps": {"soak": max(metrics(soak.dir)), "reference": max(metrics(reference.dir))},
        "metrics": compare(soak.dir, reference.dir, train_cfg["log_every"]),
        "memory": {
            run.name: {
                "early_minute": early,
                "early": run.at(early),
                "end": run.samples[-1] if run.samples else None,
                "growth": (run.samples[-1]["rss_mb"] / run.at(early)["rss_mb"] - 1) if run.samples else None,
                "max_rss_mb": max((s["rss_mb"] for s in run.samples), default=None),
                **trend([s for s in run.samples if s["minute"] >= early]),
                "samples": run.samples,
            }
            for run in (soak, reference)
        },
        "checkpoints": {
            "count": len(checkpoints),
            "allowed": allowed,
            "mb": round(folder_mb(soak.dir / "checkpoints"), 1),
            "one_mb": round(folder_mb(checkpoints[0]), 2) if checkpoints else None,
        },
        "run_dir_mb": {"soak": round(folder_mb(soak.dir), 1), "reference": round(folder_mb(reference.dir), 1)},
    }
    (workdir / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    ok = (
        report["metrics"]["equal"]
        and report["checkpoints"]["count"] <= allowed
        and all(abs(m["growth"]) < 0.05 for m in report["memory"].values() if m["growth"] is not None)
    )
    sys.exit(0 if ok else 1)


def markdown(r: dict) -> str:
    m, c = r["metrics"], r["checkpoints"]
    lines = [
        f"`{r['command']}` ({r['date']}, {os.uname().machine} Linux, {os.cpu_count()} cores; both runs side by side):",
        "",
        f"- {r['minutes']} min of `{r['preset']}`: the soak run was stopped by SIGTERM and resumed "
        f"{r['soak_restarts']} times (exit codes {r['soak_exit_codes']}) and reached step {r['steps']['soak']}; "
        f"the uninterrupted reference reached step {r['steps']['reference']}.",
        f"- metrics: {m['rows_compared']} rows up to step {m['last_common_step']} compared; "
        f"{m['val_values_equal']} validation values and {m['train_values_equal']} training values "
        f"{'all equal' if m['equal'] else 'NOT all equal: ' + str(m['differences'])}"
        f" ({len(m['windows_cut_by_a_stop'])} training windows cut by a stop left out, timing fields aside).",
    ]
    for name, mem in r["memory"].items():
        if mem["early"] is None:
            continue
        lines.append(
            f"- {name} resident memory: {mem['early']['rss_mb']:.0f} MB at minute {mem['early_minute']:.0f}, "
            f"{mem['end']['rss_mb']:.0f} MB at minute {mem['end']['minute']:.0f} ({mem['growth'] * 100:+.1f}%); "
            f"open files {mem['early']['open_files']} and {mem['end']['open_files']}; from minute "
            f"{mem['early_minute']:.0f} on, between {mem.get('rss_range_mb')} MB, "
            f"trend {mem.get('mb_per_hour')} MB/hour."
        )
    lines.append(
        f"- checkpoints: {c['count']} kept ({c['mb']} MB, {c['one_mb']} MB each), at most "
        f"{c['allowed']} allowed (keep_checkpoints + keep_best); run folders {r['run_dir_mb']['soak']} MB "
        f"(soak) and {r['run_dir_mb']['reference']} MB (reference)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
