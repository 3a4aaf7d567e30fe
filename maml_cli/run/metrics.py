"""Metric writers behind one small interface: metrics.jsonl (the run's record, always) and the
tracker ``logger=`` chose (``maml_cli.run.trackers``)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from maml_cli import strict_json
from maml_cli.run.directory import atomic_write_text
from maml_cli.run.trackers import TensorBoard


def mean_and_ci95(values, axis: int = 0):
    """Mean and 95% CI half-width over episodes, as the papers' code computes them: 1.96 * std /
    sqrt(n), std with ddof=0 (maml-eval's tasks: hundreds of them, where the normal quantile holds).
    Seeds are few: use ``mean_and_seed_ci95``."""
    values = np.asarray(values, dtype=float)
    return values.mean(axis=axis), 1.96 * values.std(axis=axis) / np.sqrt(values.shape[axis])


EPISODE_INTERVAL = "95% CI over tasks: 1.96 * std / sqrt(tasks)"
SEED_INTERVAL = "95% CI over seeds: Student's t, t(0.975, n-1) * std(ddof=1) / sqrt(n)"


def mean_and_seed_ci95(values) -> tuple[float, float]:
    """Mean and 95% CI half-width over a few seeds: t_{0.975, n-1} * std(ddof=1) / sqrt(n). With 2
    seeds the normal quantile (1.96) and ddof=0 give a tenth of this width; the t interval is the
    one that covers the true mean 95% of the time for normally distributed runs. NaN for one seed
    (no spread to measure)."""
    values = np.asarray(values, dtype=float).ravel()
    n = values.size
    if n == 0:
        return float("nan"), float("nan")
    if n < 2:
        return float(values.mean()), float("nan")
    from scipy import stats  # a second to import: only where an interval is computed

    return float(values.mean()), float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


TIMING_FIELDS = ("time", "elapsed_s", "train/steps_per_s")  # differ between two runs of the same math


def truncate_jsonl(path: Path, last_step: int) -> list:
    """Drop records after ``last_step`` (and a last line cut short by a crash): a resumed run
    recomputes them, so the stream has each step once. Returns the records kept."""
    kept = [
        line if line.endswith("\n") else line + "\n"
        for line in _lines(path)
        if line.strip() and _step_of(line) is not None and _step_of(line) <= last_step
    ]
    if not kept and not path.is_file():
        return []
    atomic_write_text(path, "".join(kept))
    return [json.loads(line) for line in kept]


def read_jsonl(path: Path) -> list:
    """The records of a metrics.jsonl (a line cut short by a crash, or damaged, skipped)."""
    return [json.loads(line) for line in _lines(Path(path)) if _step_of(line) is not None]


def _lines(path: Path) -> list[str]:
    """The lines of a file as text (bytes that are not UTF-8 replaced); none if it is not a
    readable file."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
    except OSError:
        return []


def _step_of(line: str):
    try:
        record = json.loads(line)
        return int(record["step"]) if isinstance(record, dict) else None
    except (ValueError, KeyError, TypeError, OverflowError):
        return None  # a line cut short by a crash, or damaged


class MetricWriter:
    """``write(step, {"train/query_loss": ...})`` appends one JSON line (one per step: the caller
    gathers a step's metrics) and hands the values to the tracker (default: TensorBoard). Opened with ``resume_step`` it
    continues a previous stream from that step. ``elapsed_s`` counts training time over all
    sessions of the run (up to each record)."""

    def __init__(self, run_dir: Path, resume_step: int = 0, tracker=None):
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        kept = truncate_jsonl(self.jsonl_path, resume_step)
        self._elapsed0 = float(kept[-1].get("elapsed_s", 0.0)) if kept else 0.0
        self._t0 = time.perf_counter()
        self._jsonl = self.jsonl_path.open("a")
        if tracker is None:
            tracker = TensorBoard(Path(run_dir), resume_step)
        self._tracker = tracker

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {
            "step": int(step),
            "time": round(time.time(), 3),
            "elapsed_s": round(self._elapsed0 + time.perf_counter() - self._t0, 3),
        }
        record.update({k: float(v) for k, v in metrics.items()})
        # Strict JSON: a value that is not finite is written as null and named, never as NaN.
        nonfinite = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        if nonfinite:
            record["nonfinite"] = nonfinite
        self._jsonl.write(strict_json.dumps(record) + "\n")
        self._jsonl.flush()
        self._tracker.log(step, metrics)

    def close(self) -> None:
        self._jsonl.close()
        self._tracker.close()
