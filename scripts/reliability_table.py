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
| 4 jobs (a sweep's) start together on one empty `MAML_CLI_CACHE`, Omniglot and `image_folder` | one job builds each dataset cache under an `flock` on `<entry>.lock` while the others wait (`waiting for pid N on HOST, which is building the cache ...`); the entry is written under a temporary name and renamed into place whole (`image_folder`: one folder holding `images.npy` and `classes.json`), so no job reads a part; the compiled programs (`$MAML_CLI_CACHE/jax`) are shared, JAX locking each read and write; all 4 train to the same metrics | `tests/test_shared_cache.py::test_jobs_that_start_together_share_one_cache_and_train_alike` |
| the job building a cache is `SIGKILL`ed midway, 3 others waiting | the kernel drops its lock; the next job removes the temporary it left, builds the entry and the 3 train to the same metrics as above; nothing partial, no lock or temporary is left | same test, second half |
| a compiled program cut short by a kill | JAX cannot decompress it, warns, and compiles instead of using it | (JAX's own behaviour: `jax/_src/compiler.py`, `_cache_read`) |
| `SIGTERM`, `SIGHUP`, `SIGUSR1` or `SIGUSR2`: a scheduler's preemption, or its warning before a time limit (`sbatch --signal=USR1@120`), a closed session | the current step finishes, a checkpoint is saved, exit code **75** (`EX_TEMPFAIL`: requeue me); the same command resumes. Ctrl-C (`SIGINT`) does the same with exit code 130 | `tests/test_train_eval.py::test_a_stop_signal_saves_a_checkpoint_and_the_run_resumes` |
| any stop signal, sent 1 to 3 times at any moment: start-up, compiling, training, a checkpoint being written, a validation | before training starts (or after it ends) the command stops at once with the same codes and one line (every file is written whole or not at all, so nothing is half-written); while training, further TERM, HUP or USR signals wait for the save under way, and only a second Ctrl-C stops at once, after any checkpoint being written is whole; never a traceback or a crash; the same command then ends where an uninterrupted run ends, bit for bit | `tests/test_generated_signals.py` (generated: see "Generated inputs and faults") |
| a bug of ours: any error that is not bad input | one line, `TOOL: internal error: TYPE: message (traceback in FILE); please report it`, exit code **70**; the traceback goes to `$MAML_CLI_CACHE/errors/` (or the system's temporary folder), never to the terminal; every generated test fails on it | `tests/test_boundary.py::test_an_unexpected_error_is_one_line_exit_70_and_its_traceback_in_a_file` |
| a file of a run directory deleted, cut short, filled with random bytes, made invalid YAML or JSON, a folder in its place (or a file in a folder's), or made unwritable (immutable) | a resume, `maml-eval`, `maml-adapt` and `maml-report` each either work (exit 0, what they write whole, readers changing nothing but their own records) or refuse with one line and exit 2, changing nothing; a damaged checkpoint is set aside and trained again, damaged metrics lines are skipped, an unwritable run is refused before its first write | `tests/test_generated_run_files.py` (generated) |
| `hydra.run.dir=/`, the home folder, or a folder holding files that are not a run's (`notes.txt`, a project) | refused before anything is written (`... is the root folder`, `... holds files that are not a maml-train run (notes.txt)`), unless `train.force_run_dir=true`; a sweep's `hydra.sweep.dir` likewise; `~` at the start of a path (not expanded there) is refused with the path to write instead | rows of the table below |
| `MAML_CLI_CACHE` or `MAML_CLI_COMPILE_CACHE` empty, blank, a file, a link to nothing, read-only, immutable or on a full disk; `HOME` unset, empty or relative; `TMPDIR` missing | refused before anything is written, with one line naming the variable (an empty path would have put the cache in the working directory); a usable one works, and nothing is written outside the run and the caches | `tests/test_generated_environment.py` (generated) |
| Omniglot without `dataset.path` on a machine without network (an offline compute node) | fails within about 10 s (a reachability check of the host, retries bounded): one line naming the two zips to fetch, and to pass their folder as `dataset.path` or put them in `<data_dir>/downloads/manual/`; nothing is left under `data_dir` | `tests/test_offline.py` |
| `maml-eval` or `maml-report` on a run (even a read-only one) | they read only: the run's lock file is tested with a shared lock, never created or written | `tests/test_generated_run_files.py`, `tests/test_generated_numbers.py` |
| `maml-adapt` killed while writing `predictions.csv` | the previous file stays whole: every file the tool produces goes through one helper (`maml_cli/atomic.py`: a temporary renamed into place), whose next write removes the killed writer's temporary | `tests/test_boundary.py::test_a_writer_killed_at_any_moment_leaves_the_old_file_or_the_new_one` (generated), `tests/test_generated_values.py` |
| a sweep job under submitit (`launcher=slurm`, `launcher=submitit_local`) sent `SIGUSR1` or `SIGTERM` | it saves, then hands itself back to submitit, which requeues it (`scontrol requeue` on SLURM); the requeued job resumes in its own folder and trains to the end; the same sweep command started again finds every job done | `tests/test_cluster.py::test_submitit_local_sweep_jobs_are_preempted_requeued_and_resumed` |
| `config.yaml` edited by hand to another model | every checkpoint records its config and run id (`checkpoints/N/provenance/metadata`); `maml-train` (resuming), `maml-eval` and `maml-adapt` refuse with exit 2 and the differences, and change nothing in the folder | `tests/test_tampered_runs.py::test_a_refused_tampered_run_is_left_as_it_was`, rows 60-62 below |
| a checkpoint copied in from another run (same config) | refused the same way (`comes from another run`): never restored, never deleted by training on | same test, rows 63-64 |
| `config.yaml` deleted | `maml-train` refuses to resume (it could mix two experiments); `maml-eval` says the folder is no run | same test, rows 65-66 |
| `data.json` deleted | recovered: `maml-eval` and `maml-adapt` take the input shape from `config.yaml` (an `image_folder` run with `dataset.channels=null` says to run `maml-train` once to write it again), and a resuming `maml-train` writes it again | `tests/test_tampered_runs.py::test_a_deleted_data_json_is_recovered` |
| `metrics.jsonl` cut mid-line (a crash while writing) | recovered: readers skip the partial line (`maml-eval checkpoint=best`, `maml-report`); a resuming `maml-train` rewrites the file whole | `tests/test_tampered_runs.py::test_metrics_cut_mid_line_are_read_past_and_repaired` |
| a long run, stopped by `SIGTERM` and resumed every 5 minutes for an hour | metrics equal an uninterrupted run's, memory flat, checkpoints bounded, no leaked files: see "Soak" below | `scripts/soak.py` (60 min; not in the test run) |

## Files people have

Image folders hold what cameras, scrapers, file managers and zip tools leave. `dataset=image_folder`,
the MiniImageNet folders, `maml-adapt`'s support and query folders and the Omniglot zips share one
reader (`maml_cli/data/image_folder.py`); each case has one behaviour, tested:

| in the folder | what happens | test |
|---|---|---|
| `.DS_Store`, `._name.png` (AppleDouble), any hidden file or folder, `Thumbs.db`, `desktop.ini`, `__MACOSX/`, `@eaDir/` (Synology), a `notes.txt` | skipped without a word | `tests/test_image_folder.py::test_junk_is_skipped_and_every_image_mode_is_converted`, `test_maml_adapt_skips_junk_and_names_a_broken_file` |
| an Omniglot zip made on a Mac (`__MACOSX/`, `._0001_01.png`, `.DS_Store` entries) | skipped; the arrays equal those of the plain zip | `test_image_folder.py::test_omniglot_zips_from_a_mac_are_read` |
| palette (`P`) images, with or without a transparent colour | converted; the transparent parts laid on white | `test_junk_is_skipped_and_every_image_mode_is_converted` |
| 16-bit grey PNG (`I;16`) | scaled to 8 bits (value / 257; Pillow's own conversion would clip everything above 255 to white) | same test |
| CMYK JPEG | converted to RGB | same test |
| RGBA and grey + alpha | laid on white, as a viewer shows them | same test |
| bilevel (`1`) | converted | same test |
| an empty file, a JPEG or PNG cut short, a file that is no image | one line naming the file, exit 2 (`... is empty (0 bytes)`, `... is not a readable image (OSError: image file is truncated ...)`) | rows 41, 48-50 below; `maml-adapt`: `test_maml_adapt_skips_junk_and_names_a_broken_file` |
| an image over Pillow's decompression-bomb limit (89.5 million pixels: its warning band as well as its error above twice that) | one line naming the file: `too large to decode safely` | rows 51-52 |
| a symbolic link that loops, or whose target is gone | one line naming the link | rows 53-54 |
| a file or class folder whose name is not UTF-8 (Latin-1 from an old zip or a Windows share) | one line showing the name's bytes escaped, with the command that renames a whole folder | rows 55-56 |
| an Omniglot zip that is empty, cut short, or holds a damaged image | one line naming the zip (and the image) | rows 57-59 |
| 100,000 files | listed in seconds: see below | `scripts/bench_listing.py` |

{listing}

{soak}

{generated}

## Bad input: exit code 2, one message, nothing created

Written by `python scripts/reliability_table.py` ({date}, {machine}). Each row below is a test
(`tests/test_reliability.py`) that runs the command's console-script entry point (its `main`, as
the installed script calls it) from a folder `<tmp>` holding `run/` (a trained tiny sinusoid run),
`omniglot/` (a tiny Omniglot source), `notes.txt`, `empty/`, `damaged/` (a run whose newest
checkpoint was cut short), `coded/` (a run whose config names a model of its own), `folders/` and
`hostile/` (broken class-per-folder image sets: `tests/image_fakes.py`), `zips/` (damaged Omniglot
zips), `support.csv`, and tampered copies of `run/`: `edited/` (config.yaml edited to another
model), `copied/` (its newest checkpoint taken from another run of the same config),
`no_config/` (config.yaml deleted), `lock_folder/` (its lock file replaced by a folder) and
`dangling` (a link to nothing); `VAR=value`
before a command sets an environment variable. Each row checks exit code 2, no traceback, one
`TOOL: error:` message equal to the one shown here, and no new file or folder.

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
            command = " ".join([*(f"{k}={v}" for k, v in case.env), *case.command]).replace("{tmp}", "<tmp>")
            rows.append(f"| {i} | [{case.what}](#{i}-{_anchor(case.what)}) | `{command}` | {code} |")
            sections.append(f"### {case.what}\n\n`{command}` exits {code}:\n\n```text\n{stderr}```\n")
            print(f"{i:2d} {case.what}: exit {code}", file=sys.stderr)
    machine = f"{platform.machine()} {platform.system()}, Python {platform.python_version()}"
    kept = _kept_sections(args.out)
    text = HEADER.format(date=time.strftime("%Y-%m-%d"), machine=machine, **kept) + "\n".join(rows) + "\n\n"
    text += "\n".join(f"{s}" for s in _numbered(sections))
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)


def _kept_sections(doc: Path) -> dict:
    """The measured sections other scripts' figures fill (bench_listing.py, soak.py,
    generated_tests.py), kept as they are in the current document: this script does not measure them."""
    text = doc.read_text() if doc.is_file() else ""
    kept = {}
    for key, heading in (
        ("listing", "### Listing 100,000 files"),
        ("soak", "## Soak"),
        ("generated", "## Generated inputs and faults"),  # scripts/generated_tests.py
    ):
        start = text.find(heading)
        end = text.find("\n## ", start + len(heading)) if start >= 0 else -1
        kept[key] = text[start:end].strip() if start >= 0 and end >= 0 else f"{heading}\n\n(not measured yet)"
    return kept


def _anchor(what: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in what.lower()).strip("-")


def _numbered(sections):
    # The headings stay the plain mistake (the test finds rows by it); an anchor before each gives
    # the table's links a stable target.
    for i, (s, case) in enumerate(zip(sections, BAD_INPUTS), 1):
        yield f'<a id="{i}-{_anchor(case.what)}"></a>\n\n{s}'


if __name__ == "__main__":
    main()
