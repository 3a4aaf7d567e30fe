"""Hydra's side of the schemas: registered in its ConfigStore, so that the YAML files under
``configs/`` can extend them (``defaults: [_schema_...]``)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

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


def register_configs() -> None:
    """Register the schemas that the YAML files extend (``defaults: [_schema_...]``) and the
    resolvers they use."""
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
