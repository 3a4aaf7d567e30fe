"""Metric writers behind one small interface: metrics.jsonl (for scripts) and TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from tensorboardX import SummaryWriter


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop records after ``last_step``: a resumed run recomputes them, so the stream has each
    step once."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True)
            if line.strip() and _step_of(line) is not None and _step_of(line) <= last_step]
    path.write_text("".join(kept))


def _step_of(line: str):
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a crash


class MetricWriter:
    """``write(step, {"train/query_loss": ...})`` appends one JSON line and one TensorBoard scalar
    per value. Opened with ``resume_step`` it continues a previous stream from that step."""

    def __init__(self, run_dir: Path, resume_step: int = 0):
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        truncate_jsonl(self.jsonl_path, resume_step)
        self._jsonl = self.jsonl_path.open("a")
        # purge_step tells TensorBoard to discard events at and after it from earlier sessions.
        self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                 purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: float(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            self._tb.add_scalar(name, float(value), int(step))

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()
