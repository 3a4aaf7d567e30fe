"""The lowered outer step's fingerprint: a refactoring of the engine must leave the program XLA
compiles byte for byte the same. Prints one line per preset: the SHA-256 of the lowered
(StableHLO) text of the multi-step maml-train calls first, on one device.

    python scripts/step_hash.py                  # the presets below
    python scripts/step_hash.py --presets "omniglot_5w1s algorithm=anil"

Run it before and after a change and compare the lines. Omniglot presets use random images of the
real shape (the program depends on shapes only, not on the images).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import tempfile
from pathlib import Path

import maml_cli as mc
from maml_cli.data.fakes import synthetic_omniglot
from maml_cli.engine.experiment import build_experiment

PRESETS = [
    "omniglot_5w1s",
    "omniglot_5w1s algorithm=mamlpp",
    "omniglot_5w1s algorithm=reptile",
    "omniglot_20w1s algorithm=metasgd",
    "sinusoid_paper",
    "sinusoid_paper algorithm=fomaml",
]


def fingerprint(line: str, omniglot: Path) -> str:
    preset, *overrides = shlex.split(line)
    extra = [f"dataset.path={omniglot}", f"dataset.cache_dir={omniglot / 'cache'}"] if "omniglot" in preset else []
    cfg = mc.compose(preset, [*extra, *overrides, "train.devices=1"])
    exp = build_experiment(cfg)
    state = exp.place(exp.init_state())
    length = min(cfg.train.steps_per_call, cfg.train.steps)
    lowered = exp.multi_step().lower(state, exp.data, length, exp.phase_at(0))
    return hashlib.sha256(lowered.as_text().encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        omniglot = synthetic_omniglot(Path(tmp))
        for line in args.presets:
            print(f"{fingerprint(line, omniglot)}  {line}", flush=True)


if __name__ == "__main__":
    main()
