"""The eval record (eval.json and its siblings): which options it was scored with, the file it is
named by, the diverged flag's rule and the table maml-eval prints. Plain data, no JAX: maml-eval
writes records, maml-report reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

FLAG_RULE = (
    "a step is flagged when its mean is not finite, when every task diverged, or when leaving out "
    "the tasks that diverged moves the mean by more than the 95% CI of the mean over the others"
)


def is_flagged(mean, diverged: int, mean_without_diverged, ci95_without_diverged) -> bool:
    """``FLAG_RULE`` for one step: ``mean`` over every task, ``diverged`` tasks, and the mean and
    95% CI over the tasks that did not diverge (None when every task diverged). The yardstick is
    the interval of the other tasks' mean: a blow-up widens the interval of the mean over every
    task along with the mean itself, so that interval would never show it."""
    mean = float("nan") if mean is None else float(mean)
    if not np.isfinite(mean):
        return True
    if not diverged:
        return False
    if mean_without_diverged is None or ci95_without_diverged is None:
        return True
    return bool(abs(mean - float(mean_without_diverged)) > float(ci95_without_diverged))


# The options that name a record, in the order its file name gives them.
OPTION_NAMES = ("split", "checkpoint", "inner_steps", "episodes", "seed", "query_shots", "transductive")
# The options that give a record a file of its own: they score another thing (another split,
# checkpoint or adaptation length). The others (how many tasks, which ones, how many query examples)
# score the same thing again, into the same file; replacing a record of other options says so.
NAMED_OPTIONS = ("split", "checkpoint", "inner_steps")


def _checkpoint_option(record: dict) -> str | None:
    selection = str(record.get("checkpoint_selection", "latest"))
    if selection == "latest":
        return None
    if selection.startswith("best:"):
        n = selection[5:].split()[0]
        return "best" if n == "1" else f"best{n}"
    return str(record.get("checkpoint_step"))


def scored_with(record: dict) -> dict:
    """What a record was scored with, by option name (its own fields: any record, old or new)."""
    settings = record.get("algorithm_settings") or {}
    return {
        "split": record.get("split"),
        "checkpoint": _checkpoint_option(record),
        "inner_steps": record.get("inner_steps"),
        "episodes": record.get("episodes"),
        "seed": record.get("eval_seed"),
        "query_shots": record.get("query_shots"),
        "transductive": settings.get("transductive"),
    }


def eval_options(record: dict, run_cfg: DictConfig) -> dict:
    """The options by which ``record`` was scored otherwise than maml-eval's defaults for its run
    (test split, latest checkpoint, the run's eval.* settings): a value given equal to the default is
    no option. Empty for the run's own record, eval.json, the one maml-report reads."""
    e, query = run_cfg.eval, run_cfg.eval.query_shots
    defaults = {
        "split": "test",
        "checkpoint": None,
        "inner_steps": int(e.inner_steps),
        "episodes": int(e.episodes),
        "seed": int(e.seed),
        "query_shots": int(run_cfg.dataset.query_shots if query is None else query),
        "transductive": run_cfg.algorithm.get("transductive"),
    }
    used = scored_with(record)
    given = [name for name in OPTION_NAMES if used[name] is not None and used[name] != defaults[name]]
    return {name: _option_text(used[name]) for name in given}


def _option_text(value) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return "".join(c if c.isalnum() or c in "._" else "_" for c in text)


def record_path(app: DictConfig, record: dict) -> Path:
    """Where the record goes: ``output``, else a file of the run named from what was scored:
    eval.json for the test split, latest checkpoint and the run's inner steps (what maml-report
    reads), eval_NAME.json for another dataset's tasks (cross-domain), and ``_OPTION-VALUE`` for each
    of ``NAMED_OPTIONS`` that differs from the defaults (``eval_split-val_checkpoint-best.json``).
    Dataset names hold no ``-``, option parts always do: the two never collide."""
    if app.get("output"):
        return Path(app.output)
    parts = ["eval"]
    if record["data"]["cross_domain"]:
        parts.append(record["data"]["name"])
    parts += [f"{name}-{value}" for name, value in record.get("options", {}).items() if name in NAMED_OPTIONS]
    return Path(app.run_dir) / ("_".join(parts) + ".json")


def _fmt(value, scale: float, unit: str) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value * scale:.4f}{unit}"


def _flagged(row: dict) -> bool:
    """The record's own decision (``flagged``); a record written before it existed: the same rule."""
    if "flagged" in row:
        return bool(row["flagged"])

    return is_flagged(
        row.get("mean"), row.get("diverged", 0), row.get("mean_without_diverged"), row.get("ci95_without_diverged")
    )


def format_table(record: dict) -> str:
    """The per-step table. Every step shows how many tasks diverged; a step is flagged (``!``, its
    mean not to be quoted bare, the mean over the other tasks beside it) only when leaving them out
    moves the mean by more than the 95% CI of the others' mean, or the mean is not finite
    (``FLAG_RULE``)."""
    scale, unit = (100.0, "%") if record["metric"] == "accuracy" else (1.0, "")
    used = record.get("checkpoints", [record["checkpoint_step"]])
    which = f"checkpoint step {used[0]}" if len(used) == 1 else f"ensemble of checkpoints {', '.join(map(str, used))}"
    if record.get("checkpoint_selection", "").startswith("best"):
        which += f" ({record['checkpoint_selection']})"
    lines = [
        f"{record['split']} {record['metric']} over {record['episodes']} tasks, {which} (mean +- 95% CI)",
        f"{'inner step':>10}  {record['metric']:>22}  {'median':>10}  {'diverged':>8}",
    ]
    flagged = False
    for row in record["per_step"]:
        n = row.get("diverged", 0)
        mean = f"{_fmt(row['mean'], scale, unit)} +- {_fmt(row['ci95'], scale, unit)}"
        line = f"{row['step']:>10}  {mean:>22}  {_fmt(row.get('median'), scale, unit):>10}  {n:>8}"
        if _flagged(row):
            flagged = True
            line += (
                f"  ! without them: {_fmt(row.get('mean_without_diverged'), scale, unit)} +- "
                f"{_fmt(row.get('ci95_without_diverged'), scale, unit)}"
            )
        lines.append(line)
    if flagged:
        lines.append(
            f"! {record.get('diverged_rule', 'diverged tasks')}; {record.get('flag_rule', FLAG_RULE)}: "
            "such a mean is dominated by them"
        )
    return "\n".join(lines)


def diverged_warning(record: dict) -> str | None:
    """One line for stderr when a step is flagged (``format_table``), else None: diverged tasks that
    move the mean by less than its interval are counted in the table, not warned about."""
    bad = [(r["step"], r.get("diverged", 0), r.get("mean")) for r in record["per_step"] if _flagged(r)]
    if not bad:
        return None
    first, worst = bad[0][0], max(n for _, n, _ in bad)
    if not worst:  # a mean that is not finite, with no task counted as diverged
        return (
            f"warning: the mean of {record['episodes']} tasks is not finite from inner step {first}: it is not "
            "to be quoted; see the median"
        )
    return (
        f"warning: {worst} of {record['episodes']} tasks diverged (from inner step {first}) and move the mean by "
        "more than the 95% CI of the others' mean: the mean of those steps is not to be quoted bare; see the "
        "median and the mean without them"
    )
