"""Write docs/reliability.md: every bad input of tests/bad_inputs.py run through the installed
console scripts, with the exact message each printed and its exit code.

    python scripts/reliability_table.py            # rewrites docs/reliability.md (about a minute)

tests/test_reliability.py runs the same rows and fails when the document no longer matches.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.bad_inputs import BAD_INPUTS  # noqa: E402
from tests.test_reliability import listing, make_workspace, run_case  # noqa: E402

HEADER = """\
# Reliability: bad input and faults

## Faults: what a run survives (each a test)

| fault | what happens | test |
|---|---|---|
| `SIGKILL` at random moments, several seeds, one while a checkpoint is being written | the same command resumes from the newest complete checkpoint; final parameters and `metrics.jsonl` (timing fields aside) equal an uninterrupted run's, bit for bit | `tests/test_faults.py::test_sigkill_at_random_moments_loses_nothing` (one seed by default, more with `-m slow`) |
| newest checkpoint truncated, or deleted | the damaged one is moved to `damaged_checkpoints/` with a warning, training restarts from the one before; the result is the same as uninterrupted | `test_faults.py::test_truncated_or_deleted_newest_checkpoint_loses_nothing` |
| a second `maml-train` on a run directory another live process trains | refused with exit 2 before anything is written: `... is being trained by pid N on HOST, since ...`; the lock (`flock` on `RUN/.lock`) dies with its process, even by `SIGKILL` | `test_faults.py::test_a_live_run_directory_is_locked_and_a_dead_lock_is_not` |
| `maml-eval` while the run trains | reads the newest complete checkpoint: Orbax renames a checkpoint into place only when it is whole, maml-eval opens checkpoints read-only (it never deletes or creates one) and reads again if the trainer drops the one it was reading; `config.yaml` and `metrics.jsonl` are replaced atomically | `test_faults.py::test_a_live_run_directory_is_locked_and_a_dead_lock_is_not` |
| disk full or read-only run directory while training | exit 2: `cannot write checkpoint N to ...: No space left on device; the checkpoints already there (...) are intact`; they restore | `test_faults.py::test_a_failed_write_is_a_clear_error_and_earlier_checkpoints_stay_readable` |
| a config refused by validation | exit 2 and no run directory (checked before Hydra creates one, for every job of a sweep; a single run that fails later removes its folder when it holds only Hydra's files) | the table below: each row checks that nothing was created |
| one job of a sweep fails while running (a diverging step size, a crash) | the other jobs run to the end; the failed job's folder keeps its error in `train.log` (`[ERROR] ...`), one line names it on stderr, and the sweep exits 1 after the last job; an Optuna search counts the trial as the worst value and goes on; `maml-report` lists the job as `failed` | `tests/test_cluster.py::test_joblib_sweep_with_a_failing_job_then_maml_report`, `test_optuna_search_goes_on_past_a_failed_trial` |
| a damaged dataset cache | rebuilt from the source with a warning (exit 0) | `tests/test_omniglot.py::test_cache_is_reused_and_keyed_by_settings` |
| an image folder changed after it was cached (an image added or replaced) | read again into a new cache (the key is every file's name, size and modification time); an interrupted read leaves no partial cache | `tests/test_image_folder.py::test_the_cache_is_reused_and_read_again_when_the_folder_changes` |

## Bad input: exit code 2, one message, nothing created

Written by `python scripts/reliability_table.py` ({date}, {machine}). Each row below is a test
(`tests/test_reliability.py`) that runs the command's console-script entry point (its `main`, as
the installed script calls it) from a folder `<tmp>` holding `run/` (a trained tiny sinusoid run),
`omniglot/` (a tiny Omniglot source), `notes.txt`, `empty/`, `damaged/` (a run whose newest
checkpoint was cut short), `coded/` (a run whose config names a model of its own) and `folders/`
(broken class-per-folder image sets: `tests/image_fakes.py`), and checks exit code 2, no
traceback, one `TOOL: error:` message equal to the one shown here, and no new file or folder.

| # | mistake | command | exit |
|---|---|---|---|
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = make_workspace(Path(tmp) / "workspace")
        before = listing(workspace)
        rows, sections = [], []
        for i, case in enumerate(BAD_INPUTS, 1):
            code, stderr, _ = run_case(case, workspace)
            created = listing(workspace) - before
            if code != 2 or created or "Traceback" in stderr:
                raise SystemExit(f"{case.what}: exit {code}, created {sorted(created)}\n{stderr}")
            command = " ".join(case.command).replace("{tmp}", "<tmp>")
            rows.append(f"| {i} | [{case.what}](#{i}-{_anchor(case.what)}) | `{command}` | {code} |")
            sections.append(f"### {case.what}\n\n`{command}` exits {code}:\n\n```text\n{stderr}```\n")
            print(f"{i:2d} {case.what}: exit {code}", file=sys.stderr)
    machine = f"{platform.machine()} {platform.system()}, Python {platform.python_version()}"
    text = HEADER.format(date=time.strftime("%Y-%m-%d"), machine=machine) + "\n".join(rows) + "\n\n"
    text += "\n".join(f"{s}" for s in _numbered(sections))
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)


def _anchor(what: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in what.lower()).strip("-")


def _numbered(sections):
    # The headings stay the plain mistake (the test finds rows by it); an anchor before each gives
    # the table's links a stable target.
    for i, (s, case) in enumerate(zip(sections, BAD_INPUTS), 1):
        yield f'<a id="{i}-{_anchor(case.what)}"></a>\n\n{s}'


if __name__ == "__main__":
    main()
