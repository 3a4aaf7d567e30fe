"""Shared helpers: compose the real packaged configs with tiny overrides, run the real console
scripts."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from maml_cli.config import register_configs
from maml_cli.execution import enable_compilation_cache

register_configs()
# Entry points keep a persistent compilation cache; give the tests their own, not the user's, and
# use it in-process too: the same program (a resumed run, a phase seen before) compiles once.
os.environ.setdefault("MAML_CLI_COMPILE_CACHE", tempfile.mkdtemp(prefix="maml-cli-test-jax-cache-"))
enable_compilation_cache()

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # where pip put maml-train, maml-eval, maml-adapt, maml-report
SHARED_DATA = REPO.parent / "shared" / "data"
# Plots cost seconds per tiny run; the tests that check them turn them back on.
TINY = ["experiment=sinusoid_tiny", "train.progress=false", "train.plots=false"]


def make_cfg(*overrides: str, config_name: str = "train"):
    with initialize_config_module(config_module="maml_cli.configs", version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture
def tiny_cfg():
    def build(*overrides):
        return make_cfg(*TINY, *overrides)

    return build


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    yield


def run_command(name: str, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """One of our console scripts, as a user runs it (output captured as text)."""
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          **kwargs)
