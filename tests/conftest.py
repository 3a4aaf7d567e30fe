"""Shared helpers: compose the real packaged configs with tiny overrides, run the real console
scripts."""

from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jax
import pytest
from hydra import compose, initialize_config_module

from maml_cli.backend.compilation import compilation_cache_dir, enable_compilation_cache
from maml_cli.config import register_configs
from tests.generated import FUZZ_ENV

register_configs()
# Entry points keep a persistent compilation cache; give the tests their own, not the user's, and
# use it in-process too: the same program (a resumed run, a phase seen before) compiles once.
if "MAML_CLI_COMPILE_CACHE" not in os.environ:  # this process's own, removed when it ends
    os.environ["MAML_CLI_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="maml-cli-test-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["MAML_CLI_COMPILE_CACHE"], ignore_errors=True)
# The tests' programs are tiny and compiled once each, so compiling is most of their time: XLA's
# backend optimisations are turned off for them (and the commands they start), which changes float
# rounding at the last bits, never the math (tests compare within float32 tolerances). Set
# MAML_CLI_TEST_XLA_FLAGS="" to test with XLA's defaults.
TEST_XLA_FLAGS = os.environ.get("MAML_CLI_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
enable_compilation_cache(compilation_cache_dir())
# JAX starts now, as one CPU device: maml_cli.train (use_cores_as_devices) must not re-plan the
# devices of this process halfway through the tests; tests of several devices use subprocesses.
jax.devices()

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # where pip put maml-train, maml-eval, maml-adapt, maml-report
SHARED_DATA = REPO.parent / "shared" / "data"
# Plots cost seconds per tiny run; the tests that check them turn them back on.
TINY = ["experiment=sinusoid_tiny", "train.progress=false", "train.plots=false"]


def pytest_configure(config):
    """``-m fuzz`` selects the generated tests' long profile (tests/generated.py)."""
    if re.search(r"(?<!not )\bfuzz\b", config.getoption("markexpr") or ""):
        os.environ[FUZZ_ENV] = "1"


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core and one more. Many tests wait on a command they started (a
    compile in a child process, a signal's moment, an unreachable host's timeout) while their worker
    sits idle; the extra worker keeps the cores busy then."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return cores + 1


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Every generated test also runs in the long profile, which ``-m fuzz`` selects."""
    for item in items:
        if item.get_closest_marker("generated"):
            item.add_marker(pytest.mark.fuzz)


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
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def run_in_process(name: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """A console script's ``main`` run in this process, seen as a shell sees it: exit code, stdout,
    stderr (an uncaught exception prints its traceback and exits 1, as Python does). For checks of
    what a command says, where starting a process would only cost time."""
    import jax

    from maml_cli.commands import adapt, evaluate, report, train

    jax.devices()  # JAX started as the tests run it: a command must not re-plan this process's devices
    main = {"maml-train": train.main, "maml-eval": evaluate.main, "maml-adapt": adapt.main, "maml-report": report.main}[
        name
    ]
    out, err, code = io.StringIO(), io.StringIO(), 0
    previous, argv = os.getcwd(), sys.argv
    sys.argv = [name, *map(str, args)]  # as the console script sees it (run records name the command)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(previous)
        sys.argv = argv
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())
