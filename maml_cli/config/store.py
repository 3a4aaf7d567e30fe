"""Hydra's side of the schemas: registered in its ConfigStore, so that the YAML files under
``configs/`` can extend them (``defaults: [_schema_...]``)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from maml_cli import plugins
from maml_cli.config.schema import (
    ALGORITHM_SCHEMAS,
    DATASET_SCHEMAS,
    LOGGER_SCHEMAS,
    MODEL_SCHEMAS,
    AdaptAppConfig,
    EvalAppConfig,
    EvalDatasetOverrides,
    TrainConfig,
    metric_direction,
)
from maml_cli.errors import UserError


def register_configs() -> None:
    """Register the schemas that the YAML files extend (``defaults: [_schema_...]``), the
    resolvers they use, and the plugins of installed packages (``maml_cli.plugins``)."""
    register_plugins()
    if not OmegaConf.has_resolver("metric_direction"):
        OmegaConf.register_new_resolver("metric_direction", metric_direction)
    cs = ConfigStore.instance()
    cs.store(name="_train_schema", node=TrainConfig)
    cs.store(name="_eval_schema", node=EvalAppConfig)
    cs.store(name="_adapt_schema", node=AdaptAppConfig)
    cs.store(group="dataset", name="_schema_run_data", node=EvalDatasetOverrides)
    for name, node in DATASET_SCHEMAS.items():
        cs.store(group="dataset", name=f"_schema_{name}", node=node)
    for name, node in MODEL_SCHEMAS.items():
        cs.store(group="model", name=f"_schema_{name}", node=node)
    for name, node in ALGORITHM_SCHEMAS.items():
        cs.store(group="algorithm", name=f"_schema_{name}", node=node)
    for name, node in LOGGER_SCHEMAS.items():
        cs.store(group="logger", name=f"_schema_{name}", node=node)


SCHEMAS = {"dataset": DATASET_SCHEMAS, "model": MODEL_SCHEMAS, "algorithm": ALGORITHM_SCHEMAS}


def register_plugins() -> None:
    """Each plugin's schema among the built-in ones (so its settings are checked and listed by
    ``--help``) and its option in Hydra's group (``dataset=NAME``): the schema's defaults under the
    settings of its YAML file, if it has one."""
    cs = ConfigStore.instance()
    for (kind, name), plugin in plugins.discovered().items():
        if name in SCHEMAS[kind] and SCHEMAS[kind][name] is not plugin.schema:
            raise UserError(f"the maml_cli plugin {kind} {name!r} has the name of a built-in {kind}: rename it")
        SCHEMAS[kind][name] = plugin.schema
        node = OmegaConf.structured(plugin.schema)
        if plugin.config is not None:
            settings = OmegaConf.load(plugin.config)
            settings.pop("defaults", None)
            node = OmegaConf.merge(node, settings)
        cs.store(group=kind, name=f"_schema_{name}", node=plugin.schema)
        cs.store(group=kind, name=name, node=node)
