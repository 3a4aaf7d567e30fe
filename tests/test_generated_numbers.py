"""The numbers of issue 30, item 7, over generated inputs: maml-report's groups over folders of fake
runs (what a real run writes, written by hand, some of it damaged), the seed interval against
scipy's t interval, and the rule that flags a diverged step."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from scipy import stats

from maml_cli.commands import report
from maml_cli.engine.scoring import diverged, summarize
from maml_cli.run.metrics import mean_and_ci95, mean_and_seed_ci95
from maml_cli.run.records import diverged_warning, format_table
from tests.conftest import TINY, make_cfg, run_in_process
from tests.generated import examples

# --- maml-report over generated folders of runs ------------------------------------------------------

# The resolved configs a real run writes (config.yaml), one per metric.
BASES = {
    "sinusoid": OmegaConf.to_container(make_cfg(*TINY), resolve=True),
    "omniglot": OmegaConf.to_container(make_cfg("experiment=omniglot_tiny", "train.progress=false"), resolve=True),
}
METRIC = {"sinusoid": "mse", "omniglot": "accuracy"}
# Settings that change what a run computes (a run differing in one is another experiment) ...
MATH = {"algorithm.inner_lr": [0.01, 0.1], "train.steps": [10, 20], "eval.episodes": [20, 30]}
# ... and settings that do not (the seed apart): runs differing only in these are seeds of one row.
NOT_MATH = {
    "train.log_every": [5, 10],
    "train.devices": ["auto", "1"],
    "train.task_batching": ["auto", "vmap"],
    "eval.batch_size": [10, 20],
    "logger.name": ["tensorboard", "csv"],
    "dataset.cache_dir": [None, "/somewhere/else"],
}
DAMAGE = {
    "config.yaml": ["binary", "not a mapping", "invalid", "folder", "missing", "schema"],
    "metrics.jsonl": ["binary", "invalid", "folder", "missing", "not a number"],
    "eval.json": ["binary", "invalid", "folder", "not a record", "other metric"],
}


def _set(config: dict, key: str, value) -> None:
    node = config
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    if last in node or key != "dataset.cache_dir":  # cache_dir only where the dataset has one
        node[last] = value


def _val(dataset: str, seed: int, step: int, math_settings: tuple) -> float:
    """A deterministic validation number per run and step (accuracy in [0, 1], MSE above 0)."""
    x = (zlib.crc32(repr((dataset, math_settings)).encode()) % 1000) / 1000 + 0.01 * seed + 0.001 * step
    return x % 1.0 if dataset == "omniglot" else 0.1 + x


runs_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "dataset": st.sampled_from(sorted(BASES)),
            "seed": st.integers(0, 3),
            "math": st.fixed_dictionaries({k: st.sampled_from(v) for k, v in MATH.items()}),
            "not_math": st.fixed_dictionaries({k: st.sampled_from(v) for k, v in NOT_MATH.items()}),
            "steps_done": st.sampled_from([5, 10, 20]),
            "nonfinite": st.sampled_from([False, False, False, True]),  # the last validation blew up (null)
            "evaluated": st.booleans(),
            "eval_options": st.sampled_from([{}, {}, {"split": "val"}]),
            "test": st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2),
            "flagged": st.booleans(),
            "overrides": st.booleans(),
            "damage": st.one_of(
                st.none(),
                st.none(),
                st.sampled_from(sorted(DAMAGE)).flatmap(lambda f: st.tuples(st.just(f), st.sampled_from(DAMAGE[f]))),
            ),
        }
    ),
    min_size=1,
    max_size=7,
)


def write_run(run_dir: Path, spec: dict) -> dict:
    """A run folder as maml-train leaves it (config.yaml, metrics.jsonl, maybe eval.json and
    .hydra/overrides.yaml), damaged as ``spec`` says. Returns what the report should make of it."""
    dataset, metric = spec["dataset"], METRIC[spec["dataset"]]
    config = json.loads(json.dumps(BASES[dataset]))
    config["seed"] = spec["seed"]
    for key, value in {**spec["math"], **spec["not_math"]}.items():
        _set(config, key, value)
    math_settings = (dataset, *sorted(spec["math"].items()))
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    steps = list(range(5, spec["steps_done"] + 1, 5))
    vals = {s: _val(dataset, spec["seed"], s, math_settings) for s in steps}
    if spec["nonfinite"] and steps:
        vals[steps[-1]] = float("nan")  # written as null, as strict JSON writes it
    lines = [{"step": s, "time": 1.0, "elapsed_s": 0.5 * s, f"val/{metric}": vals[s]} for s in steps]
    lines = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in lines]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    test = [float(v) for v in spec["test"]]
    if spec["evaluated"]:
        per_step = [
            {"step": i, "mean": v, "ci95": 0.01, "median": v, "diverged": 2 if spec["flagged"] else 0,
             "mean_without_diverged": v, "ci95_without_diverged": 0.01, "flagged": spec["flagged"]}
            for i, v in enumerate(test)
        ]  # fmt: skip
        record = {"metric": metric, "split": spec["eval_options"].get("split", "test"), "per_step": per_step}
        record["options"] = spec["eval_options"]
        (run_dir / "eval.json").write_text(json.dumps(record))
    if spec["overrides"]:
        (run_dir / ".hydra").mkdir()
        overrides = [f"{k}={v}" for k, v in spec["math"].items()] + [f"seed={spec['seed']}"]
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    damaged_file = None
    if spec["damage"] is not None:
        name, kind = spec["damage"]
        if name == "eval.json" and not spec["evaluated"]:
            kind = "missing"  # a run never evaluated: no eval.json, no damage
        elif name == "config.yaml" and kind == "missing" and not spec["overrides"]:
            kind = "schema"  # without config.yaml or .hydra/ a folder is no run at all
        if kind != "missing" or name != "eval.json":
            damaged_file = name
            damage(run_dir / name, kind, lines)
    return {
        "math": math_settings,
        "metric": metric,
        "damaged": damaged_file,
        "val": None if damaged_file or not steps else vals[steps[-1]],
        "test": test[-1] if spec["evaluated"] and not spec["eval_options"] and not damaged_file else None,
        "flagged": spec["flagged"] and spec["evaluated"] and not spec["eval_options"] and not damaged_file,
    }


def damage(path: Path, kind: str, lines: list) -> None:
    if path.is_file():
        path.unlink()
    if kind == "binary":
        path.write_bytes(b"\xff\xfe\x00\x9c binary junk \x80\n\x01")
    elif kind == "not a mapping":
        path.write_text("just a sentence\n")
    elif kind == "invalid":
        path.write_text("{not: [valid\n" if path.suffix == ".yaml" else '{"step": 5, oops}\n{"step": 10}\n')
    elif kind == "folder":
        path.mkdir()
    elif kind == "schema":
        path.write_text(yaml.safe_dump({**BASES["sinusoid"], "train": {"stepz": 3}, "seed": 0}))
    elif kind == "not a number":
        path.write_text(json.dumps({**lines[-1], next(k for k in lines[-1] if k.startswith("val/")): "high"}) + "\n")
    elif kind == "not a record":
        path.write_text('["a", "list"]')
    elif kind == "other metric":
        path.write_text(json.dumps({"metric": "perplexity", "per_step": [{"step": 0, "mean": 1.0, "ci95": 0.1}]}))


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


@pytest.mark.generated
@examples(ci=8, fuzz=400)
@given(specs=runs_strategy)
def test_report_groups_runs_by_what_they_compute_and_lists_each_once(tmp_path_factory, specs):
    root = tmp_path_factory.mktemp("sweep")
    expected = {root / str(i): write_run(root / str(i), spec) for i, spec in enumerate(specs)}
    before = {run: snapshot(run) for run in expected}

    done = run_in_process("maml-report", root)

    assert done.returncode == 0, done.stderr  # never crashes, whatever the files hold
    assert "Traceback" not in done.stderr
    assert {run: snapshot(run) for run in expected} == before  # the runs it read are as they were
    groups = report.summarize([report.read_run(r) for r in report.find_runs(root)])
    members = [r.path for g in groups for r in g["members"]]
    assert sorted(members) == sorted(expected)  # every run, exactly once
    names = [(g["metric"], g["group"]) for g in groups]
    assert len(set(names)) == len(names)  # distinct within each metric's table
    for g in groups:
        rows = g["members"]
        readable = [r for r in rows if expected[r.path]["damaged"] != "config.yaml"]
        # A row never mixes metrics or experiments: one (dataset, math settings), one metric.
        assert len({expected[r.path]["math"] for r in readable}) <= 1
        assert len({expected[r.path]["metric"] for r in readable}) <= 1
        assert len(readable) in (0, len(rows))  # a run without a readable config is a row of its own
        assert all(r.status.startswith("damaged") == bool(expected[r.path]["damaged"]) for r in rows)
        assert all(expected[r.path]["damaged"] in r.status for r in rows if expected[r.path]["damaged"])
        vals = [expected[r.path]["val"] for r in rows if expected[r.path]["val"] is not None]
        assert g["val"] == (pytest.approx(np.mean(vals), nan_ok=True) if vals else None)
        tests = [expected[r.path]["test"] for r in rows if expected[r.path]["test"] is not None]
        assert g["test_last_step"] == (pytest.approx(np.mean(tests)) if tests else None)
        assert g["flagged"] == any(expected[r.path]["flagged"] for r in rows)
        # Its name's KEY=VALUE settings hold for every member.
        for token in g["group"].split() if readable and g["group"] != "(every run)" else []:
            key, value = token.split("=", 1)
            assert all(report._value_text(report.flatten(r.config).get(key)) == value for r in rows)
    # Runs that compute the same thing are one row, whatever their seeds and non-math settings.
    by_math: dict = {}
    for g in groups:
        for r in g["members"]:
            if expected[r.path]["damaged"] != "config.yaml":
                by_math.setdefault(expected[r.path]["math"], set()).add(g["group"])
    assert all(len(names) == 1 for names in by_math.values())
    text = (root / "report.md").read_text()
    assert all(f"`{r.relative_to(root)}`" in text for r in expected)


def test_report_names_groups_by_what_differs_and_flags_by_the_records_rule(tmp_path):
    specs = [
        {"dataset": "sinusoid", "seed": s, "math": {**{k: v[0] for k, v in MATH.items()}, "train.steps": steps},
         "not_math": {k: v[s % 2] for k, v in NOT_MATH.items()}, "steps_done": 20, "evaluated": True,
         "eval_options": {}, "test": [0.5, 0.4], "flagged": flagged, "overrides": False, "damage": None,
         "nonfinite": False}
        for s, steps, flagged in [(0, 20, False), (1, 20, True), (0, 10, False)]
    ]  # fmt: skip
    specs.append({**specs[0], "dataset": "omniglot", "flagged": False})
    for i, spec in enumerate(specs):
        write_run(tmp_path / str(i), spec)
    done = run_in_process("maml-report", tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    named = {row.split("`")[1]: row for row in rows}
    # The two sinusoid rows differ in train.steps alone; the omniglot row, alone in the accuracy
    # table, is named by its choices (conv4's filters, Omniglot's image size come with them).
    assert sorted(named) == ["dataset.name=omniglot model.name=conv4", "train.steps=10", "train.steps=20"]
    assert "| 2 | done |" in named["train.steps=20"] and "| ! 2 diverged |" in named["train.steps=20"]  # a seed flagged
    assert named["train.steps=10"].split("|")[10].strip() == "0"  # none flagged, none diverged: the count alone
    assert "## accuracy" in done.stdout and "## mse" in done.stdout


# --- the seed interval ------------------------------------------------------------------------------


@pytest.mark.generated
@examples(ci=30, fuzz=3000)
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12))
def test_the_seed_interval_is_students_t_with_n_minus_1_degrees_of_freedom(values):
    mean, half = mean_and_seed_ci95(values)
    assert mean == pytest.approx(np.mean(values), abs=1e-9)
    if stats.sem(values) > 0:
        low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        # (high - low) / 2 loses the digits of the interval that the mean's magnitude takes up
        assert half == pytest.approx((high - low) / 2, rel=1e-9, abs=1e-12 * max(1.0, abs(float(np.mean(values)))))
    else:
        assert half == 0.0
    assert half >= 1.96 * np.std(values) / np.sqrt(len(values)) - 1e-9  # never narrower than the episodes' one


def test_two_seeds_give_the_t_interval_not_the_normal_one():
    _, half = mean_and_seed_ci95([0.5, 0.7])
    _, episodes = mean_and_ci95([0.5, 0.7])
    assert half == pytest.approx(12.706 * 0.1414 / 1.4142, rel=1e-3)  # about 1.27, not 0.14
    assert episodes == pytest.approx(1.96 * 0.1 / np.sqrt(2))  # about 0.14: the episodes' interval, kept for maml-eval
    assert math.isnan(mean_and_seed_ci95([0.5])[1])  # one seed: no spread to measure


# --- the diverged flag ------------------------------------------------------------------------------

finite = st.floats(0.0, 50.0)
blown = st.sampled_from([np.inf, np.nan, 1e3, 1e30])


@st.composite
def scores(draw):
    """Per-task losses [tasks, steps + 1] (some blowing up) and their metrics (MSE: the loss, or a
    value apart from it)."""
    tasks, steps = draw(st.integers(1, 12)), draw(st.integers(1, 3))
    losses = np.array(
        [[draw(st.one_of(finite, finite, finite, blown)) for _ in range(steps + 1)] for _ in range(tasks)]
    )
    losses[:, 0] = [draw(st.floats(0.1, 50.0)) for _ in range(tasks)]  # finite before adaptation
    same = draw(st.booleans())
    metric = losses.copy() if same else np.array([[draw(finite) for _ in range(steps + 1)] for _ in range(tasks)])
    return losses, metric


@pytest.mark.generated
@examples(ci=60, fuzz=5000)
@given(values=scores())
def test_a_step_is_flagged_iff_its_mean_is_not_finite_or_the_diverged_tasks_move_it_past_the_others_ci(values):
    losses, metric = values
    rows = summarize({"loss": losses, "metric": metric})
    bad = diverged(losses)
    for k, row in enumerate(rows):
        with np.errstate(all="ignore"):
            mean = np.mean(metric[:, k])
        kept = metric[~bad[:, k], k]
        assert row["diverged"] == int(bad[:, k].sum())  # the count is always reported
        if not np.isfinite(mean):
            expected = True
        elif not bad[:, k].any():
            expected = False
        elif kept.size == 0:
            expected = True  # every task diverged: the mean is theirs alone
        else:  # against the interval of the other tasks' mean
            expected = bool(abs(mean - np.mean(kept)) > 1.96 * np.std(kept) / np.sqrt(kept.size))
        assert row["flagged"] is expected
    record = {"metric": "mse", "split": "test", "episodes": len(losses), "checkpoint_step": 1, "per_step": rows}
    table = format_table(record).splitlines()
    for row, line in zip(rows, table[2:]):
        assert ("!" in line) == row["flagged"]
    assert (diverged_warning(record) is None) == (not any(r["flagged"] for r in rows))


def test_a_diverged_task_inside_the_interval_is_counted_not_flagged():
    rng = np.random.default_rng(0)
    losses = np.stack([np.full(31, 1.0), rng.uniform(0.3, 0.9, 31)], axis=1)
    losses[30, 1] = 10.5  # one task past 10x its start: diverged by the rule
    accuracy = np.stack([np.full(31, 0.2), rng.uniform(0.4, 0.8, 31)], axis=1)
    accuracy[30, 1] = 0.6  # ... yet its accuracy sits among the others'
    rows = summarize({"loss": losses, "metric": accuracy})
    assert rows[1]["diverged"] == 1 and not rows[1]["flagged"]
    record = {"metric": "accuracy", "split": "test", "episodes": 31, "checkpoint_step": 1, "per_step": rows}
    assert diverged_warning(record) is None and "!" not in format_table(record)
    losses[30, 1], accuracy[30, 1] = 1e30, 0.0  # a blow-up that drags the mean: flagged
    assert summarize({"loss": losses, "metric": losses})[1]["flagged"]
