"""Values (issue 30, item 5): every number a config, a command line or a user's task brings lies
in the range its field declares, or is refused with one line.

- Config values: every numeric field of every schema declares its range (``schema.opt``), and
  ``validate``'s one generic check (``checks.range_problems``) walks a composed config against its
  schemas. Generated values for every numeric key of the train schema (every dataset, model and
  algorithm) and of maml-eval's and maml-adapt's own keys: refused with one line, or in range.
- User data: maml-adapt's CSV files and ``Run.adapt``/``Learner.predict``'s arrays pass the same
  checks (``engine.adapt.check_support``, ``check_examples``): exit 0 with finite predictions
  written whole, or exit 2 with one line and nothing in out_dir created or changed.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maml_cli as mc
from maml_cli.config import schema, validate
from maml_cli.config.composing import parse_overrides
from maml_cli.data.episodes import TaskSpec
from maml_cli.engine.adapt import check_support
from maml_cli.engine.training import train_and_evaluate
from tests.conftest import TINY, make_cfg, run_in_process
from tests.generated import examples

# --- the schemas -------------------------------------------------------------------------------------

SCHEMAS = [
    cls
    for _, cls in inspect.getmembers(schema, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == schema.__name__ and cls is not schema.Range
]
TARGETS = {  # the options that import code must be told which (docs/custom.md)
    "function": "dataset.target=tests.test_custom_code:sample_line",
    "custom": "model.target=tests.test_custom_code:make_net",
}


def numeric_kind(hint) -> type | None:
    """int or float for a number field (Optional, or a list of them, too); None for the others."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return numeric_kind(args[0])
    if typing.get_origin(hint) in (list, typing.List):  # noqa: UP006 (the schemas' own spelling)
        return numeric_kind(args[0]) if args else None
    return hint if hint in (int, float) else None


def numeric_fields(cls) -> list[tuple[str, type]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, numeric_kind(hints[f.name])) for f in dataclasses.fields(cls) if numeric_kind(hints[f.name])]


def in_range(value, allowed: schema.Range, kind: type) -> bool:
    """The test's own reading of a Range: what a value that passed validation must satisfy."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if kind is int and not isinstance(v, int):
            return False
        if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= schema.FLOAT32_MAX):
            return False
        low, high = allowed.low, allowed.high
        if low is not None and not (v > low if allowed.low_open else v >= low):
            return False
        if high is not None and not (v < high if allowed.high_open else v <= high):
            return False
    return True


def test_every_numeric_field_of_every_schema_declares_its_range():
    """A key added later cannot skip the check: its field must say what it takes."""
    registered = {
        *schema.DATASET_SCHEMAS.values(),
        *schema.MODEL_SCHEMAS.values(),
        *schema.ALGORITHM_SCHEMAS.values(),
        *schema.LOGGER_SCHEMAS.values(),
    }
    apps = {schema.TrainConfig, schema.EvalAppConfig, schema.AdaptAppConfig}
    sections = {typing.get_type_hints(app)[f.name] for app in apps for f in dataclasses.fields(app)}
    assert registered | apps | {s for s in sections if dataclasses.is_dataclass(s)} <= set(SCHEMAS)
    assert {schema.TrainLoopConfig, schema.EvalConfig, schema.DistributedConfig, schema.EvalOverrides} <= set(SCHEMAS)
    checked = 0
    for cls in SCHEMAS:
        for name, kind in numeric_fields(cls):
            allowed = schema.range_of(cls, name)
            assert allowed is not None, f"{cls.__name__}.{name} declares no range: opt(..., ge=, le=)"
            if kind is int:  # JAX holds counts and steps in int32, seeds in 32 bits
                assert allowed.low is not None and allowed.high is not None, f"{cls.__name__}.{name}"
                assert allowed.high <= schema.SEED_MAX, f"{cls.__name__}.{name}"
            else:
                assert allowed.finite, f"{cls.__name__}.{name}"
            default = getattr(cls(), name)
            assert default is None or in_range(default, allowed, kind), f"{cls.__name__}.{name}={default}"
            checked += 1
    assert checked >= 60


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.outer_lr=inf"], "train.outer_lr must be a finite number (got inf)"),
        (["algorithm.inner_lr=nan"], "algorithm.inner_lr must be a finite number (got nan)"),
        (["seed=99999999999999999999999"], "seed must be <= 4294967295"),
        (["seed=-1"], "seed must be >= 0 (got -1)"),
        (["model.hidden_sizes=[40,0]"], "model.hidden_sizes[1] must be >= 1 (got 0)"),
        (["experiment=omniglot_5w1s", "dataset.image_size=0"], "dataset.image_size must be >= 1"),
        (["experiment=miniimagenet_5w1s", "dataset.image_size=0"], "dataset.image_size must be >= 1"),
        (["experiment=omniglot_5w1s", "model.filters=0"], "model.filters must be >= 1 (got 0)"),
        (["eval.inner_steps=1000000"], "eval.inner_steps must be <= 10000"),
        (["train.steps=2147483648"], "train.steps must be <= 2147483647"),
        (["train.outer_lr=1e39"], "train.outer_lr must be within float32's range"),
        (["dataset.amplitude_max='inf'"], "dataset.amplitude_max must be a finite number"),
        (["algorithm=metasgd", "algorithm.lr_init_range=[0.1,inf]"], "algorithm.lr_init_range[1] must be a finite"),
        (["eval.episodes=10000000", "eval.inner_steps=100"], "eval.episodes x (eval.inner_steps + 1) must be"),
        (["train.steps=${dataset.name}"], "train.steps: While dereferencing interpolation"),
        (["train.devices='²'"], "train.devices must be auto or a number >= 1"),
    ],
)
def test_values_that_crashed_later_are_refused_by_validation(overrides, message):
    with pytest.raises(mc.UserError) as info:
        validate(make_cfg(*overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["1e23", "2.5", "2.0", "[1]", "", "nan"])
def test_omegaconf_refuses_a_float_or_a_list_for_an_int_field(value):
    """OmegaConf converts nothing lossy into an int field: 1e23 and 2.5 fail at composition."""
    with pytest.raises(mc.UserError, match="is not a valid integer"):
        mc.compose(None, [f"train.steps={value}"])


# --- generated config values --------------------------------------------------------------------------

SPECIAL_VALUES = [
    "0",
    "-1",
    "1",
    "2",
    "-0.0",
    "2.5",
    "1e-400",
    "1e23",
    "-1e23",
    "1e39",
    "1e400",
    str(2**31 - 1),
    str(2**31),
    str(2**32 - 1),
    str(2**32),
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "nan",
    "inf",
    "-inf",
    "'inf'",
    "'nan'",
    "",
    "null",
    "true",
    "[]",
    "[0]",
    "[1,2]",
    "[nan]",
    "[-1,3]",
    "[1e23]",
    "{}",
    "ü",
    "'ü'",
    "'Ω≈ç√'",
    "x" * 300,
    "'" + "9" * 400 + "'",
    "${seed}",
    "${dataset.name}",
]
VALUES = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(min_value=-5, max_value=2**40), max_size=3).map(lambda v: "[" + ",".join(map(str, v)) + "]"),
    st.text(max_size=20),
)


def train_keys(dataset: str, model: str, algorithm: str) -> list[str]:
    """Every numeric key of the train schema for one choice of dataset, model and algorithm."""
    sections = {
        "dataset.": schema.DATASET_SCHEMAS[dataset],
        "model.": schema.MODEL_SCHEMAS[model],
        "algorithm.": schema.ALGORITHM_SCHEMAS[algorithm],
        "train.": schema.TrainLoopConfig,
        "eval.": schema.EvalConfig,
        "distributed.": schema.DistributedConfig,
        "": schema.TrainConfig,
    }
    return [prefix + name for prefix, cls in sections.items() for name, _ in numeric_fields(cls)]


SECTIONS = {"dataset": schema.DATASET_SCHEMAS, "model": schema.MODEL_SCHEMAS, "algorithm": schema.ALGORITHM_SCHEMAS}


def check_in_range(cfg, cls, prefix: str = "") -> None:
    """Every numeric value of ``cfg`` in its range, read by the test itself."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in cfg:
            continue
        value = cfg[f.name]
        if f.name in SECTIONS and not prefix:
            check_in_range(value, SECTIONS[f.name][value.name], f"{f.name}.")
        elif dataclasses.is_dataclass(hints[f.name]):
            check_in_range(value, hints[f.name], f"{prefix}{f.name}.")
        elif numeric_kind(hints[f.name]) and value is not None:
            plain = value if isinstance(value, (int, float)) else list(value)
            allowed = schema.range_of(cls, f.name)
            assert in_range(plain, allowed, numeric_kind(hints[f.name])), f"{prefix}{f.name}={value!r} passed"


def one_line_refusal(error: Exception) -> None:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, text
    assert "Exception" not in text and "LexerNoViable" not in text, text


@pytest.mark.generated
@examples(ci=5, fuzz=1500)
@given(
    data=st.data(),
    dataset=st.sampled_from(sorted(schema.DATASET_SCHEMAS)),
    model=st.sampled_from(sorted(schema.MODEL_SCHEMAS)),
    algorithm=st.sampled_from(sorted(schema.ALGORITHM_SCHEMAS)),
)
def test_compose_refuses_a_value_in_one_line_or_keeps_it_in_range(data, dataset, model, algorithm):
    keys = data.draw(
        st.lists(st.sampled_from(train_keys(dataset, model, algorithm)), min_size=1, max_size=3, unique=True),
        label="keys",
    )
    values = [data.draw(VALUES, label=key) for key in keys]
    choices = [f"dataset={dataset}", f"model={model}", f"algorithm={algorithm}"]
    choices += [TARGETS[c] for c in (dataset, model) if c in TARGETS]
    try:
        cfg = mc.compose(None, [*choices, *(f"{k}={v}" for k, v in zip(keys, values))])
    except mc.UserError as e:
        one_line_refusal(e)
        return
    check_in_range(cfg, schema.TrainConfig)


def test_unicode_in_an_override_is_one_line_that_says_how_to_quote_it():
    with pytest.raises(mc.UserError) as info:
        mc.compose(None, ["dataset.path=/data/café"])
    text = str(info.value)
    assert text == (
        "cannot parse 'dataset.path=/data/café': 'é' (U+00E9) is allowed only inside quotes: "
        "write \"dataset.path='/data/café'\""
    )
    with pytest.raises(mc.UserError, match="'ü' \\(U\\+00FC\\) cannot be part of a key"):
        parse_overrides(["train.stüps=3"])


@pytest.mark.generated
@examples(ci=30, fuzz=3000)
@given(value=st.text(max_size=30))
def test_any_value_parses_or_the_message_names_a_quoting_that_does(value):
    """Hydra's lexer refuses many characters unquoted; the message's suggestion is a form it takes."""
    try:
        parse_overrides([f"dataset.path={value}"])
    except mc.UserError as e:
        one_line_refusal(e)
        text = str(e)
        if "write \"dataset.path='" in text and value.isprintable() and "\\" not in value:
            suggested = text.split('write "', 1)[1][:-1]
            (parsed,) = parse_overrides([suggested])
            assert parsed.value() == value.strip() or parsed.value() == value


# --- maml-eval's and maml-adapt's own keys --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny trained sinusoid run, as tests/test_reliability.py makes one."""
    run = tmp_path_factory.mktemp("values") / "run"
    train_and_evaluate(make_cfg(*TINY), run)
    return run


def app_keys() -> list[tuple[str, str]]:
    """(command, key) for every numeric key of maml-eval's and maml-adapt's schemas."""
    keys = [("maml-adapt", name) for name, _ in numeric_fields(schema.AdaptAppConfig)]
    keys += [("maml-eval", f"eval.{name}") for name, _ in numeric_fields(schema.EvalOverrides)]
    keys += [("maml-eval", name) for name, _ in numeric_fields(schema.EvalAppConfig)]
    return keys


# Values a command may take (each cheap to run: a few tasks, a few steps) or must refuse.
APP_VALUES = st.one_of(
    st.sampled_from([v for v in SPECIAL_VALUES if v not in (str(2**31 - 1), str(2**32 - 1))]),
    st.integers(min_value=-3, max_value=3).map(str),
)


def listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def refused_in_one_line(done, command: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"{command}: error: ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.generated
@examples(ci=6, fuzz=400)
@given(command_key=st.sampled_from(app_keys()), value=APP_VALUES)
def test_eval_and_adapt_keys_are_refused_in_one_line_or_used(tiny_run, command_key, value):
    command, key = command_key
    work = Path(tempfile.mkdtemp(prefix="maml-cli-values-"))
    try:
        (work / "support.csv").write_text("x,y\n-1,0.5\n0,0.1\n1,-0.4\n")
        if command == "maml-eval":
            args = [f"run_dir={tiny_run}", f"output={work / 'out' / 'eval.json'}"]
            args += [] if key == "eval.episodes" else ["eval.episodes=2"]
        else:
            args = [f"run_dir={tiny_run}", f"support={work / 'support.csv'}", "query=-1:1:3", f"out_dir={work / 'out'}"]
        before = listing(work), listing(tiny_run)
        done = run_in_process(command, *args, f"{key}={value}", cwd=work)
        if done.returncode != 0:
            refused_in_one_line(done, command)
            assert (listing(work), listing(tiny_run)) == before, "refused, yet created or changed something"
            return
        written = json.loads(
            (work / "out" / ("eval.json" if command == "maml-eval" else "predictions.json")).read_text()
        )
        leaf = key.split(".")[-1]
        recorded = written.get(leaf, written.get(f"eval_{leaf}"))
        if recorded is not None and value.strip("'").lstrip("-").isdecimal():
            assert recorded == int(value.strip("'")), (key, value, recorded)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- maml-adapt's CSV files ------------------------------------------------------------------------------

CELLS = st.one_of(
    st.floats(min_value=-10, max_value=10, allow_nan=False).map(lambda v: f"{v:.4g}"),
    st.integers(min_value=-5, max_value=5).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "1e39", "3e38", "", " ", "abc", "1;2", "x", "0x10", "1_0"]),
)
ROWS = st.lists(st.lists(CELLS, min_size=0, max_size=4), min_size=0, max_size=8)


def csv_text(rows: list[list[str]], header: bool) -> str:
    return ("x,y\n" if header else "") + "".join(",".join(row) + "\n" for row in rows)


def usable(rows: list[list[str]], widths: tuple[int, ...]) -> bool:
    """Whether the test itself would take these rows: each of an allowed width, all alike, every
    cell a finite float32 number, at least one row (a first row of words is a header)."""
    data = [r for r in rows if "".join(r).strip()]

    def number(cell):
        try:
            return float(cell)
        except ValueError:
            return None

    if data and all(number(c) is None for c in data[0]):
        data = data[1:]
    if not data or {len(r) for r in data} - set(widths) or len({len(r) for r in data}) > 1:
        return False
    values = [number(c) for r in data for c in r]
    return all(v is not None and math.isfinite(v) and abs(v) <= schema.FLOAT32_MAX for v in values)


QUERIES = st.one_of(
    st.builds(
        lambda a, b, n: f"{a}:{b}:{n}",
        st.sampled_from(["-5", "0", "nan", "inf", "-1e400", "1e5", "x", ""]),
        st.sampled_from(["5", "-5", "inf", "2.5"]),
        st.sampled_from(["0", "-1", "3", "1", "2.5", "", "99999999999", "1e3"]),
    ),
    ROWS.map(lambda rows: ("csv", rows)),
)


def previous_outputs(out: Path) -> None:
    """What an earlier maml-adapt left in out_dir: a refused run must leave it byte for byte."""
    out.mkdir()
    (out / "predictions.csv").write_text("x,y,y_before_adaptation\n0,1,2\n")
    (out / "predictions.json").write_text('{"predictions": [{"x": 0.0, "y": 1.0}]}\n')


@pytest.mark.generated
@examples(ci=8, fuzz=1500)
@given(support=ROWS, header=st.booleans(), query=QUERIES, huge=st.booleans())
def test_maml_adapt_on_generated_csv_files_predicts_whole_or_refuses_in_one_line(
    tiny_run, support, header, query, huge
):
    work = Path(tempfile.mkdtemp(prefix="maml-cli-csv-"))
    try:
        if huge:  # a long file: every row fine, the generated ones at the end
            support = [[f"{v:.3f}", f"{math.sin(v):.3f}"] for v in np.linspace(-5, 5, 3000)] + support
        (work / "support.csv").write_text(csv_text(support, header))
        if isinstance(query, tuple):
            (work / "query.csv").write_text(csv_text(query[1], header=False))
            query_arg, query_ok = str(work / "query.csv"), usable(query[1], (1, 2))
        else:
            query_arg, query_ok = query, None
        out = work / "out"
        previous_outputs(out)
        before = listing(work)
        done = run_in_process(
            "maml-adapt",
            f"run_dir={tiny_run}",
            f"support={work / 'support.csv'}",
            f"query={query_arg}",
            f"out_dir={out}",
        )
        if not usable([["x", "y"]] * header + support, (2,)) or query_ok is False:
            refused_in_one_line(done, "maml-adapt")  # a NaN, an extra column, a missing value: never exit 0
        if done.returncode != 0:
            refused_in_one_line(done, "maml-adapt")
            assert listing(work) == before, "refused, yet out_dir changed"
            return
        with open(out / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        record = json.loads((out / "predictions.json").read_text())
        assert len(rows) == len(record["predictions"]) == record["query_examples"] >= 1
        for row, predicted in zip(rows, record["predictions"]):
            assert math.isfinite(predicted["y"]) and math.isfinite(float(row["y_before_adaptation"]))
            assert float(row["y"]) == pytest.approx(predicted["y"], rel=1e-5, abs=1e-5)
            assert float(row["x"]) == pytest.approx(predicted["x"], rel=1e-5, abs=1e-5)
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "a temporary was left"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_maml_adapt_killed_while_writing_leaves_the_previous_predictions(tiny_run, tmp_path, monkeypatch):
    """Every file is written whole (maml_cli.atomic): a stop mid-write keeps the old one."""
    import maml_cli.atomic

    (tmp_path / "support.csv").write_text("x,y\n-1,0.5\n0,0.1\n1,-0.4\n")
    out = tmp_path / "out"
    previous_outputs(out)
    before = listing(out)

    fsync = os.fsync

    def killed(fd):
        if "predictions.csv" in os.readlink(f"/proc/self/fd/{fd}"):
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) once the new predictions are half on disk
        fsync(fd)

    monkeypatch.setattr(maml_cli.atomic.os, "fsync", killed)
    done = run_in_process(
        "maml-adapt", f"run_dir={tiny_run}", f"support={tmp_path / 'support.csv'}", "query=-1:1:50", f"out_dir={out}"
    )
    assert done.returncode == 130, done.stderr
    now = listing(out)
    assert {k: now.get(k) for k in before} == before, "predictions were replaced by a part of the new ones"
    assert not [name for name in now if name.startswith(".")], "a temporary was left"
    monkeypatch.undo()
    done = run_in_process(
        "maml-adapt", f"run_dir={tiny_run}", f"support={tmp_path / 'support.csv'}", "query=-1:1:50", f"out_dir={out}"
    )
    assert done.returncode == 0, done.stderr
    assert len((out / "predictions.csv").read_text().splitlines()) == 51


@pytest.mark.parametrize(
    "args,message",
    [
        (["query=-5:5:0"], "NUM must be in 1..1000000 (got 0)"),
        (["query=-5:5:100000000"], "NUM must be in 1..1000000"),
        (["query=nan:5:10"], "START must be a finite number"),
        (["query=-5:inf:10"], "STOP must be a finite number"),
        (["query=-5:5:ten"], "NUM must be a whole number"),
        (["out_dir={support}"], "is a file: give a folder"),
        (["out_dir={support}/sub"], "is a file, not a folder"),
        (["inner_steps=-1"], "inner_steps must be >= 0 or null (got -1)"),
        (["seed=4294967296"], "seed must be <= 4294967295"),
    ],
)
def test_maml_adapt_refuses_bad_values_in_one_line(tiny_run, tmp_path, args, message):
    support = tmp_path / "support.csv"
    support.write_text("x,y\n-1,0.5\n0,0.1\n1,-0.4\n")
    args = [a.replace("{support}", str(support)) for a in args]
    query = [] if any(a.startswith("query=") for a in args) else ["query=-1:1:3"]
    done = run_in_process("maml-adapt", f"run_dir={tiny_run}", f"support={support}", *query, *args, cwd=tmp_path)
    refused_in_one_line(done, "maml-adapt")
    assert message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["support.csv"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("x,y\n0.5,nan\n1,2\n", "support.csv, line 2, column 2 is nan: every value must be a finite number"),
        ("x,y\n0.5,0.1,3\n", "support.csv, line 2: 3 values; a support row needs 2 (x, y)"),
        ("x,y\n0.5,\n", "support.csv, line 2, column 2 is empty (a missing value)"),
        ("x,y\n0.5,1e400\n", "column 2 is inf: every value must be a finite number"),
        ("x,y\n0.5;1\n", "(columns are separated by commas)"),
        ("x,y\n", "holds no rows of numbers"),
        ("x,y\n1,2\n3\n", "line 3: 1 values; a support row needs 2 (x, y)"),
    ],
)
def test_maml_adapt_names_the_line_of_a_bad_support_file(tiny_run, tmp_path, text, message):
    (tmp_path / "support.csv").write_text(text)
    done = run_in_process(
        "maml-adapt", f"run_dir={tiny_run}", f"support={tmp_path / 'support.csv'}", "query=-1:1:3", cwd=tmp_path
    )
    refused_in_one_line(done, "maml-adapt")
    assert message in done.stderr


# --- arrays of the Python API -----------------------------------------------------------------------------

ARRAY_VALUES = st.one_of(
    st.floats(min_value=-10, max_value=10),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e39, 3e38, 0.0]),
)


@st.composite
def arrays(draw, rows):
    shape = draw(st.sampled_from([(rows, 1), (rows,), (rows, 2), (rows, 1, 1), ()]))
    values = np.asarray(draw(st.lists(ARRAY_VALUES, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    values = values.reshape(shape)
    kind = draw(st.sampled_from(["float32", "float64", "int", "object", "str", "list"]))
    if kind == "int":
        return np.nan_to_num(values, posinf=7, neginf=-7).clip(-1e9, 1e9).astype(np.int64)
    if kind == "object":
        flat = values.astype(object).ravel()
        if flat.size and draw(st.booleans()):
            flat[0] = None
        return flat.reshape(shape)
    if kind == "str":
        return values.astype(str)
    if kind == "list":
        return values.tolist()
    with np.errstate(over="ignore"):
        return values.astype(kind)


def finite_everywhere(a) -> bool:
    try:
        values = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return values.dtype.kind == "f" and bool(np.all(np.isfinite(values) & (np.abs(values) <= schema.FLOAT32_MAX)))


@pytest.mark.generated
@examples(ci=12, fuzz=2000)
@given(data=st.data(), rows=st.integers(min_value=0, max_value=6))
def test_run_adapt_and_predict_on_generated_arrays_predict_finite_or_refuse_in_one_line(tiny_run, data, rows):
    run = mc.load_run(tiny_run)
    support_x = data.draw(arrays(rows), label="support_x")
    support_y = data.draw(arrays(rows), label="support_y")
    query = data.draw(arrays(data.draw(st.integers(min_value=0, max_value=5))), label="query")
    try:
        learner = run.adapt(support_x, support_y)
    except mc.UserError as e:
        one_line_refusal(e)
        return
    assert finite_everywhere(support_x) and finite_everywhere(support_y), "a value that is not finite was taken"
    assert np.shape(support_x)[1:] == (1,) and len(support_x) >= 1
    try:
        predicted = learner.predict(query)
    except mc.UserError as e:
        one_line_refusal(e)
        return
    assert finite_everywhere(query) and np.shape(query)[1:] == (1,)
    assert predicted.shape == (len(query), 1) and np.all(np.isfinite(predicted))


@pytest.mark.parametrize(
    "labels,message",
    [
        ([0, 1, 2.5], "support_y[2] is 2.5: a label is a whole class index 0..4"),
        ([0, 1, 7], "support_y[2] is 7: a label is a whole class index 0..4 (the run's model has 5 classes)"),
        ([0, -1], "support_y[1] is -1"),
        ([0, 0, 2], "support_y has no example of class 1"),
        ([0, float("nan")], "support_y[1] is nan: every value must be a finite number"),
        ([[0], [1]], "support_y must hold one class index per example"),
        ([0, 1], "3 support examples (support_x) but 2 targets"),
    ],
)
def test_classification_labels_are_whole_class_indices_of_the_run(labels, message):
    spec = TaskSpec((2, 2, 1), 5, "classification")
    with pytest.raises(mc.UserError) as info:
        check_support(spec, np.zeros((3 if message.startswith("3 ") else len(labels), 2, 2, 1)), labels)
    assert message in str(info.value)
    x, y, used = check_support(spec, np.zeros((4, 2, 2, 1)), [0, 1, 2, 1.0])
    assert y.dtype == np.int32 and y.tolist() == [0, 1, 2, 1] and used == 3


def test_run_evaluate_checks_its_keywords_as_maml_eval_checks_its_keys(tiny_run):
    run = mc.load_run(tiny_run)
    for kwargs, message in (
        ({"episodes": 0}, "episodes must be >= 1"),
        ({"inner_steps": 10**6}, "inner_steps must be <= 10000"),
        ({"seed": 2**64}, "seed must be <= 4294967295"),
        ({"batch_size": float("nan")}, "'nan' is not a valid integer"),
        ({"dataset": {"name": "omniglot", "image_size": 0}}, "dataset.image_size must be >= 1"),
    ):
        with pytest.raises(mc.UserError, match=re.escape(message)):
            run.evaluate(**kwargs)
