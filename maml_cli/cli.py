"""What maml-train and maml-eval do with a command line before Hydra takes over.

Hydra creates the run directory before the task function runs and reports its own errors with
exit code 1; so the command line is checked here first, with Hydra's own parser and Compose API:
every key and group option must exist (the nearest valid one is named), the composed config must
pass the schemas and ``validate``, and the data must be there. A bad input then costs one line on
stderr, exit code 2, and no new folder. ``--help`` is generated from the schemas: the groups that
apply, every key with its value and one-line meaning, the exit codes.
"""

from __future__ import annotations

import ast
import io
import itertools
import os
import re
import sys
import tokenize
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from maml_cli import config as schema
from maml_cli.config import UserError, did_you_mean

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_CODES = (
    "Exit codes: 0 done (or nothing left to do); 2 bad input: one message says what and how to fix\n"
    "it, and nothing is created; 130 interrupted (a checkpoint was saved: run the same command to\n"
    "resume); 1 anything else (a bug: please report it with the run's train.log)."
)
ENVIRONMENT = (
    "Environment: MAML_CLI_CPU_DEVICES=auto|N JAX CPU devices to make of the cores (auto: one per\n"
    "core, at most 8; 1: one device); MAML_CLI_COMPILE_CACHE=DIR|off compiled programs (default\n"
    "~/.cache/maml-cli/jax); MAML_CLI_CACHE=DIR preprocessed datasets (default ~/.cache/maml-cli)."
)
CONFIG_MODULE = "maml_cli.configs"
# Hydra's own flags: with these the command line goes to Hydra untouched.
HYDRA_FLAGS = ("--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--package", "-p",
               "--resolve", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--version", "--experimental-rerun")
MULTIRUN_FLAGS = ("-m", "--multirun")
HELP_FLAGS = ("-h", "--help")
# Keys set from the path of a run's files; stored absolute so a run can be used from any folder.
PATH_KEYS = ("path", "data_dir", "cache_dir")


class App:
    """One console command: its config name, the groups it offers, its usage text."""

    def __init__(self, name: str, config_name: str, groups: Sequence[str], usage: str, plugins: Optional[dict] = None):
        self.name, self.config_name, self.groups, self.usage = name, config_name, tuple(groups), usage
        # "group=option" -> (module, pip package): options that need a Hydra plugin installed.
        self.plugins = plugins or {}


def fail(app: App, error: UserError) -> None:
    print(f"{app.name}: error: {error}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def main(app: App, argv: Optional[Sequence[str]], check: Callable[["CommandLine", List[DictConfig]], bool],
         job: Callable[[], None]) -> None:
    """A console script: --help, or the command line composed and checked (every job's config,
    then the app's own ``check``; False: nothing more to do; a list: Hydra overrides to add), then
    handed to the Hydra ``job``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    line = CommandLine(argv)
    try:
        if line.help:
            print(help_text(app, line.overrides), end="")
            return
        if not line.hydra_flags:
            cfgs = compose_checked(app, line.overrides, multirun=line.multirun)
            use_cores(cfgs)
            verdict = check(line, cfgs)
            if verdict is False:
                return
            argv += verdict if isinstance(verdict, list) else []
    except UserError as e:
        fail(app, e)
    sys.argv = [sys.argv[0] if sys.argv else app.name, *argv]
    job()


def use_cores(cfgs: List[DictConfig]) -> None:
    """One JAX CPU device per core before JAX starts (``execution.use_cores_as_devices``), except in
    a run over several processes."""
    from maml_cli.execution import use_cores_as_devices
    from maml_cli.parallel import wants_distributed

    try:
        use_cores_as_devices(distributed=any(wants_distributed(c.distributed) for c in cfgs if "distributed" in c))
    except ValueError as e:
        raise UserError(str(e)) from None


# --- the command line ----------------------------------------------------------------------------


class CommandLine:
    def __init__(self, argv: Sequence[str]):
        self.argv = list(argv)
        self.help = any(a in HELP_FLAGS for a in self.argv)
        self.hydra_flags = any(a.split("=")[0] in HYDRA_FLAGS for a in self.argv)
        self.multirun = any(a in MULTIRUN_FLAGS for a in self.argv)
        self.overrides = [a for a in self.argv if not a.startswith("-")]


def parse_overrides(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        first = re.sub(r"^Error parsing override ", "cannot parse ", str(e).splitlines()[0])
        raise UserError(f"{first}: write KEY=VALUE or GROUP=OPTION (values with spaces or "
                        "special characters in quotes)") from None


def flatten_keys(node, prefix: str = "") -> List[str]:
    out = []
    for k, v in node.items():
        if isinstance(v, dict):
            out += flatten_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


class Composer:
    """Hydra's Compose API over the packaged configs."""

    def __init__(self, app: App):
        self.app = app

    def __enter__(self):
        from hydra import initialize_config_module
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        self._context = initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3")
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)

    def options(self, group: str) -> List[str]:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        return sorted(o for o in loader.get_group_options(group) if not o.startswith("_"))

    def compose(self, overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            return compose(self.app.config_name, list(overrides), return_hydra_config=with_hydra)
        except (HydraException, OmegaConfBaseException) as e:
            cause = e.__cause__ or e
            text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            text = re.sub(r"Value '(.*)' of type '\w+' could not be converted to (\w+)",
                          lambda m: f"{m.group(1)!r} is not a valid {m.group(2).lower()}", text)
            where = re.sub(r"^Error merging override ", "", str(e).splitlines()[0])
            raise UserError(text if text == where else f"{where}: {text}") from None


def _values(override) -> list:
    from hydra.core.override_parser.types import ValueType

    if override.value_type == ValueType.INTERVAL_SWEEP:  # a search range (search=optuna): check its ends
        sweep = override.value()
        return [str(sweep.start), str(sweep.end)]
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    return [value] if isinstance(value, str) or value is None else [str(value)]


def check_overrides(composer: Composer, parsed: list) -> None:
    """Every group option and key on the command line must exist (for every value of a sweep)."""
    from hydra.core.override_parser.types import OverrideType

    app = composer.app
    groups = {g: composer.options(g) for g in app.groups}
    choices = {}
    for o in parsed:
        name = o.key_or_group
        if name in groups:
            values = [v for v in _values(o) if v not in (None, "null")]
            for v in values:
                if v not in groups[name]:
                    raise UserError(f"unknown {name} option {v!r}{did_you_mean(v, groups[name])}; "
                                    f"options: {', '.join(groups[name])}")
                _check_plugin(app, f"{name}={v}")
            choices[name] = values or [None]
    # The keys of every configuration the command line can compose.
    combos = list(itertools.product(*[[(g, v) for v in vs] for g, vs in choices.items()]))[:16]
    keys = set()
    for combo in combos:
        cfg = composer.compose([f"{g}={'null' if v is None else v}" for g, v in combo])
        keys.update(flatten_keys(OmegaConf.to_container(cfg, resolve=False)))
    for o in parsed:
        name = o.key_or_group
        if name in groups or name == "paper" or name.split(".")[0] == "hydra" or "/" in name:
            continue
        if o.type == OverrideType.DEL:
            continue
        if name not in keys and not any(k.startswith(name + ".") for k in keys):
            raise UserError(_unknown_key(composer, name, keys, groups, choices))
        if o.type == OverrideType.ADD:
            raise UserError(f"{name} is already a config key: set it with {name}=..., without the +")


def _check_plugin(app: App, choice: str) -> None:
    if choice not in app.plugins:
        return
    import importlib.util

    module, package = app.plugins[choice]
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{choice} needs Hydra's plugin {package}, which is not installed: "
                        'pip install "maml-cli[cluster]" (or pip install -e ".[cluster]" in a checkout)')


def _unknown_key(composer: Composer, name: str, keys: set, groups: dict, choices: dict) -> str:
    app = composer.app
    section = name.split(".")[0]
    if section in groups and section != "experiment":  # a key of another dataset, model or algorithm?
        current = [v for v in choices.get(section, [None])]
        owners = [opt for opt in groups[section] if opt not in current
                  and name in flatten_keys(OmegaConf.to_container(composer.compose([f"{section}={opt}"]),
                                                                  resolve=False))]
        if owners:
            return (f"{name} is a key of {' and '.join(f'{section}={o}' for o in owners)}, not of this "
                    f"{section}: pick {section}={owners[0]} or drop the key")
    text = f"{name} is not a {app.name} config key{did_you_mean(name, sorted(keys))}"
    if app.config_name == "eval" and section in ("train", "model", "algorithm", "seed", "experiment"):
        return text + ("; maml-eval scores a run as it was trained (its config.yaml): it changes only "
                       "the keys maml-eval --help lists")
    return text + f"; {app.name} --help lists every key"


def absolute_paths(cfg: DictConfig) -> None:
    """Store the dataset's paths absolute, so the run can be evaluated from any folder."""
    d = cfg.get("dataset")
    if d is None:
        return
    with open_dict(d):
        for key in PATH_KEYS:
            if d.get(key):
                d[key] = os.path.abspath(os.path.expanduser(d[key]))


MAX_CHECKED_JOBS = 256


def compose_checked(app: App, overrides: Sequence[str], multirun: bool = False) -> List[DictConfig]:
    """The composed configs (with the Hydra node) of every job the command line asks for: one, or
    each combination of a sweep's values, after every check that needs no data."""
    parsed = parse_overrides(overrides)
    with Composer(app) as composer:
        check_overrides(composer, parsed)
        if not (multirun and any(o.is_sweep_override() for o in parsed)):
            return [composer.compose(overrides, with_hydra=True)]
        # A sweep: compose each job now, so a bad combination fails before the first job runs.
        axes = [[f"{o.input_line.split('=', 1)[0]}={v}" for v in _values(o)] if o.is_sweep_override()
                else [o.input_line] for o in parsed]
        jobs = list(itertools.islice(itertools.product(*axes), MAX_CHECKED_JOBS))
        return [composer.compose(list(job), with_hydra=True) for job in jobs]


def split_hydra(cfg: DictConfig):
    """(the job's config, the hydra node)."""
    hydra_node = cfg.hydra
    with open_dict(cfg):
        job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    return job, hydra_node


# --- --help --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _field_comments() -> dict:
    """{(class name, field name): the comment that documents the field in config.py}."""
    source = Path(schema.__file__).read_text()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                text = comments.get(stmt.end_lineno)
                if text is None:  # a comment block on the lines above
                    above, line = [], stmt.lineno - 1
                    while line >= 1 and lines[line - 1].strip().startswith("#"):
                        above.insert(0, comments[line])
                        line -= 1
                    text = " ".join(above) or None
                if text:
                    out[(node.name, stmt.target.id)] = text
    return out


def meaning(schema_class, field_name: str) -> str:
    for cls in schema_class.__mro__:
        text = _field_comments().get((cls.__name__, field_name))
        if text:
            return text
    return ""


def _section_schemas(app: App, cfg: DictConfig) -> dict:
    if app.config_name == "adapt":
        return {"": schema.AdaptAppConfig}
    if app.config_name == "eval":
        dataset = cfg.get("dataset") or {}
        return {"": schema.EvalAppConfig, "eval": schema.EvalOverrides,
                "dataset": schema.DATASET_SCHEMAS.get(dataset.get("name"), schema.EvalDatasetOverrides)}
    return {"": schema.TrainConfig, "train": schema.TrainLoopConfig, "eval": schema.EvalConfig,
            "dataset": schema.DATASET_SCHEMAS.get(cfg.dataset.name, schema.DatasetConfig),
            "model": schema.MODEL_SCHEMAS.get(cfg.model.name, schema.ModelConfig),
            "algorithm": schema.ALGORITHM_SCHEMAS.get(cfg.algorithm.name, schema.AlgorithmConfig)}


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def key_table(app: App, cfg: DictConfig) -> List[str]:
    schemas = _section_schemas(app, cfg)
    rows = []
    plain = OmegaConf.to_container(cfg, resolve=False)
    for section, cls in schemas.items():
        node = plain if section == "" else plain.get(section, {})
        for f in fields(cls):
            if section == "" and f.name in schemas:
                continue
            if is_dataclass(f.type) or f.name not in node:
                continue
            key = f.name if section == "" else f"{section}.{f.name}"
            rows.append((f"{key}={_show(node[f.name])}", meaning(cls, f.name)))
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
        choices = {g: cfg.get(g, {}).get("name") if g != "experiment" else None for g in app.groups}
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
    parts += [EXIT_CODES, ENVIRONMENT]
    parts.append(f"Hydra's own options: {app.name} --hydra-help")
    return "\n\n".join(parts) + "\n"
