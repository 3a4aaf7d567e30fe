"""Datasets, models and algorithms that other packages add, found by name as the built-in ones are.

A package declares its plugins in the entry-point group ``maml_cli.plugins`` (as pytest and Hydra
plugins do); each entry point names a ``Plugin`` or a list of them::

    # pyproject.toml of the package "maml-toy"
    [project.entry-points."maml_cli.plugins"]
    toy = "maml_toy:PLUGINS"

Then ``dataset=NAME`` (``model=``, ``algorithm=``) composes it, its settings are checked against its
schema, ``--help`` lists them, and maml-train, maml-eval and maml-adapt build it. CONTRIBUTING.md
shows each kind. The built-in ones are registered by their own tables (``data.SAMPLERS``,
``models.BUILDERS``, ``meta.algorithms.ALGORITHMS``, ``config.schema``).

No Hydra and no JAX here: ``maml_cli.data``, ``meta`` and ``models`` ask this module for a name
they do not know.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from maml_cli.errors import UserError

GROUP = "maml_cli.plugins"
KINDS = ("dataset", "model", "algorithm")


@dataclass(frozen=True)
class Plugin:
    """``target``: a dataset's sampler class (``cls(dataset_cfg)``), a model's builder
    (``fn(model_cfg, spec, conv_impl, inner_steps) -> Network``) or an algorithm's class (a subclass
    of ``meta.algorithms.GradientBased`` or ``Algorithm``). ``schema``: the dataclass of its settings,
    extending the kind's own (``DatasetConfig``, ``ModelConfig``, ``AlgorithmConfig``), whose
    ``name`` default is the plugin's name. ``config``: a YAML file of settings over the schema's
    defaults (optional), as ``configs/<kind>/<name>.yaml`` is for a built-in one."""

    kind: str
    name: str
    target: Any
    schema: type
    config: str | Path | None = None


@functools.cache
def discovered() -> dict[tuple[str, str], Plugin]:
    """Every plugin the installed packages declare, by (kind, name); a clear error for an entry
    point that does not load or does not name plugins."""
    found = {}
    for point in entry_points(group=GROUP):
        try:
            loaded = point.load()
        except Exception as e:
            raise UserError(f"the maml_cli plugin {point.name} ({point.value}) cannot be loaded: {e}") from None
        for plugin in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
            if not isinstance(plugin, Plugin) or plugin.kind not in KINDS:
                raise UserError(
                    f"the maml_cli plugin {point.name} ({point.value}) must name a maml_cli.plugins.Plugin "
                    f"(kind one of {', '.join(KINDS)}) or a list of them"
                )
            found[plugin.kind, plugin.name] = plugin
    return found


def target(kind: str, name: str, known: dict) -> Any:
    """What builds ``kind`` ``name``: a built-in one from ``known``, else a plugin's."""
    if name in known:
        return known[name]
    plugin = discovered().get((kind, name))
    if plugin is None:
        names = sorted({*known, *(n for k, n in discovered() if k == kind)})
        raise UserError(f"unknown {kind} {name!r}; known: {', '.join(names)}")
    return plugin.target
