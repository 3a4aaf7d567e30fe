"""Configuration: the schemas (``schema``), their registration with Hydra (``store``), the checks
a composed config passes (``checks``) and what a resumed run may change (``resume``). The YAML
files themselves live in ``configs/``, installed as the package ``maml_cli.configs``."""

from maml_cli.config.checks import conform, load_run_config, validate
from maml_cli.config.resume import RESUMABLE_CHANGES, resume_conflicts
from maml_cli.config.schema import (
    ALGORITHM_SCHEMAS,
    DATASET_SCHEMAS,
    IMAGE_RESAMPLE,
    MODEL_SCHEMAS,
    REGRESSION_DATASETS,
    SPLITS,
    TASK_BATCHING,
    help_of,
    metric_direction,
)
from maml_cli.config.store import register_configs
from maml_cli.errors import UserError, did_you_mean, nearest, one_of

__all__ = [
    "ALGORITHM_SCHEMAS",
    "DATASET_SCHEMAS",
    "IMAGE_RESAMPLE",
    "MODEL_SCHEMAS",
    "REGRESSION_DATASETS",
    "RESUMABLE_CHANGES",
    "SPLITS",
    "TASK_BATCHING",
    "UserError",
    "conform",
    "did_you_mean",
    "help_of",
    "load_run_config",
    "metric_direction",
    "nearest",
    "one_of",
    "register_configs",
    "resume_conflicts",
    "validate",
]
