"""What every console script does with its command line first: ``--help``, then the command line
composed and checked (``maml_cli.config.composing``) and the command's own checks, then its job.

maml-train's job is a Hydra app, and Hydra creates the run directory before the task function runs
and reports its own errors with exit code 1; so the command line is checked here first, with
Hydra's own parser and Compose API: every key and group option must exist (the nearest valid one is
named), the composed config must pass the schemas and ``validate``, and the data must be there.
maml-eval and maml-adapt run their jobs right here, in this process. A bad input then costs one line on
stderr, exit code 2, and no new folder. ``--help`` is generated from the schemas: the groups that
apply, every key with its value and one-line meaning, the exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from maml_cli.backend.launch import wants_distributed
from maml_cli.commands.boundary import (  # noqa: F401 (the commands' one boundary, re-exported)
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_REQUEUE,
    EXIT_USER_ERROR,
    guarded,
    internal_error,
    jax_settings,
    report,
)
from maml_cli.config import schema
from maml_cli.config.composing import App, Composer, compose_checked, open_keys
from maml_cli.errors import UserError
from maml_cli.paths import CACHE_ENV, check_writable_dir, default_cache_dir
from maml_cli.run.directory import is_run

EXIT_OK = 0
_INTERNAL_TEXT = (
    "70 internal error: a bug of ours; one line names the file that holds the traceback, please\n"
    "report it with that file."
)
EXIT_CODES = (
    "Exit codes: 0 done (or nothing left to do); 2 bad input: one message says what and how to fix\n"
    "it, and nothing is created; 130 interrupted by Ctrl-C (a checkpoint was saved: run the same\n"
    "command to resume; a second Ctrl-C stops at once); 75 stopped by SIGTERM, SIGHUP, SIGUSR1 or\n"
    "SIGUSR2, a scheduler's preemption or time limit (a checkpoint was saved: requeue the same\n"
    "command); 1 a sweep (-m) in which some jobs failed (each one's reason is in its train.log);\n" + _INTERNAL_TEXT
)
READER_EXIT_CODES = (
    "Exit codes: 0 done; 2 bad input: one message says what and how to fix it, and nothing is\n"
    "written; 130 interrupted by Ctrl-C, 75 stopped by SIGTERM, SIGHUP, SIGUSR1 or SIGUSR2\n"
    "(nothing half-written: run it again);\n" + _INTERNAL_TEXT
)
ENVIRONMENT = (
    "Environment: MAML_CLI_CPU_DEVICES=auto|N JAX CPU devices to make of the cores (auto: one per\n"
    "core, at most 8; 1: one device); MAML_CLI_CACHE=DIR preprocessed datasets and compiled programs\n"
    "(default ~/.cache/maml-cli), shared safely by jobs running at once; MAML_CLI_COMPILE_CACHE=DIR|off\n"
    "compiled programs alone (default $MAML_CLI_CACHE/jax), MAML_CLI_COMPILE_CACHE_GB=N its bound (4)."
)
# Hydra's own flags: with these the command line goes to Hydra untouched.
HYDRA_FLAGS = (
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--package",
    "-p",
    "--resolve",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--version",
    "--experimental-rerun",
)
MULTIRUN_FLAGS = ("-m", "--multirun")
HELP_FLAGS = ("-h", "--help")


def fail(app: App, error: UserError) -> None:
    print(f"{app.name}: error: {error}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def main(
    app: App,
    argv: Sequence[str] | None,
    check: Callable[[CommandLine, list[DictConfig]], bool],
    job: Callable[[], None],
) -> CommandLine:
    """A console script: --help, or the command line composed and checked (every job's config,
    the caches, then the app's own ``check``; False: nothing more to do; a list: Hydra overrides to
    add), then handed to the Hydra ``job``. Errors are reported by the command's ``guarded``
    boundary."""
    argv = open_keys(sys.argv[1:] if argv is None else argv)
    line = CommandLine(argv)
    if line.help:
        print(help_text(app, line.overrides), end="")
        return line
    if not line.hydra_flags:
        check_jax_settings()
        cfgs = compose_checked(app, line.overrides, multirun=line.multirun)
        check_caches(cfgs)
        use_cores(cfgs)
        verdict = check(line, cfgs)
        if verdict is False:
            return line
        argv += verdict if isinstance(verdict, list) else []
    sys.argv = [sys.argv[0] if sys.argv else app.name, *argv]
    job()
    return line


# Settings of JAX that change what is computed, which maml-cli does not support: its checkpoints,
# plans and figures are float32 and compiled (a run resumed with float64 silently mixed both).
UNSUPPORTED_JAX = {
    "JAX_ENABLE_X64": "maml-cli computes in float32 (its checkpoints and figures assume it)",
    "JAX_DISABLE_JIT": "maml-cli compiles its steps ahead of time",
}


def check_jax_settings() -> None:
    for variable, why in UNSUPPORTED_JAX.items():
        if os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no", "off"):
            raise UserError(f"{variable}={os.environ[variable]} is not supported: {why}; unset it")


def check_caches(cfgs: list[DictConfig]) -> None:
    """Refuse, before anything is read or written, a cache that is empty (it would land in the
    working directory) or cannot be written: the compilation cache, $MAML_CLI_CACHE when it is set
    or used, and each job's dataset.cache_dir."""
    from maml_cli.backend.compilation import compilation_cache_dir, compilation_cache_gigabytes

    compilation_cache_dir()
    compilation_cache_gigabytes()
    folders = {}
    if os.environ.get(CACHE_ENV) is not None:
        folders[default_cache_dir()] = CACHE_ENV
    for cfg in cfgs:
        dataset = cfg.get("dataset")
        if isinstance(dataset, DictConfig) and "cache_dir" in dataset:
            if dataset.cache_dir:
                folders.setdefault(Path(str(dataset.cache_dir)), "dataset.cache_dir")
            else:
                folders.setdefault(default_cache_dir(), CACHE_ENV)

    for folder, what in folders.items():
        check_writable_dir(folder, what)
        if is_run(folder):
            raise UserError(f"{what}={folder} is a run directory: the cache goes in a folder of its own")


def use_cores(cfgs: list[DictConfig]) -> None:
    """One JAX CPU device per core before JAX starts (``processes.use_cores_as_devices``), then JAX
    started, except in a run over several processes (it joins the others first). An environment
    JAX refuses (JAX_PLATFORMS=gpu on a machine without one) is one line here, before anything is
    created."""
    import jax

    from maml_cli.backend.processes import use_cores_as_devices

    distributed = any(wants_distributed(c.distributed) for c in cfgs if "distributed" in c)
    try:
        use_cores_as_devices(distributed=distributed)
    except ValueError as e:
        raise UserError(str(e)) from None
    if distributed:
        return
    try:
        jax.devices()
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        settings = jax_settings()
        raise UserError(f"JAX could not start{' with ' + settings if settings else ''}: {first}") from None


# --- the command line ----------------------------------------------------------------------------


class CommandLine:
    def __init__(self, argv: Sequence[str]):
        self.argv = list(argv)
        self.help = any(a in HELP_FLAGS for a in self.argv)
        self.hydra_flags = any(a.split("=")[0] in HYDRA_FLAGS for a in self.argv)
        self.multirun = any(a in MULTIRUN_FLAGS for a in self.argv)
        self.overrides = [a for a in self.argv if not a.startswith("-")]
        self.sweep_dir = None  # a sweep's folder, pinned before Hydra starts (maml-train -m)


# --- --help --------------------------------------------------------------------------------------


def _section_schemas(app: App, cfg: DictConfig) -> dict:
    if app.config_name == "adapt":
        return {"": schema.AdaptAppConfig}
    if app.config_name == "eval":
        dataset = cfg.get("dataset") or {}
        return {
            "": schema.EvalAppConfig,
            "eval": schema.EvalOverrides,
            "dataset": schema.DATASET_SCHEMAS.get(dataset.get("name"), schema.EvalDatasetOverrides),
        }
    return {
        "": schema.TrainConfig,
        "train": schema.TrainLoopConfig,
        "eval": schema.EvalConfig,
        "distributed": schema.DistributedConfig,
        "logger": schema.LOGGER_SCHEMAS.get(cfg.logger.name, schema.LoggerConfig),
        "dataset": schema.DATASET_SCHEMAS.get(cfg.dataset.name, schema.DatasetConfig),
        "model": schema.MODEL_SCHEMAS.get(cfg.model.name, schema.ModelConfig),
        "algorithm": schema.ALGORITHM_SCHEMAS.get(cfg.algorithm.name, schema.AlgorithmConfig),
    }


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def key_table(app: App, cfg: DictConfig) -> list[str]:
    schemas = _section_schemas(app, cfg)
    rows = []
    plain = OmegaConf.to_container(cfg, resolve=False)
    for section, cls in schemas.items():
        node = plain if section == "" else plain.get(section, {})
        for f in fields(cls):
            if section == "" and f.name in schemas:
                continue
            if f.name not in node or isinstance(node[f.name], dict) and section == "":
                continue
            key = f.name if section == "" else f"{section}.{f.name}"
            text, allowed = schema.help_of(cls, f.name), schema.range_of(cls, f.name)
            rows.append((f"{key}={_show(node[f.name])}", text + (f" [{allowed.describe()}]" if allowed else "")))
    width = min(max(len(k) for k, _ in rows) + 2, 40)
    out = []
    for key, text in rows:
        if len(key) >= width:
            out.append(f"  {key}")
            key = ""
        out.append(f"  {key:<{width}}{text}".rstrip())
    return out


def help_text(app: App, overrides: Sequence[str]) -> str:
    """The --help page for the config the given overrides pick (``algorithm=mamlpp --help`` shows
    MAML++'s keys)."""
    groups_on_line = [o for o in overrides if o.split("=")[0] in app.groups]
    with Composer(app) as composer:
        try:
            cfg = composer.compose(groups_on_line)
        except UserError:
            cfg = composer.compose([])
        choices = {g: (cfg.get(g) or {}).get("name") if g != "experiment" else None for g in app.groups}
        for o in groups_on_line:
            g, _, v = o.partition("=")
            choices[g] = v
        group_lines = []
        for g in app.groups:
            opts = [f"*{o}" if o == choices.get(g) else o for o in composer.options(g)]
            group_lines.append(f"  {g:<11} {', '.join(opts)}")
    parts = [app.usage.rstrip()]
    if group_lines:
        parts.append("Groups (GROUP=OPTION; * the current choice):\n" + "\n".join(group_lines))
    parts.append("Keys (KEY=VALUE; shown with the value they take now):\n" + "\n".join(key_table(app, cfg)))
    parts += [app.exit_codes or EXIT_CODES, ENVIRONMENT]
    parts.append(f"Hydra's own options: {app.name} --hydra-help")
    return "\n\n".join(parts) + "\n"
