"""maml-eval and maml-report at their edges: a record goes into its own run (or a folder that is no
run) and maml-report reads a record only for the run it was scored from; --out is never a run; a
sweep's jobs are all checked before the first is scored; a checkpoint a live trainer deleted
between choosing and reading is chosen again; copies of one run are one run; a folder whose name is
not UTF-8 is refused (maml-eval) or listed as damaged (maml-report); every maml-report error is one
line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from maml_cli.atomic import write_text
from maml_cli.commands.evaluate import check_output
from maml_cli.engine.evaluate import evaluate_run
from maml_cli.engine.training import train_and_evaluate
from maml_cli.errors import UserError
from maml_cli.run import reader
from maml_cli.run.directory import RunLock, is_run
from maml_cli.run.provenance import CheckpointMissing, run_id_of
from tests.conftest import TINY, make_cfg, run_in_process
from tests.generated import examples
from tests.test_generated_numbers import runs_strategy, snapshot, write_run

# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """Two real runs of the tiny sinusoid (seeds 0 and 1: two run ids), checkpoints at 10 and 20."""
    base = tmp_path_factory.mktemp("pair")
    for seed in (0, 1):
        train_and_evaluate(make_cfg(*TINY, f"seed={seed}"), base / str(seed))
    return base


@pytest.fixture
def sweep(trained_pair, tmp_path):
    """A fresh copy of the two runs, RUNS/0 and RUNS/1, for a test to change."""
    root = tmp_path / "RUNS"
    shutil.copytree(trained_pair, root)
    return root


def _eval(*args, expect=0):
    done = run_in_process("maml-eval", "progress=false", *map(str, args))
    assert done.returncode == expect, done.stderr
    return done


def _report(*args, expect=0):
    done = run_in_process("maml-report", *map(str, args))
    assert done.returncode == expect, done.stderr
    return done


def _one_line_error(done, command: str) -> None:
    assert done.returncode == 2 and done.stderr.startswith(f"{command}: error: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def _runs_list(text: str) -> dict[str, str]:
    """The report's run list: folder -> its line."""
    return {line.split("`")[1]: line for line in text.splitlines() if line.startswith("- `")}


# --- 1. a record goes into its own run, or into a folder that is no run --------------------------------


def test_a_record_is_refused_in_another_run_and_under_a_name_that_is_not_a_record(sweep, tmp_path):
    run0, run1 = sweep / "0", sweep / "1"
    before = {run: snapshot(run) for run in (run0, run1)}
    for output, says in [
        (run0 / "eval.json", f"is inside the run {run0}, not the run scored"),
        (run0 / "mine.json", f"is inside the run {run0}, not the run scored"),
        (run1 / "config.json", "would add config.json to the run: inside a run a record is named eval*.json"),
        (run1 / "checkpoints" / "eval.json", "is inside checkpoints/ of the run"),
        (run1 / ".." / "0" / "eval.json", "not the run scored"),
    ]:
        refused = _eval(f"run_dir={run1}", f"output={output}", expect=2)
        _one_line_error(refused, "maml-eval")
        assert says in refused.stderr and "inner step" not in refused.stdout  # refused before scoring
    # -m: the second job's record would land in the first's run; refused before either is scored.
    refused = _eval("-m", f"run_dir={run0},{run1}", f"output={run0 / 'eval_both.json'}", expect=2)
    _one_line_error(refused, "maml-eval")
    assert {run: snapshot(run) for run in (run0, run1)} == before
    # Its own run, under an eval*.json name; or a folder that is no run (the sweep's own folder).
    _eval(f"run_dir={run1}", f"output={run1 / 'eval_mine.json'}")
    _eval(f"run_dir={run1}", f"output={sweep / 'run1.json'}")
    assert json.loads((sweep / "run1.json").read_text())["run_id"] == run_id_of(run1)
    assert snapshot(run0) == before[run0]


def _tree(root: Path) -> None:
    """Two runs (R/0, R/1), a folder that is no run, and links into the runs."""
    for name in ("0", "1"):
        run = root / "R" / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("seed: 0\n")
        (run / "metrics.jsonl").write_text("")
    (root / "R" / "0" / "eval_x.json").write_text('{"per_step": []}')  # a record, replaceable
    (root / "plain").mkdir()
    (root / "R" / "link0").symlink_to(root / "R" / "0")
    (root / "plain" / "to1").symlink_to(root / "R" / "1")
    (root / "plain" / "eval_link.json").symlink_to(root / "R" / "0" / "eval_x.json")


def _entries(root: Path) -> dict:
    """Every entry under ``root``: a link as its target (not read through), a file as its bytes."""
    return {
        str(p.relative_to(root)): ("link", os.readlink(p)) if p.is_symlink() else None if p.is_dir() else p.read_bytes()
        for p in root.rglob("*")
    }


FOLDERS = ["R/0", "R/1", "R/1/checkpoints", "R", "plain", "plain/to1", "R/link0", "R/1/../0", "R/0/../1"]
NAMES = ["eval.json", "eval_x.json", "evaluation.json", "config.json", "metrics.json", "mine.json", "x.txt"]


@pytest.mark.generated
@examples(ci=25, fuzz=500)
@given(
    folder=st.sampled_from(FOLDERS),
    name=st.sampled_from(NAMES),
    scored=st.sampled_from(["R/0", "R/1"]),
    through_link=st.booleans(),
)
def test_a_record_lands_in_its_own_run_as_eval_json_or_outside_every_run(
    tmp_path_factory, folder, name, scored, through_link
):
    root = tmp_path_factory.mktemp("places")
    _tree(root)
    output = root / "plain" / "eval_link.json" if through_link else root / folder / name
    scored_run = Path(os.path.realpath(root / scored))
    before = _entries(root)
    try:
        check_output(OmegaConf.create({"output": str(output), "run_dir": str(root / scored)}))
        accepted = True
    except UserError as e:
        accepted = False
        assert "\n" not in str(e)
        assert _entries(root) == before  # a refusal writes nothing
    # Where a record written there lands, seen on disk: the files that changed.
    landed = []
    if accepted:
        write_text(output, '{"per_step": [], "written": true}')
        after = _entries(root)
        landed = [root / f for f in after if after[f] != before.get(f, b"")]
        assert len(landed) == 1
    for place in landed:  # accepted: outside every run, or in the scored run itself as eval*.json
        run = next((p for p in place.parents if is_run(p)), None)
        assert run is None or (run == scored_run and place.parent == run and place.name.startswith("eval")), place
        assert run is None or place.suffix == ".json"
    # Refused only where it would land in a run: no other place is refused.
    where = Path(os.path.realpath(output.parent)) / output.name
    in_a_run = any(is_run(p) for p in where.parents)
    ours = where.parent == scored_run and where.name.startswith("eval") and where.suffix == ".json"
    assert accepted == (not in_a_run or ours), output


def test_maml_report_reads_a_record_only_for_the_run_it_was_scored_from(sweep):
    run0, run1 = sweep / "0", sweep / "1"
    _eval(f"run_dir={run1}")
    record = json.loads((run1 / "eval.json").read_text())
    assert record["run_id"] == run_id_of(run1) and run_id_of(run0) != run_id_of(run1)
    # run 1's record put into run 0 (by hand, or by an older maml-eval's output=): left out, said so.
    shutil.copy(run1 / "eval.json", run0 / "eval.json")
    text = _report(sweep).stdout
    runs = _runs_list(text)
    assert "eval.json is a record of another run (run id" in runs["0"] and "left out" in runs["0"]
    assert "another run" not in runs["1"]
    (row,) = [line for line in text.splitlines() if line.startswith("| `")]
    assert row.split("|")[2].strip() == "2"  # two runs: validation over both seeds ...
    assert row.count("(one seed)") == 1  # ... the test numbers of run 1 alone
    # A record written before records carried the run id: told by the run it names.
    (run0 / "eval.json").write_text(json.dumps({k: v for k, v in record.items() if k != "run_id"}))
    assert (
        f"eval.json is a record of another run (scored from {run1.resolve()}): left out"
        in _runs_list(_report(sweep).stdout)["0"]
    )
    # A copied folder keeps its run's id: its record is its run's, wherever the folder now is.
    shutil.rmtree(run0)
    shutil.copytree(run1, sweep / "copy")
    text = _report(sweep).stdout
    assert "another run" not in text
    assert "a copy of `1` (the same run id" in _runs_list(text)["copy"]


# --- 2. --out is never a run --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["a run not read", "inside a run not read", "a run read", "inside a run read", "a job folder read"],
)
def test_report_out_is_never_a_run(tmp_path, where):
    sweep, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    write_run(sweep / "0", _spec())
    write_run(elsewhere / "7", _spec())
    (elsewhere / "7" / "checkpoints").mkdir()  # a run (is_run): config.yaml and a record of training
    job = sweep / "1"  # a job that failed before it wrote its config.yaml: read, though no run by is_run
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=1"]))
    out = {
        "a run not read": elsewhere / "7",
        "inside a run not read": elsewhere / "7" / "reports",
        "a run read": sweep / "0",
        "inside a run read": sweep / "0" / "plots" / "x",
        "a job folder read": job,
    }[where]
    before = snapshot(tmp_path)
    done = run_in_process("maml-report", sweep, "--out", out)
    _one_line_error(done, "maml-report")
    assert "which maml-report only reads: pass --out DIR" in done.stderr
    assert done.stdout == "" and snapshot(tmp_path) == before  # refused before anything is read or written


# --- 3. maml-eval -m: every job checked before the first is scored ---------------------------------------


def test_a_sweep_whose_second_job_names_a_missing_checkpoint_scores_nothing(sweep):
    run0, run1 = sweep / "0", sweep / "1"
    shutil.rmtree(run1 / "checkpoints" / "20")
    before = {run: snapshot(run) for run in (run0, run1)}
    refused = _eval("-m", f"run_dir={run0},{run1}", "checkpoint=20", expect=2)
    _one_line_error(refused, "maml-eval")
    assert f"no checkpoint for step 20 in {run1 / 'checkpoints'}; available: 10" in refused.stderr
    assert "inner step" not in refused.stdout
    assert {run: snapshot(run) for run in (run0, run1)} == before  # run 0's record was not written
    shutil.rmtree(run1 / "checkpoints" / "10")  # no checkpoint at all
    before = {run: snapshot(run) for run in (run0, run1)}
    refused = _eval("-m", f"run_dir={run0},{run1}", expect=2)
    _one_line_error(refused, "maml-eval")
    assert "has no finished checkpoint yet" in refused.stderr
    assert {run: snapshot(run) for run in (run0, run1)} == before


# --- 5. a chosen checkpoint deleted by the live trainer is chosen again ------------------------------------


def _delete_first_restored(monkeypatch, run: Path) -> list:
    """Delete the checkpoint chosen for the first restore just before it is read, as a trainer with
    keep_best=1 does when a better validation arrives; returns the steps asked for."""
    asked, original = [], reader.restore_state

    def restore_state(exp, run_dir, step=None):
        asked.append(step)
        if len(asked) == 1:
            shutil.rmtree(Path(run_dir) / "checkpoints" / str(step))
        return original(exp, run_dir, step)

    monkeypatch.setattr(reader, "restore_state", restore_state)
    return asked


def _app(run: Path, *overrides):
    return make_cfg(f"run_dir={run}", "progress=false", *overrides, config_name="eval")


def test_a_best_checkpoint_deleted_by_the_live_trainer_is_chosen_again(sweep, monkeypatch):
    run = sweep / "0"
    asked = _delete_first_restored(monkeypatch, run)
    with RunLock(run):  # the run is being trained
        record = evaluate_run(_app(run, "checkpoint=best"))
    first, again = asked
    assert first != again and record["checkpoints"] == [again]
    assert record["checkpoint_selection"].startswith("best:1")


def test_a_checkpoint_missing_in_a_run_nobody_trains_is_bad_input(sweep, monkeypatch):
    run = sweep / "0"
    asked = _delete_first_restored(monkeypatch, run)
    with pytest.raises(CheckpointMissing, match="no checkpoint for step"):
        evaluate_run(_app(run, "checkpoint=best"))
    assert len(asked) == 1  # not chosen again: nobody trains the run


def test_a_step_the_user_gave_is_never_swapped_for_another(sweep, monkeypatch):
    run = sweep / "0"
    asked = _delete_first_restored(monkeypatch, run)
    with RunLock(run), pytest.raises(CheckpointMissing, match="no checkpoint for step 10"):
        evaluate_run(_app(run, "checkpoint=10"))
    assert asked == [10]


# --- 6. copies of one run are one run -----------------------------------------------------------------


def _spec(seed: int = 0, **changes) -> dict:
    spec = {
        "dataset": "sinusoid",
        "seed": seed,
        "math": {"algorithm.inner_lr": 0.01, "train.steps": 20, "eval.episodes": 20},
        "not_math": {},
        "steps_done": 20,
        "nonfinite": False,
        "evaluated": True,
        "eval_options": {},
        "test": [0.5, 0.25 + 0.01 * seed],
        "flagged": False,
        "overrides": True,
        "damage": None,
    }
    return {**spec, **changes}


def _with_run_id(run: Path, run_id: str) -> None:
    (run / "environment.json").write_text(json.dumps({"sessions": [{"run_id": run_id}]}))


@pytest.mark.generated
@examples(ci=3, fuzz=200)
@given(specs=runs_strategy, copies=st.lists(st.integers(0, 3), min_size=7, max_size=7))
def test_copies_of_a_run_change_nothing_but_the_run_list(tmp_path_factory, specs, copies):
    alone, copied = tmp_path_factory.mktemp("alone"), tmp_path_factory.mktemp("copied")
    for i, spec in enumerate(specs):
        for root in (alone, copied):
            write_run(root / str(i), spec)
            _with_run_id(root / str(i), f"run{i}")
        for c in range(copies[i]):
            shutil.copytree(copied / str(i), copied / f"copy{i}_{c}")

    without, with_copies = run_in_process("maml-report", alone), run_in_process("maml-report", copied)

    assert without.returncode == with_copies.returncode == 0, with_copies.stderr
    tables = [
        [line.replace(str(root), "ROOT") for line in done.stdout.splitlines() if line.startswith("| `")]
        for done, root in ((without, alone), (with_copies, copied))
    ]
    assert tables[0] == tables[1]  # every group counts each run once, with the same numbers
    listed = _runs_list(with_copies.stdout)
    for i in range(len(specs)):
        for c in range(copies[i]):
            assert f"a copy of `{i}` (the same run id run{i}): counted once, there" in listed[f"copy{i}_{c}"]
        if copies[i]:
            assert "counted once, here" in listed[str(i)]


def test_six_copies_of_one_run_are_one_run(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", _spec())
    _with_run_id(sweep / "0", "abc")
    for i in range(1, 6):
        shutil.copytree(sweep / "0", sweep / str(i))
    write_run(sweep / "6", _spec(seed=1))  # another run of the same experiment: another seed
    _with_run_id(sweep / "6", "def")
    text = _report(sweep).stdout
    (row,) = [line for line in text.splitlines() if line.startswith("| `")]
    assert row.split("|")[2].strip() == "2" and "(one seed)" not in row  # two runs, not seven
    with open(sweep / "report.csv") as f:
        copies = {r.split(",")[0]: r.rstrip().split(",")[-1] for r in f.read().splitlines()[1:]}
    assert copies == {"0": "", "1": "0", "2": "0", "3": "0", "4": "0", "5": "0", "6": ""}


# --- 7. a folder whose name is not UTF-8 ------------------------------------------------------------


def test_a_run_whose_name_is_not_utf8_is_refused_by_maml_eval_and_damaged_for_maml_report(trained_pair, tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    latin = Path(os.fsdecode(bytes(root) + b"/lat\xe9n"))
    shutil.copytree(trained_pair / "0", latin)
    refused = _eval(f"run_dir='{latin}'", expect=2)
    _one_line_error(refused, "maml-eval")
    assert "lat\\xe9n has a name that is not UTF-8" in refused.stderr
    assert "convmv" in refused.stderr and "damaged" not in refused.stderr
    done = _report(root)
    assert "`lat\\xe9n`: damaged (its path: " in done.stdout and "has a name that is not UTF-8 text" in done.stdout
    assert (root / "report.md").read_bytes().decode("utf-8") == done.stdout  # written as UTF-8 text
    assert "| 1 | damaged |" in done.stdout  # listed, not averaged
    named = Path(os.fsdecode(bytes(tmp_path) + b"/r\xe9.json"))  # output= with such a name: refused too
    refused = _eval(f"run_dir={trained_pair / '0'}", f"output='{named}'", expect=2)
    assert "has a name that is not UTF-8" in refused.stderr and not named.exists()


# --- 4. every maml-report error is one line ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv, says",
    [
        ([], "the following arguments are required: dir"),
        (["{sweep}", "--bogus"], "unrecognized arguments: --bogus"),
        (["{sweep}", "--out="], "argument --out: is empty"),
        (["{sweep}", "--out", ""], "argument --out: is empty"),
        (["--out=", "{sweep}"], "argument --out: is empty"),
        ([""], "argument dir: is empty"),
        (["{sweep}", "--out"], "argument --out: expected one argument"),
    ],
)
def test_every_report_error_is_one_line(tmp_path, argv, says):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", _spec())
    before = snapshot(tmp_path)
    done = run_in_process("maml-report", *[a.format(sweep=sweep) for a in argv], cwd=tmp_path)
    _one_line_error(done, "maml-report")
    assert says in done.stderr and "usage:" not in done.stderr
    assert snapshot(tmp_path) == before
