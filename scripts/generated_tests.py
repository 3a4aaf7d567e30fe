"""Run the generated tests (tests/generated.py) and write their figures into docs/reliability.md,
section "Generated inputs and faults": per property, the examples that ran, passed and failed, and
the time.

    python scripts/generated_tests.py                  # the default profile (fixed seed, few examples)
    python scripts/generated_tests.py --fuzz --write-docs   # the long profile (about an hour), then the doc
    python scripts/generated_tests.py --fuzz --seed 7  # the long profile with a given seed

The long profile draws a fresh seed unless given one; the doc records the seed, so a failure found
there can be run again with ``python -m pytest -m fuzz --hypothesis-seed=SEED``.
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
HEADING = "## Generated inputs and faults"
STATS = re.compile(
    r"^(tests/\S+::\S+):\n(.*?)(?=^tests/|\Z|^=)",
    flags=re.S | re.M,
)


def run(fuzz: bool, seed: int, workers: str) -> tuple[int, str, float]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "fuzz" if fuzz else "generated and not slow",
        "-n",
        workers,
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
        f"--hypothesis-seed={seed}",
        "-q",
        "-o",
        "addopts=",
        "tests",
    ]
    began = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr, time.perf_counter() - began


def parse(output: str) -> list[dict]:
    """One row per property from Hypothesis's statistics."""
    rows = []
    for test, body in STATS.findall(output):
        counts = re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", body)
        seconds = sum(float(s) for s in re.findall(r"phase \(([\d.]+) seconds\)", body))
        passing = sum(int(c[0]) for c in counts)
        failing = sum(int(c[1]) for c in counts)
        invalid = sum(int(c[2]) for c in counts)
        rows.append({"test": test, "passing": passing, "failing": failing, "invalid": invalid, "seconds": seconds})
    return rows


def section(rows: list[dict], fuzz: bool, seed: int, code: int, wall: float, summary: str) -> str:
    machine = (
        f"{platform.machine()} {platform.system()}, {platform.processor() or 'CPU'}, Python {platform.python_version()}"
    )
    profile = "long profile (`python -m pytest -m fuzz`)" if fuzz else "default profile"
    lines = [
        HEADING,
        "",
        "The properties below run on inputs and faults that Hypothesis generates. No list of cases",
        "limits them. Each test states its invariants in its docstring; those that every command",
        "shares are:",
        "",
        "- exit 0, 2, or a documented stop code (130, 75), never a traceback;",
        "- any error other than a user's (exit 70) fails the test;",
        "- on exit 2, one `error:` line, and nothing created or changed;",
        "- nothing written outside the run directory, `out_dir` and the caches;",
        "- every file written whole or not at all;",
        "- no NaN or inf in a result without an error or a flag;",
        "- after a stop, a checkpoint of the last completed step, and a resume equal to the",
        "  uninterrupted run bit for bit.",
        "",
        "Two profiles (`tests/generated.py`):",
        "",
        "- **Default** (every `python -m pytest`): a fixed seed per test (`derandomize`), a few",
        "  examples each.",
        "- **Long** (`python -m pytest -m fuzz`): many examples and a fresh seed, about an hour on",
        "  2 cores. Rerun a failure with `python -m pytest -m fuzz --hypothesis-seed=SEED`.",
        "",
        "In neither profile are failures shrunk (a test that starts processes takes minutes to",
        "shrink). The failing example is printed whole instead.",
        "",
        f"Last run: the {profile}, seed {seed}, `python scripts/generated_tests.py{' --fuzz' if fuzz else ''}`,",
        f"{time.strftime('%Y-%m-%d')}, {machine}: **{summary}** in {wall / 60:.1f} min (exit code {code}).",
        "",
        "| property | examples passed | failed | rejected (e.g. `chattr` unsupported) | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['test']}` | {r['passing']} | {r['failing']} | {r['invalid']} | {r['seconds']:.0f} |")
    total = sum(r["passing"] for r in rows)
    lines += ["", f"{total} examples passed in all.", ""]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    start = doc.find(HEADING)
    if start >= 0:
        end = doc.find("\n## ", start + len(HEADING))
        doc = doc[:start] + text + ("\n" + doc[end + 1 :] if end >= 0 else "")
    else:
        anchor = doc.find("## Bad input:")
        doc = doc[:anchor] + text + "\n" + doc[anchor:]
    DOC.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fuzz", action="store_true", help="the long profile (-m fuzz)")
    parser.add_argument("--seed", type=int, help="Hypothesis's seed (the long profile draws one by default)")
    parser.add_argument("--workers", default="auto", help="pytest-xdist workers (default: one per core)")
    parser.add_argument("--write-docs", action="store_true", help="write the section into docs/reliability.md")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else (random.randrange(2**31) if args.fuzz else 0)
    code, output, wall = run(args.fuzz, seed, args.workers)
    rows = parse(output)
    summary = (re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", output, flags=re.M) or ["no summary"])[-1]
    if code:  # the failures whole (the failing example and its traceback), saved beside the doc's figures
        failures = Path(tempfile.gettempdir()) / f"maml-cli-generated-tests-{seed}.log"
        failures.write_text(output)
        print(f"failures and the whole output: {failures}", file=sys.stderr)
    print(output[-4000:])
    for r in rows:
        print(f"{r['passing']:6d} passed {r['failing']:3d} failed {r['seconds']:8.1f} s  {r['test']}")
    if args.write_docs:
        write_doc(section(rows, args.fuzz, seed, code, wall, summary))
        print(f"wrote {DOC}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
