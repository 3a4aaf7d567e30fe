"""Which checkpoint: ``checkpoint=latest | STEP | best | best:N`` read, and the one ranking of a
run's checkpoints by validation that the trainer keeps the best N by and maml-eval and maml-adapt
choose by."""

from __future__ import annotations

import math
from pathlib import Path

from maml_cli.errors import UserError
from maml_cli.run.directory import finished_steps
from maml_cli.run.metrics import read_jsonl
from maml_cli.run.provenance import CheckpointMissing


def parse_checkpoint(value) -> tuple:
    """``checkpoint=`` -> ("latest", None) | ("step", STEP) | ("best", N)."""
    if value is None or str(value) == "latest":
        return "latest", None
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        return "step", int(text)
    if text == "best":
        return "best", 1
    if text.startswith("best:") and text[5:].isascii() and text[5:].isdigit() and int(text[5:]) >= 1:
        return "best", int(text[5:])
    raise UserError(
        f"checkpoint={value} is not a checkpoint: use a step (checkpoint=5000), latest, best (the best "
        "validation) or best:N (an ensemble of the N best)"
    )


def selection_key(metric: str, cfg) -> str:
    """The metrics.jsonl key that ranks a run's checkpoints (``checkpoint=best``): the validation
    metric after the inner steps of evaluation (or of training, if more), as maml-eval reports it."""
    steps = max(int(cfg.algorithm.inner_steps), int(cfg.eval.inner_steps))
    return f"val/{metric}_step{steps}"


def ranking_score(value, metric: str) -> float:
    """Higher is better: accuracy as it is, MSE negated; missing or not finite ranks last."""
    if value is None or not math.isfinite(value):
        return -math.inf
    return float(value) if metric == "accuracy" else -float(value)


def score_of(validation: dict, metric: str, cfg) -> float:
    """The ranking score of one validation (a metrics.jsonl row's ``val/`` values)."""
    return ranking_score(validation.get(selection_key(metric, cfg)), metric)


def validation_scores(run_dir, metric: str, cfg, through: int | None = None) -> dict:
    """step -> ranking score of every validation in the run's metrics.jsonl (up to step ``through``:
    those after it were recorded by a session that died before their checkpoints were saved)."""
    key = selection_key(metric, cfg)
    return {
        int(r["step"]): ranking_score(r.get(key), metric)
        for r in read_jsonl(Path(run_dir) / "metrics.jsonl")
        if key in r and (through is None or int(r["step"]) <= through)
    }


def best_of(scores: dict, n: int) -> list:
    """The ``n`` steps of ``scores`` (step -> ranking score, NaN worst) with the best scores, best
    first; a tie goes to the later step. The trainer keeps these checkpoints and
    ``checkpoint=best:N`` scores them, so both rank by this one function."""

    def rank(step):
        value = scores[step]
        return (value if math.isfinite(value) else -math.inf, step)

    return sorted(scores, key=rank, reverse=True)[:n]


def best_steps(run_dir, cfg, metric: str, count: int) -> list:
    """The ``count`` checkpoints of the run with the best validation, best first; a clear error if
    fewer than ``count`` checkpoints have a validation."""
    available = set(finished_steps(Path(run_dir) / "checkpoints"))
    scores = {s: v for s, v in validation_scores(run_dir, metric, cfg).items() if s in available}
    if len(scores) < count:
        raise UserError(
            f"checkpoint=best:{count} needs {count} checkpoints with a validation ({selection_key(metric, cfg)} in "
            f"metrics.jsonl); {run_dir} has {len(scores)}"
            + (f" (steps {', '.join(map(str, sorted(scores)))})" if scores else "")
            + ". Train longer, or keep more with train.keep_best"
        )
    return best_of(scores, count)


def checkpoint_steps(run_dir, cfg, metric: str, checkpoint) -> tuple:
    """The checkpoint steps ``checkpoint=`` names ([None]: the latest) and how they were chosen; a
    clear error (CheckpointMissing) for a step the run does not have."""
    kind, value = parse_checkpoint(checkpoint)
    if kind == "best":
        return best_steps(run_dir, cfg, metric, value), f"best:{value} by {selection_key(metric, cfg)}"
    if kind == "step":
        available = finished_steps(Path(run_dir) / "checkpoints")
        if value not in available:
            raise CheckpointMissing(
                f"no checkpoint for step {value} in {Path(run_dir).absolute() / 'checkpoints'}; available: "
                f"{', '.join(map(str, available)) or 'none'}"
            )
        return [value], "given"
    return [None], "latest"  # read as the newest when restored (a live trainer may delete older ones)
