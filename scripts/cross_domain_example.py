"""An Omniglot-trained run used on images it never saw: cross-domain maml-eval and maml-adapt on a
handwriting-like set of drawn glyphs (scripts/make_image_folder.py glyphs), written into
docs/results.md (section `cross-domain-glyphs`).

    python scripts/cross_domain_example.py --run runs/omniglot_5w1s [--work /tmp/glyphs] [--episodes 600]

The run is the README's `maml-train experiment=omniglot_5w1s dataset.path=... hydra.run.dir=...`.
Steps: draw the glyph set (100 classes x 20, dark ink on white, 105x105 PNG); score the run on the
run's own Omniglot test split and on 5-way 1-shot glyph tasks, with the glyphs inverted (bright ink
on black, as Omniglot is read) and as drawn; then one glyph task through maml-adapt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, replace_section, today  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args) -> str:
    print("$", " ".join(str(a) for a in args), flush=True)
    done = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{args[0]} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def steps(record: dict):
    per = record["per_step"]
    return per[0], per[-1]


def fmt(row: dict) -> str:
    return f"{100 * row['mean']:.2f} +- {100 * row['ci95']:.2f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="an omniglot_5w1s run directory")
    p.add_argument("--work", type=Path, default=Path("/tmp/maml-cli-glyphs"))
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--no-docs", action="store_true")
    a = p.parse_args()
    glyphs, task = a.work / "glyphs", a.work / "task"
    if not glyphs.is_dir():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "make_image_folder.py"),
                "glyphs",
                str(glyphs),
                "--classes",
                "100",
                "--per-class",
                "20",
            ],
            check=True,
        )
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_image_folder.py"),
            "task",
            str(glyphs),
            str(task),
            "--ways",
            "5",
            "--shots",
            "1",
            "--query",
            "5",
            "--seed",
            "0",
        ],
        check=True,
    )
    episodes = f"eval.episodes={a.episodes}"
    results = {}
    run("maml-eval", f"run_dir={a.run}", episodes, f"output={a.work / 'omniglot.json'}")
    results["omniglot"] = json.loads((a.work / "omniglot.json").read_text())
    for invert in ("true", "false"):
        run(
            "maml-eval",
            f"run_dir={a.run}",
            "dataset=image_folder",
            f"dataset.path={glyphs}",
            f"dataset.invert={invert}",
            episodes,
            f"output={a.work / f'glyphs_invert_{invert}.json'}",
        )
        results[invert] = json.loads((a.work / f"glyphs_invert_{invert}.json").read_text())
    printed = run(
        "maml-adapt",
        f"run_dir={a.run}",
        f"support={task / 'support'}",
        f"query={task / 'query'}",
        f"out_dir={a.work / 'adapt'}",
    )
    adapted = json.loads((a.work / "adapt" / "predictions.json").read_text())
    print(printed)

    o0, o1 = steps(results["omniglot"])
    g0, g1 = steps(results["true"])
    r0, r1 = steps(results["false"])
    k = results["omniglot"]["inner_steps"]
    step = results["omniglot"]["checkpoint_step"]
    body = f"""## Cross-domain: an Omniglot run on drawn glyphs (maml-eval dataset=image_folder, maml-adapt)

Measured {today()} on {machine()} with
`python scripts/cross_domain_example.py --run {a.run}`. The run is the README's
`maml-train experiment=omniglot_5w1s dataset.path=../shared/data/omniglot`, stopped by
`train.time_limit_minutes` at step {step:,} (of the paper's 60,000). The glyph set is
`python scripts/make_image_folder.py glyphs DIR`: 100 letters, digits and symbols of Latin, Greek
and Cyrillic drawn with matplotlib's bundled DejaVu fonts, 20 examples each, every example with its
own font, slant, rotation, scale, stroke width and blur (dark ink on white, 105x105 PNG). None of
it is Omniglot; all of it is a test class. 5-way 1-shot, 1 query image per class as in training,
{a.episodes} tasks, {k} inner steps (the run's `eval.inner_steps`), mean +- 95% CI.

| tasks from | command | before adaptation | after {k} inner steps |
|---|---|---|---|
| Omniglot test split (in domain) | `maml-eval run_dir=RUN` | {fmt(o0)} | {fmt(o1)} |
| glyphs, inverted to bright ink on black (as Omniglot is read) | `maml-eval run_dir=RUN dataset=image_folder dataset.path=DIR dataset.invert=true` | {fmt(g0)} | {fmt(g1)} |
| glyphs as drawn (dark ink on white) | `maml-eval run_dir=RUN dataset=image_folder dataset.path=DIR` | {fmt(r0)} | {fmt(r1)} |

Image size (28), channels (1), ways and shots followed the run; `eval_image_folder.json` records
the folder it read (`data.source`, `data.cross_domain: true`).

One glyph task through `maml-adapt` (`python scripts/make_image_folder.py task DIR TASK --ways 5
--shots 1 --query 5`: one support image and five labelled query images per class), with
`maml-adapt run_dir=RUN support=TASK/support query=TASK/query` (Omniglot runs invert by default)
got {100 * adapted["accuracy"]:.0f}% of its {adapted["labelled_query_examples"]} query images right after {adapted["inner_steps"]} inner steps,
{100 * adapted["accuracy_before_adaptation"]:.0f}% before adaptation (one task, so no CI; the {adapted["query_examples"]} query images were normalised
together, transductive batch norm).
"""
    print(body)
    if not a.no_docs:
        replace_section(REPO / "docs" / "results.md", "cross-domain-glyphs", body)
        print("wrote docs/results.md (section cross-domain-glyphs)")


if __name__ == "__main__":
    main()
