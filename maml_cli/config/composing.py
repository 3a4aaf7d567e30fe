"""Composing a config from overrides with Hydra's Compose API, checked before anything runs.

Used by the console scripts (before Hydra creates a run directory) and by ``maml_cli.compose``
in Python alike: every key and group option must exist (the nearest valid one is named), and the
composed config must pass the schemas; ``validate`` then checks the numbers together.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
from collections.abc import Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from maml_cli.backend.launch import check_distributed
from maml_cli.config import validate
from maml_cli.config.checks import check_values
from maml_cli.config.resume import flatten
from maml_cli.errors import UserError, did_you_mean
from maml_cli.run.trackers import check_logger

CONFIG_MODULE = "maml_cli.configs"
# Keys set from the path of a run's files; stored absolute so a run can be used from any folder.
PATH_KEYS = ("path", "data_dir", "cache_dir")


class App:
    """One console command: its config name, the groups it offers, its usage text."""

    def __init__(
        self,
        name: str,
        config_name: str,
        groups: Sequence[str],
        usage: str = "",
        plugins: dict | None = None,
        exit_codes: str = "",
    ):
        self.name, self.config_name, self.groups, self.usage = name, config_name, tuple(groups), usage
        self.exit_codes = exit_codes  # the --help paragraph on exit codes (commands.shell.EXIT_CODES by default)
        # "group=option" -> (module, pip package): options that need a Hydra plugin installed.
        self.plugins = plugins or {}


def parse_overrides(overrides: Sequence[str]) -> list:

    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed += parser.parse_overrides([override])
        except OverrideParseException as e:
            raise UserError(_unparsable(override, str(e))) from None
    return parsed


LEXER_ERROR = "LexerNoViableAltException: "


def _shown(text: str) -> str:
    """``text`` on one line: characters that do not print (a newline, a zero-width space) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _plain(char: str) -> bool:
    """A character Hydra's lexer takes outside quotes."""
    return char.isascii() and char.isprintable() and char not in "~!#&;^`<>\"' "


def _unparsable(override: str, error: str) -> str:
    """One line for an override Hydra's parser refused: the character its lexer stopped at (a
    letter outside ASCII, a ``~`` or ``!``, a newline) and how to quote it, else how to write one."""
    hint = "write KEY=VALUE or GROUP=OPTION (values with spaces or special characters in quotes)"
    if not error.startswith(LEXER_ERROR + override + "\n"):
        first = _shown(error.splitlines()[0] if error.strip() else "")
        if first.startswith("Error parsing override "):
            return f"cannot parse {first[len('Error parsing override ') :]}: {hint}"
        return f"cannot parse {override!r} ({first}): {hint}" if first else f"cannot parse {override!r}: {hint}"
    caret = error[len(LEXER_ERROR + override + "\n") :].split("\n")[0]
    at = caret.find("^") - len(LEXER_ERROR)
    if not 0 <= at < len(override):
        return f"cannot parse {override!r}: {hint}"
    # The lexer points at the token it could not start: the character to blame is the first there
    # that no unquoted value may hold.
    at = next((i for i in range(at, len(override)) if not _plain(override[i])), at)
    char = override[at]
    if char in "'\"":
        return f"cannot parse {override!r}: a quote ({char}) must enclose the whole value: write KEY='VALUE'"
    named = repr(char) + (f" (U+{ord(char):04X})" if not char.isascii() or not char.isprintable() else "")
    key, equals, value = override.partition("=")
    if not equals or at < len(key) + 1:
        return (
            f"cannot parse {override!r}: {named} cannot be part of a key (keys are ASCII letters, "
            "digits, _, - and .); write KEY=VALUE"
        )
    if "'" not in value:
        quoted = f"\"{key}='{value}'\""  # Hydra's quotes inside the shell's
    elif '"' not in value:
        quoted = f"'{key}=\"{value}\"'"
    else:
        return f"cannot parse {override!r}: {named} is allowed only inside quotes: {hint}"
    return f"cannot parse {override!r}: {named} is allowed only inside quotes: write {_shown(quoted)}"


def flatten_keys(node) -> list[str]:
    """The dotted keys of every leaf of a config container."""

    return list(flatten(node))


class Composer:
    """Hydra's Compose API over the packaged configs."""

    def __init__(self, app: App):
        self.app = app

    def __enter__(self):

        GlobalHydra.instance().clear()
        self._context = initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3")
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)

    def options(self, group: str) -> list[str]:

        loader = GlobalHydra.instance().config_loader()
        return sorted(o for o in loader.get_group_options(group) if not o.startswith("_"))

    def compose(self, overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:

        try:
            return compose(self.app.config_name, list(overrides), return_hydra_config=with_hydra)
        except (HydraException, OmegaConfBaseException) as e:
            cause = e.__cause__ or e
            text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            text = re.sub(
                r"Value '(.*)' of type '\w+' could not be converted to (\w+)",
                lambda m: f"{m.group(1)!r} is not a valid {m.group(2).lower()}",
                text,
            )
            where = re.sub(r"^Error merging override ", "", str(e).splitlines()[0])
            raise UserError(text if text == where else f"{where}: {text}") from None


def _values(override, options: list | None = None) -> list:
    """The values an override gives (each of a sweep's); ``options``: its group's, for glob()."""

    if override.value_type == ValueType.INTERVAL_SWEEP:  # a search range (search=optuna): check its ends
        sweep = override.value()
        return [str(sweep.start), str(sweep.end)]
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        if options is None:
            raise UserError(
                f"{override.input_line}: glob() picks options of a config group (dataset, model, algorithm, "
                "...); for other keys list the values: KEY=a,b,c"
            )
        return list(override.value().filter(options))
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    return [value] if isinstance(value, str) or value is None else [str(value)]


def check_overrides(composer: Composer, parsed: list) -> None:
    """Every group option and key on the command line must exist (for every value of a sweep)."""

    app = composer.app
    groups = {g: composer.options(g) for g in app.groups}
    choices = {}
    for o in parsed:
        name = o.key_or_group
        if name in groups:
            values = [v for v in _values(o, groups[name]) if v not in (None, "null")]
            for v in values:
                if v not in groups[name]:
                    raise UserError(
                        f"unknown {name} option {v!r}{did_you_mean(v, groups[name])}; "
                        f"options: {', '.join(groups[name])}"
                    )
                _check_plugin(app, f"{name}={v}")
            choices[name] = values or [None]
    searched = [c for c in choices.get("search", []) if c is not None]
    for o in parsed:
        if o.value_type == ValueType.INTERVAL_SWEEP and not searched:
            raise UserError(
                f"{o.input_line} is a search range: add search=optuna to search it (a grid sweep takes a "
                "list: KEY=a,b,c)"
            )
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
        if USER_KWARGS.match(name):  # keyword arguments of the user's code: any name (see open_keys)
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

    module, package = app.plugins[choice]
    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"{choice} needs Hydra's plugin {package}, which is not installed: "
            'pip install "maml-cli[cluster]" (or pip install -e ".[cluster]" in a checkout)'
        )


def _unknown_key(composer: Composer, name: str, keys: set, groups: dict, choices: dict) -> str:
    app = composer.app
    section = name.split(".")[0]
    if section in groups and section != "experiment":  # a key of another dataset, model or algorithm?
        current = list(choices.get(section, [None]))
        owners = [
            opt
            for opt in groups[section]
            if opt not in current
            and name in flatten_keys(OmegaConf.to_container(composer.compose([f"{section}={opt}"]), resolve=False))
        ]
        if owners:
            return (
                f"{name} is a key of {' and '.join(f'{section}={o}' for o in owners)}, not of this "
                f"{section}: pick {section}={owners[0]} or drop the key"
            )
    text = f"{name} is not a {app.name} config key{did_you_mean(name, sorted(keys))}"
    if app.config_name == "eval" and section in ("train", "model", "algorithm", "seed", "experiment"):
        return text + (
            "; maml-eval scores a run as it was trained (its config.yaml): it changes only "
            "the keys maml-eval --help lists"
        )
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


USER_KWARGS = re.compile(r"^(model|dataset)\.kwargs\.")


def open_keys(overrides: Sequence[str]) -> list[str]:
    """``model.kwargs.NAME=V`` (and ``dataset.kwargs``) as Hydra's add-or-replace ``++``: the keyword
    arguments of a user's code are free-form, so any name may be set without Hydra's ``+``."""
    return [f"++{o}" if USER_KWARGS.match(o) else o for o in overrides]


def compose_checked(app: App, overrides: Sequence[str], multirun: bool = False) -> list[DictConfig]:
    """The composed configs (with the Hydra node) of every job the command line asks for: one, or
    each combination of a sweep's values, after every check that needs no data."""
    overrides = open_keys(overrides)
    parsed = parse_overrides(overrides)
    with Composer(app) as composer:
        check_overrides(composer, parsed)
        if not (multirun and any(o.is_sweep_override() for o in parsed)):
            configs = [composer.compose(overrides, with_hydra=True)]
        else:
            # A sweep: compose each job now, so a bad combination fails before the first job runs.
            axes = [
                [
                    f"{o.input_line.split('=', 1)[0]}={v}"
                    for v in _values(o, composer.options(o.key_or_group) if o.key_or_group in app.groups else None)
                ]
                if o.is_sweep_override()
                else [o.input_line]
                for o in parsed
            ]
            jobs = list(itertools.islice(itertools.product(*axes), MAX_CHECKED_JOBS))
            configs = [composer.compose(list(job), with_hydra=True) for job in jobs]
    if app.config_name != "train":  # maml-eval's, maml-adapt's numbers; maml-train's: validate (prepare)
        for cfg in configs:
            check_values(cfg)
    return configs


def split_hydra(cfg: DictConfig):
    """(the job's config, the hydra node)."""
    hydra_node = cfg.hydra
    with open_dict(cfg):
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return job, hydra_node


def prepare(cfg: DictConfig) -> DictConfig:
    """The checks every training job's config passes, composed from the shell, inside a sweep or
    from Python: paths made absolute, ``validate``, the multi-process settings."""

    absolute_paths(cfg)
    validate(cfg)
    check_distributed(cfg.distributed)
    check_logger(cfg.logger)
    return cfg
