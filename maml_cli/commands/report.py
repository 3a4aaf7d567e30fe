"""maml-report: one table over a sweep (or any folder of run directories).

    maml-report multirun/2026-11-27_10-00-00.000000
    maml-report runs/ --out reports/today

Runs are grouped by what they compute: their resolved config (each run's config.yaml) less the
seed and the settings that change neither the trained weights nor how the reported numbers are
computed (``NOT_THE_MATH``). A group is named by the KEY=VALUE settings by which it differs from the
other groups. Per group: status (done, stopped, training, failed, damaged), steps, training time,
the last validation metric and, from each run's ``eval.json`` (maml-eval's defaults), the test
metric after each inner step; across seeds the mean with Student's t 95% interval, beside the
papers' conventions (std over seeds; 95% CI over test tasks). One table per metric, rows sorted by
it (accuracy: highest first; MSE: lowest first).

Writes ``report.md``, ``report.csv`` (one row per run) and ``report.png`` (the groups' validation
curves) into the folder (or ``--out``), never into a run. Runs still training, failed or damaged (a
record missing, unreadable or not what it should be; a path that is not UTF-8) are listed as such,
never dropped, and a damaged run's numbers are not averaged. An eval.json scored from another run
(another run id) is left out; folders of one run (a copied folder keeps its run id) count once.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf

from maml_cli.atomic import WriteError, check_replaceable, describe_os_error, write_bytes, write_text
from maml_cli.commands.shell import guarded
from maml_cli.config import conform
from maml_cli.config.resume import RESUMABLE_CHANGES, flatten
from maml_cli.config.schema import REGRESSION_DATASETS
from maml_cli.errors import UserError
from maml_cli.paths import not_utf8, shown_path
from maml_cli.run.directory import is_being_trained, is_run, recorded_run_id
from maml_cli.run.metrics import EPISODE_INTERVAL, SEED_INTERVAL, mean_and_seed_ci95
from maml_cli.run.plots import _pyplot
from maml_cli.run.provenance import run_id_of
from maml_cli.run.records import NAMED_OPTIONS, eval_options, is_flagged

EXIT_USER_ERROR = 2

# Settings a run may change when resumed (config/resume.py) change how long, how chatty and on
# which hardware it runs, not its math; of those, these still change what a report row compares:
# - train.steps: a run trained for 1,000 steps is not a seed of one trained for 70,000 (and MAML++'s
#   and Reptile's outer step sizes are annealed over it);
# - eval.episodes: the number of test tasks behind eval.json's mean and its CI over tasks;
# - eval.val_episodes, eval.query_shots: the validation tasks behind the validation metric.
KEPT_RESUMABLE = ("train.steps", "eval.episodes", "eval.val_episodes", "eval.query_shots")
# Where the data is kept or cached, not what it is. dataset.path stays: for image_folder (and any
# dataset read from files) it names the data itself.
LOCATION_KEYS = ("dataset.cache_dir", "dataset.data_dir")
NOT_THE_MATH = frozenset({"seed", *LOCATION_KEYS, *(k for k in RESUMABLE_CHANGES if k not in KEPT_RESUMABLE)})


def counts_for_grouping(key: str) -> bool:
    """Whether a flattened config key changes what a run computes: everything but the seed, the
    trackers (logger.*) and ``NOT_THE_MATH``."""
    return key not in NOT_THE_MATH and not key.startswith("logger.")


@dataclass
class RunRow:
    path: Path
    overrides: list[str] | None  # None: no record of them (.hydra/overrides.yaml)
    status: str  # done | stopped | training | failed | damaged (FILE: why)
    config: dict | None = None  # the resolved config, as read (config.yaml, else Hydra's .hydra/config.yaml)
    seed: object = None
    steps: int = 0
    train_steps: int | None = None
    minutes: float | None = None
    metric: str | None = None  # mse | accuracy
    val: float | None = None
    test: list[float] = field(default_factory=list)  # after each inner step
    test_ci: float | None = None  # 95% CI over the test tasks of the last inner step
    diverged: int = 0  # test tasks that diverged at the last inner step
    flagged: bool = False  # the last inner step's mean is flagged (records.FLAG_RULE)
    curve: dict[int, float] = field(default_factory=dict)  # step -> validation metric
    notes: list[str] = field(default_factory=list)  # said in the run list (an eval.json of other options)
    run_id: str | None = None  # made when the run started; a copy of its folder keeps it
    copy_of: Path | None = None  # another folder of the same run (the same run id): counted there, not here

    @property
    def damaged(self) -> bool:
        return self.status.startswith("damaged")

    @property
    def scored(self) -> bool:
        """Whether its numbers are averaged: a damaged run's are not, nor a copy's (counted once)."""
        return not self.damaged and self.copy_of is None


# --- finding and reading runs --------------------------------------------------------------------

RUN_RECORDS = (".hydra", "metrics.jsonl", "checkpoints", "environment.json")


def find_runs(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that a maml-train job (or ``maml_cli.train``) wrote
    into: a config.yaml, or Hydra's ``.hydra/overrides.yaml``. A config.yaml inside a run (a
    tracker's files) is not another run."""
    found = {p.parent for p in root.rglob("config.yaml") if p.parent.name != ".hydra"}
    found |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    runs = {p for p in found if (p / "config.yaml").exists() and any((p / r).exists() for r in RUN_RECORDS)}
    found = {p for p in found if not any(r != p and r in p.parents for r in runs)}
    return sorted(
        found,
        key=lambda p: [
            (0, int(s), "") if s.isascii() and s.isdigit() else (1, 0, s) for s in p.relative_to(root).parts
        ],
    )


def _read(path: Path, parse) -> tuple[object, str | None]:
    """(``parse(text)``, None), or (None, what is wrong with the file)."""
    if not path.exists() and not path.is_symlink():
        return None, "missing"
    if path.is_dir():
        return None, "a folder, not a file"
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not text (binary bytes)"
    try:
        return parse(text), None
    except (ValueError, yaml.YAMLError) as e:
        return None, f"invalid {'JSON' if parse is json.loads else 'YAML'} ({str(e).splitlines()[0][:80]})"


def _number(value) -> float | None:
    """A record's number: None (strict JSON's non-finite value) is NaN; anything else not a number
    is None (the record is damaged)."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


_CONFORMED: dict[str, tuple] = {}  # a config less its seed -> (resolved, None) or (None, why not)


def _resolved_config(raw) -> tuple[dict | None, object, str | None]:
    """(the config read through the current schemas and resolved, its seed, None) or (None, None,
    why not). A key added to the schemas since the run was made takes its default, as on resume."""

    if not isinstance(raw, dict):
        return None, None, "not a mapping of settings"
    seed = raw.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return None, None, f"its seed is not an integer ({seed!r})"
    key = json.dumps({k: v for k, v in raw.items() if k != "seed"}, sort_keys=True, default=str)
    if key not in _CONFORMED:  # the runs of a sweep differ in their seed alone: read through the schemas once
        try:
            cfg = conform(OmegaConf.create({**raw, "seed": 0}), source="config")
            _CONFORMED[key] = (OmegaConf.to_container(cfg, resolve=True), None)
        except Exception as e:  # UserError from the schemas; omegaconf's interpolation errors
            detail = str(e).splitlines()[0].split("does not match the config schema: ")[-1]
            _CONFORMED[key] = (None, f"does not match the config schema ({detail[:100]})")
    cfg, why = _CONFORMED[key]
    return (None, None, why) if cfg is None else ({**cfg, "seed": seed}, seed, None)


RECORD_START = '{"step"'  # how MetricWriter begins every line of metrics.jsonl


def _read_metrics(path: Path, metric: str) -> tuple[list[dict], str | None]:
    """The records of metrics.jsonl, or what is wrong with it. A last line cut short (a crash
    mid-write) is skipped; a bad line before it, or a value that is not a number, is damage."""
    lines, problem = _read(path, lambda text: text.splitlines())
    if problem:
        return [], problem
    records = []
    body = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    for n, (i, line) in enumerate(body):
        try:
            record = json.loads(line)
            step = record["step"]
            if isinstance(step, bool) or not isinstance(step, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            if n == len(body) - 1 and (line.startswith(RECORD_START) or RECORD_START.startswith(line)):
                continue  # a record cut short by a crash mid-write
            return [], f"line {i} is not a record"
        for key in ("elapsed_s", f"val/{metric}"):
            if key in record and _number(record[key]) is None:
                return [], f"line {i}: {key} is not a number"
        records.append(record)
    return records, None


def _read_eval(path: Path, row: RunRow, cfg) -> str | None:
    """The test scores of eval.json into ``row``; what is wrong with it, or None."""
    record, problem = _read(path, json.loads)
    if problem:
        return problem
    per_step = record.get("per_step") if isinstance(record, dict) else None
    if not isinstance(per_step, list) or not per_step or not all(isinstance(s, dict) for s in per_step):
        return "not a maml-eval record (no per_step scores)"
    other = _record_of_another_run(record, row)
    if other is not None:
        row.notes.append(f"eval.json is a record of another run ({other}): left out")
        return None
    if record.get("metric") != row.metric:
        return f"scores {record.get('metric')!r}, the run is scored by {row.metric}"
    means = [_number(s.get("mean")) for s in per_step]
    last = per_step[-1]
    ci, diverged = _number(last.get("ci95")), last.get("diverged", 0)
    if None in means or ci is None or isinstance(diverged, bool) or not isinstance(diverged, int):
        return "a score that is not a number"
    options = record.get("options")
    if options is None:  # a record written before maml-eval named its options
        try:
            options = eval_options(record, OmegaConf.create(cfg))
        except Exception:  # fields missing from an old record
            options = {"record": "of unknown options"}
    shown = " ".join(f"{k}={v}" for k, v in options.items())
    if any(k in NAMED_OPTIONS or k == "record" for k in options):  # scores another thing than the defaults
        row.notes.append(f"eval.json was scored with other options than maml-eval's defaults ({shown}): left out")
        return None
    if options:  # the same thing scored on other tasks or another number of them: kept, and said
        row.notes.append(f"eval.json scored with {shown}")
    row.test = means
    row.test_ci = ci
    row.diverged = diverged
    if "flagged" in last:
        row.flagged = bool(last["flagged"])
    else:  # a record written before the flag was stored: the same rule
        without = [last.get(k) for k in ("mean_without_diverged", "ci95_without_diverged")]
        row.flagged = is_flagged(means[-1], diverged, *(None if v is None else _number(v) for v in without))
    return None


def _record_of_another_run(record: dict, row: RunRow) -> str | None:
    """Why ``record`` (an eval.json) was scored from another run than ``row``'s, or None: the run ids
    differ where both have one (a copied folder keeps its run's id), else the ``run`` path it names is
    not this folder (a record written before records carried the id)."""
    recorded = record.get("run_id")
    if isinstance(recorded, str) and recorded and row.run_id:
        return None if recorded == row.run_id else f"run id {recorded}; this run's is {row.run_id}"
    scored = record.get("run")
    if not isinstance(scored, str) or not scored:
        return None  # a record written before records named their run: nothing to tell it by
    try:
        here = row.path.absolute().resolve()
    except (OSError, RuntimeError):
        return None
    return None if Path(scored) == here else f"scored from {scored}"


def _run_id(run_dir: Path) -> str | None:
    """The run's id (``run_dir.run_id_of``): environment.json's, else its newest checkpoint's."""

    try:
        recorded = recorded_run_id(run_dir)
        if recorded is not None or not (run_dir / "checkpoints").is_dir():
            return recorded
        return run_id_of(run_dir)
    except OSError:  # a checkpoints/ folder that cannot be listed
        return None


def mark_copies(rows: list[RunRow], root: Path) -> None:
    """Folders of one run (the same run id: a copied folder) are one run: the one with the most in
    it (not damaged, trained furthest, evaluated; else the first listed) is counted, the others are
    marked as its copies and said so."""
    by_id: dict[str, list[RunRow]] = {}
    for row in rows:
        if row.run_id:
            by_id.setdefault(row.run_id, []).append(row)
    for same in by_id.values():
        if len(same) < 2:
            continue
        kept = max(same, key=lambda r: (not r.damaged, r.steps, bool(r.test), -same.index(r)))
        copies = [r for r in same if r is not kept]
        for r in copies:
            r.copy_of = kept.path
        kept.notes.append(
            f"the same run (run id {kept.run_id}) as {', '.join(f'`{_relative(r.path, root)}`' for r in copies)}: "
            "counted once, here"
        )
        for r in copies:
            r.notes.append(
                f"a copy of `{_relative(kept.path, root)}` (the same run id {kept.run_id}): counted once, there"
            )


def _train_log_failed(run_dir: Path) -> bool:
    try:
        return b"[ERROR]" in (run_dir / "train.log").read_bytes()
    except OSError:
        return False


def read_run(run_dir: Path) -> RunRow:
    """What one run holds, read only: nothing in ``run_dir`` is created or changed."""
    overrides, problem = _read(run_dir / ".hydra" / "overrides.yaml", yaml.safe_load)
    if problem or not isinstance(overrides, list):
        overrides = None
    else:
        overrides = [str(o) for o in overrides if not str(o).split("=")[0].lstrip("+~").startswith("hydra.")]

    training = is_being_trained(run_dir)
    failed = not training and _train_log_failed(run_dir)
    problems: list[tuple[str, str]] = []  # (file, why)

    raw, why = _read(run_dir / "config.yaml", yaml.safe_load)
    cfg = seed = None
    if why is None:
        cfg, seed, why = _resolved_config(raw)
    if why is not None:
        problems.append(("config.yaml", why))
        # Hydra's record of the job's config groups a job that has not written its own yet.
        hydra_raw, hydra_why = _read(run_dir / ".hydra" / "config.yaml", yaml.safe_load)
        if hydra_why is None:
            cfg, seed, _ = _resolved_config(hydra_raw)
    row = RunRow(run_dir, overrides, "", config=cfg, seed=seed, run_id=_run_id(run_dir))
    if cfg is not None:
        row.metric = "mse" if cfg["dataset"]["name"] in REGRESSION_DATASETS else "accuracy"
        row.train_steps = int(cfg["train"]["steps"])
    if not problems and row.metric:
        records, why = _read_metrics(run_dir / "metrics.jsonl", row.metric)
        if why is not None:
            problems.append(("metrics.jsonl", why))
        if records:
            val_key = f"val/{row.metric}"
            row.curve = {r["step"]: _number(r[val_key]) for r in records if val_key in r}
            row.steps = records[-1]["step"]
            row.minutes = _number(records[-1].get("elapsed_s", 0.0)) / 60
            row.val = row.curve[max(row.curve)] if row.curve else None
        eval_file = run_dir / "eval.json"
        if eval_file.exists() or eval_file.is_symlink():
            why = _read_eval(eval_file, row, cfg)
            if why is not None:
                problems.append(("eval.json", why))
    bad_name = not_utf8(run_dir)
    if bad_name is not None:  # Orbax cannot address its checkpoints: maml-eval, maml-adapt and resuming refuse it
        problems.append(
            (
                "its path",
                f"{shown_path(bad_name)} has a name that is not UTF-8 text, so its checkpoints cannot be read: "
                "rename it (convmv -f latin1 -t utf-8 -r --notest DIR renames a whole folder)",
            )
        )
    # A run being trained, or one that failed, has not written every file yet: a missing one is no damage.
    damage = [(f, why) for f, why in problems if why != "missing" or not (training or failed)]
    if training:
        row.status = "training"
    elif damage:
        row.status = "damaged (" + "; ".join(f"{f}: {why}" for f, why in damage) + ")"
    elif failed:
        row.status = "failed"
    else:
        row.status = "done" if row.train_steps is not None and row.steps >= row.train_steps else "stopped"
    if row.damaged:  # its numbers are not averaged
        row.val, row.test, row.test_ci, row.diverged, row.flagged, row.curve = None, [], None, 0, False, {}
    return row


# --- grouping ----------------------------------------------------------------------------------


def experiment_key(row: RunRow) -> tuple:
    """What a run computes: its metric and every setting that counts (``counts_for_grouping``), as
    canonical text. Runs with the same key are seeds of one experiment. A run without a readable
    config is a group of its own."""
    if row.config is None:
        return ("(no readable config)", str(row.path))
    settings = flatten(row.config)
    return (row.metric, *sorted((k, _canonical(v)) for k, v in settings.items() if counts_for_grouping(k)))


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _value_text(value) -> str:
    """A setting as the command line writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def group_names(groups: dict[tuple, list[RunRow]]) -> dict[tuple, str]:
    """Each group's name: its KEY=VALUE for the settings whose values differ between the groups of
    its table (one table per metric). A setting under a node whose ``name`` differs between them
    (dataset.name, model.name, ...) is named only where it tells apart groups of the same choice,
    so an Omniglot group is not named by every key the sinusoid lacks. A group alone in its table
    is named by its choices (``dataset.name=omniglot model.name=conv4``) that differ from other
    tables'. Distinct groups of a table get distinct names."""
    named = {key: dict(key[1:]) for key in groups if groups[key][0].config is not None}
    out = {key: f"(no readable config: {groups[key][0].path})" for key in groups if key not in named}
    for metric in dict.fromkeys(key[0] for key in named):
        table = {key: settings for key, settings in named.items() if key[0] == metric}
        if len(table) == 1:
            ((key, settings),) = table.items()
            choices = [k for k in settings if k.endswith(".name") and k.count(".") == 1]
            differ = [k for k in choices if any(s.get(k) != settings[k] for s in named.values())]
            out[key] = " ".join(f"{k}={_value_text(json.loads(settings[k]))}" for k in differ) or "(every run)"
        else:
            out.update(_differences(table))
    return out


def _differences(table: dict[tuple, dict]) -> dict[tuple, str]:
    order = list(dict.fromkeys(k for settings in table.values() for k in settings))
    varying = [k for k in order if len({s.get(k) for s in table.values()}) > 1]
    out = {}
    for key, settings in table.items():
        shown = []
        for k in varying:
            if k not in settings:
                continue
            node = k.split(".")[0] + ".name"
            if k != node and node in varying:
                same_choice = [s for s in table.values() if s.get(node) == settings.get(node)]
                if len({s.get(k) for s in same_choice}) == 1:
                    continue  # it comes with the choice
            shown.append(f"{k}={_value_text(json.loads(settings[k]))}")
        out[key] = " ".join(shown)
    return out


def _mean_seed_ci(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and Student's t 95% half-width over seeds (None for one seed)."""
    if not values:
        return None, None
    mean, ci = mean_and_seed_ci95(values)
    return mean, (ci if len(values) > 1 else None)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI over seeds, as the report prints them (Student's t, n-1 degrees of freedom)."""
    return mean_and_seed_ci95(values)


def summarize(rows: list[RunRow]) -> list[dict]:
    """One line per group (runs that compute the same thing, seeds apart), sorted by the
    validation metric within each metric."""
    groups: dict[tuple, list[RunRow]] = {}
    keys = {r.path: experiment_key(r) for r in rows if r.copy_of is None}
    for r in rows:  # a copy is listed with the run it copies (its own config may be damaged or edited)
        groups.setdefault(keys.get(r.copy_of) or experiment_key(r), []).append(r)
    names = group_names(groups)
    lines = []
    for key, members in groups.items():
        counted = [r for r in members if r.copy_of is None]  # a copied folder is counted once, as its run
        scored = [r for r in counted if r.scored and r.val is not None]
        evaluated = [r for r in counted if r.scored and r.test]
        tests = [r.test[-1] for r in evaluated]
        val, val_ci = _mean_seed_ci([r.val for r in scored])
        test, test_ci = _mean_seed_ci(tests)
        task_cis = [r.test_ci for r in evaluated if r.test_ci is not None]
        lengths = {len(r.test) for r in evaluated}
        lines.append(
            {
                "group": printable(names[key]),
                "key": key,
                "runs": len(counted),
                "seeds_scored": len(scored),
                "metric": members[0].metric,
                "status": ", ".join(sorted({r.status.split(" (")[0] for r in counted})) or "copies",
                "steps": "/".join(
                    sorted({f"{r.steps}" + (f" of {r.train_steps}" if r.train_steps else "") for r in counted})
                ),
                "minutes": max((r.minutes or 0.0) for r in counted or members),
                "val": val,
                "val_ci": val_ci,
                "test_last_step": test,
                "test_ci": test_ci,
                "seeds_evaluated": len(tests),
                # The papers' two conventions: +- the std over seeds (MAML++), or the 95% CI over
                # test tasks (MAML, Meta-SGD; here the mean of the runs' own CIs).
                "test_std_seeds": float(np.std(tests)) if len(tests) > 1 else None,
                "test_ci_tasks": float(np.mean(task_cis)) if task_cis else None,
                "diverged": sum(r.diverged for r in evaluated),
                "flagged": any(r.flagged for r in evaluated),
                "test_per_step": [sum(v) / len(v) for v in zip(*[r.test for r in evaluated])]
                if len(lengths) == 1
                else [],
                "members": members,
            }
        )

    def best_first(g):
        val = g["val"]
        missing = val is None or not math.isfinite(val)
        return (g["metric"] or "~", missing, 0.0 if missing else (-val if g["metric"] == "accuracy" else val))

    return sorted(lines, key=best_first)


# --- the report's three files ---------------------------------------------------------------------


def _fmt(value: float | None, metric: str | None, ci: float | None = None) -> str:
    if value is None:
        return "-"
    scale, unit = (100, "%") if metric == "accuracy" else (1, "")
    text = f"{value * scale:.4g}{unit}"
    return text if ci is None else f"{text} +- {ci * scale:.2g}{unit}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path != root else "."


def common_overrides(rows: list[RunRow]) -> list[str]:
    """The recorded overrides every run shares (seed apart), in the order the first run gives them."""
    recorded = [r.overrides for r in rows if r.overrides is not None]
    if not recorded:
        return []
    shared = set.intersection(*[set(o) for o in recorded])
    return [o for o in recorded[0] if o in shared and o.split("=")[0].lstrip("+") != "seed"]


def markdown(root: Path, groups: list[dict]) -> str:
    """The report: one table per metric (accuracy and MSE are never ranked together), then the runs."""
    rows = [r for g in groups for r in g["members"]]
    common = common_overrides(rows)
    out = [f"# Sweep report: {root}", "", f"Overrides common to every run: `{' '.join(common) or '(none)'}`"]
    metrics = list(dict.fromkeys(g["metric"] for g in groups))
    for metric in metrics:
        name = metric or "no metric (no readable config)"
        if len(metrics) > 1:
            out += ["", f"## {name}"]
        m = metric or "metric"
        out += [
            "",
            f"| group (settings that differ, seed apart) | runs | status | steps | minutes | "
            f"last validation {m}: mean +- 95% CI over seeds (t) | "
            f"test {m}, last step: mean +- 95% CI over seeds (t) | test {m}, last step: +- std over seeds | "
            f"test {m}, last step: +- 95% CI over tasks | diverged test tasks, last step | "
            f"test {m} after each inner step (mean over seeds) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for g in (g for g in groups if g["metric"] == metric):
            metric_of = g["metric"]
            val = _fmt(g["val"], metric_of, g["val_ci"])
            if g["seeds_scored"] == 1:
                val += " (one seed)"
            test = _fmt(g["test_last_step"], metric_of, g["test_ci"])
            if g["seeds_evaluated"] == 1:
                test += " (one seed)"
            std = "-" if g["test_std_seeds"] is None else _fmt(g["test_last_step"], metric_of, g["test_std_seeds"])
            tasks = "-" if g["test_ci_tasks"] is None else _fmt(g["test_last_step"], metric_of, g["test_ci_tasks"])
            diverged = "-" if not g["seeds_evaluated"] else str(g["diverged"])
            if g["flagged"]:
                diverged = f"! {g['diverged']} diverged"
            per_step = ", ".join(_fmt(v, metric_of) for v in g["test_per_step"]) or "-"
            out.append(
                f"| `{_cell(g['group'])}` | {g['runs']} | {g['status']} | {g['steps']} | {g['minutes']:.1f} | "
                f"{val} | {test} | {std} | {tasks} | {diverged} | {per_step} |"
            )
    out += [
        "",
        f"Intervals: over seeds, the {SEED_INTERVAL} (last validation; test, first column); over test "
        f"tasks, the {EPISODE_INTERVAL}, as MAML and Meta-SGD report it (the mean of the runs' own); "
        "+- std over seeds as MAML++ reports it. Test scores are each run's eval.json (maml-eval's "
        "defaults). `! N diverged`: leaving the diverged tasks out moves a run's mean by more than the "
        "95% CI of the other tasks' mean, or the mean is not finite; without `!`, N tasks diverged and "
        "the mean stands. A damaged run is listed but not averaged.",
    ]
    out += ["", "Runs:", ""]
    for g in groups:
        for r in g["members"]:
            recorded = "(no overrides recorded)" if r.overrides is None else " ".join(r.overrides) or "(defaults)"
            notes = "".join(f"; {n}" for n in r.notes)
            out.append(
                f"- `{_relative(r.path, root)}`: {r.status}, seed {r.seed if r.seed is not None else '?'}, "
                f"`{recorded}`, step {r.steps}, val {_fmt(r.val, r.metric)}{notes}"
            )
    return printable("\n".join(out) + "\n")


def csv_text(root: Path, groups: list[dict]) -> str:
    buffer = io.StringIO(newline="")
    w = csv.writer(buffer)
    w.writerow(
        [
            "run",
            "group",
            "seed",
            "overrides",
            "status",
            "steps",
            "train_steps",
            "minutes",
            "metric",
            "val",
            "test_per_step",
            "copy_of",
        ]
    )
    for g in groups:
        for r in g["members"]:
            w.writerow(
                [
                    _relative(r.path, root),
                    g["group"],
                    "" if r.seed is None else r.seed,
                    "" if r.overrides is None else " ".join(r.overrides),
                    r.status,
                    r.steps,
                    r.train_steps,
                    "" if r.minutes is None else round(r.minutes, 3),
                    r.metric or "",
                    "" if r.val is None else r.val,
                    " ".join(f"{v:.6g}" for v in r.test),
                    "" if r.copy_of is None else _relative(r.copy_of, root),
                ]
            )
    return printable(buffer.getvalue())


def printable(text: str) -> str:
    """``text`` as it can be printed and written as UTF-8: the bytes of a name that is not UTF-8
    (held by Python as surrogates) shown escaped (``lat\\xe9n``)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (from a record's \\ud800)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def plot_png(groups: list[dict]) -> bytes:
    """The groups' validation curves, one panel per metric, as PNG bytes."""

    plt = _pyplot()
    metrics = [m for m in dict.fromkeys(g["metric"] for g in groups) if m] or [None]
    fig, axes = plt.subplots(1, len(metrics), figsize=(8 * len(metrics), 4.5), squeeze=False)
    try:
        for ax, metric in zip(axes[0], metrics):
            for g in (g for g in groups if g["metric"] == metric):
                curves = [r.curve for r in g["members"] if r.curve and r.copy_of is None]
                if not curves:
                    continue
                steps = sorted(set.intersection(*[set(c) for c in curves]))
                ax.plot(
                    steps,
                    [sum(c[s] for c in curves) / len(curves) for s in steps],
                    marker="o",
                    markersize=3,
                    label=f"{g['group']} (n={len(curves)})",
                )
            ax.set_xlabel("outer step")
            ax.set_ylabel(f"validation {metric or ''} (mean over seeds)")
            if metric == "mse" and ax.lines:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def write_report(out: Path, files: dict[str, str | bytes]) -> None:
    """Each file whole (``maml_cli.atomic``) into ``out``, created if need be."""

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"cannot create {out} ({describe_os_error(e)})") from e
    check_replaceable(out / name for name in files)
    for name, content in files.items():
        (write_bytes if isinstance(content, bytes) else write_text)(out / name, content)


def out_problem(out: Path, runs: list[Path]) -> str | None:
    """Why ``out`` cannot take the report, or None: it is a run (``is_run``) or inside one, or one of
    the runs read or inside one (a job that failed before it wrote a config.yaml is read too):
    maml-report writes into no run, its files would be mixed with the run's."""

    target = out.absolute().resolve()
    read = {r.absolute().resolve() for r in runs}
    for place in [target, *target.parents]:
        if place in read or is_run(place):
            where = "a run" if place == target else f"inside the run {place}"
            return (
                f"{out} is {where}, which maml-report only reads: pass --out DIR, a folder outside every run, for "
                "report.md, report.csv and report.png"
            )
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's errors: one line, ``maml-report: error: ...``, exit 2 (through
    ``guarded``), instead of the usage line and the error."""

    def error(self, message: str):
        raise UserError(f"{message} (maml-report --help)")


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a folder")
    return Path(text)


@guarded("maml-report")
def main(argv=None) -> None:
    parser = ArgumentParser(
        prog="maml-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=_folder, help="a multirun folder, or any folder holding run directories")
    parser.add_argument("--out", type=_folder, help="where report.md/.csv/.png go (default: DIR); never into a run")
    args = parser.parse_args(argv)
    root = args.dir
    if not root.is_dir():
        raise UserError(f"{root} is not a directory: pass a multirun folder, or any folder holding run directories")
    runs = find_runs(root)
    if not runs:
        raise UserError(
            f"no run directories under {root} (folders maml-train wrote, with config.yaml or .hydra/): "
            "pass a multirun folder, or any folder holding run directories"
        )
    out = args.out or root
    refused = out_problem(out, runs)
    if refused and args.out is not None:  # a place the user named: refused before anything is read
        raise UserError(refused)
    rows = [read_run(r) for r in runs]
    mark_copies(rows, root)
    groups = summarize(rows)
    text = markdown(root, groups)
    if refused:  # the folder read is a run: the table, and where to write it
        print(text, end="")
        raise UserError(refused)
    try:
        write_report(out, {"report.md": text, "report.csv": csv_text(root, groups), "report.png": plot_png(groups)})
    except UserError as e:
        print(text, end="")
        reason = describe_os_error(e.__cause__) if isinstance(e.__cause__, OSError) else str(e)
        raise UserError(
            f"cannot write the report into {out} ({reason}); the table is above: pass --out DIR, a folder you can write"
        ) from e
    print(text, end="")
    print(f"wrote {out / 'report.md'}, report.csv, report.png", file=sys.stderr)


if __name__ == "__main__":
    main()
