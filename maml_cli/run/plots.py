"""The pictures of a run, drawn with matplotlib's Agg backend (no display needed) from plain
arrays and records, and written whole (through a temporary file) so a viewer never shows half a
PNG:

- ``learning_curves.png``: train query loss and metric, validation metric before and after
  adaptation, against outer step and against training time;
- ``adaptation.png`` (regression): a few test tasks, as in the MAML paper's figure 2 (and
  maml-adapt's ``adapted.png``: the user's support points and the adapted curve);
- ``eval.png``: the evaluation metric after each inner step with its 95% CI band.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from maml_cli.atomic import WriteError, atomic_open, describe_os_error
from maml_cli.errors import UserError
from maml_cli.paths import default_cache_dir


def _pyplot():
    if "MPLCONFIGDIR" not in os.environ:  # matplotlib's font cache: in ours, not in ~/.cache or ~/.config
        with contextlib.suppress(UserError):  # no usable cache: matplotlib picks a temporary folder itself
            os.environ["MPLCONFIGDIR"] = str(default_cache_dir() / "matplotlib")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, whole or not at all (``maml_cli.atomic``); the figure is closed
    either way."""

    path = Path(path)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError(f"cannot write {path} ({describe_os_error(e)})") from e
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


def _series(records: list[dict], key: str):
    rows = [r for r in records if key in r]
    return ([r["step"] for r in rows], [r.get("elapsed_s", 0.0) / 60 for r in rows], [r[key] for r in rows])


def learning_curves(records: list[dict], metric: str, path: Path, title: str = "") -> Path:
    """``records``: metrics.jsonl rows; ``metric``: mse or accuracy."""
    plt = _pyplot()
    panels = [
        ("train query loss", [("train/query_loss", "train query loss")]),
        (f"train query {metric}", [(f"train/query_{metric}", f"train query {metric}")]),
        (
            f"validation {metric}",
            [(f"val/{metric}_pre", "before adaptation"), (f"val/{metric}", "after the trained inner steps")]
            + [
                (k, f"after {k.rsplit('step', 1)[1]} steps")
                for k in sorted({k for r in records for k in r if k.startswith(f"val/{metric}_step")})
            ],
        ),
    ]
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for row, (name, series) in enumerate(panels):
        for col, xlabel in enumerate(("outer step", "training time (minutes)")):
            ax = axes[row][col]
            for key, label in series:
                steps, minutes, values = _series(records, key)
                if values:
                    ax.plot(
                        steps if col == 0 else minutes,
                        values,
                        marker="o" if len(values) < 30 else None,
                        markersize=3,
                        label=label,
                    )
            ax.set_xlabel(xlabel)
            ax.set_ylabel(name)
            if metric == "mse" and "loss" in name or (metric == "mse" and metric in name):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def adaptation(curves: Sequence[dict], steps: Sequence[int], path: Path, title: str = "") -> Path:
    """``curves``: per task {"x", "true" (None: unknown), "support_x", "support_y", "pred": {step: y}}."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        if c.get("true") is not None:
            ax.plot(c["x"], c["true"], color="red", linewidth=2, label="ground truth")
        for s, style in zip(steps, (":", "--", "-", "-.")):
            label = "before adaptation" if s == 0 else f"after {s} step{'s' if s > 1 else ''}"
            ax.plot(
                c["x"], c["pred"][s], linestyle=style, color="green" if s else "gray", alpha=0.6 + 0.04 * s, label=label
            )
        ax.scatter(
            c["support_x"],
            c["support_y"],
            marker="^",
            color="purple",
            zorder=3,
            label=f"{len(c['support_x'])} support points",
        )
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("y")
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def eval_curve(record: dict, path: Path) -> Path:
    """The metric of an eval.json record after each inner step: mean and 95% CI band, and the
    median. Where tasks diverged the mean is drawn without them, each such step marked and
    labelled with its count, so a blow-up is shown, never hidden and never drawn off the scale."""
    plt = _pyplot()
    scale = 100.0 if record["metric"] == "accuracy" else 1.0
    rows = record["per_step"]
    steps = [r["step"] for r in rows]

    def shown(r, key):
        value = r.get(f"{key}_without_diverged") if r.get("diverged") else r[key]
        return float("nan") if value is None else value * scale

    mean, ci = [shown(r, "mean") for r in rows], [shown(r, "ci95") for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, mean, marker="o", label="mean")
    ax.fill_between(
        steps, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)], alpha=0.3, label="95% CI"
    )
    if all(r.get("median") is not None for r in rows):
        ax.plot(steps, [r["median"] * scale for r in rows], linestyle="--", label="median")
    bad = [(r["step"], m, r["diverged"]) for r, m in zip(rows, mean) if r.get("diverged")]
    if bad:
        ax.scatter(
            [b[0] for b in bad],
            [b[1] for b in bad],
            marker="x",
            color="red",
            zorder=3,
            label="tasks diverged (mean without them)",
        )
        for step, m, n in bad:
            ax.annotate(
                str(n), (step, m), textcoords="offset points", xytext=(0, 6), ha="center", color="red", fontsize=7
            )
    ax.set_xlabel("inner steps at test time")
    ax.set_xticks(steps if len(steps) <= 12 else steps[:: max(1, len(steps) // 10)])
    ax.set_ylabel(f"{record['split']} {record['metric']}" + (" (%)" if scale == 100 else ""))
    if record["metric"] == "mse":
        ax.set_yscale("log")
    used = record.get("checkpoints", [record["checkpoint_step"]])
    which = f"checkpoint {used[0]}" if len(used) == 1 else f"ensemble of {len(used)} checkpoints"
    ax.set_title(f"{record['algorithm']}, {which}, {record['episodes']} tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
