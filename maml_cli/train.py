"""maml-train: compose the config with Hydra, check it, and hand over to the training loop.

    maml-train                                   # sinusoid, paper hyperparameters, 10k steps
    maml-train experiment=sinusoid_paper         # the MAML paper's sinusoid protocol
    maml-train hydra.run.dir=runs/sine           # run again with the same dir to resume
    maml-train -m algorithm.inner_lr=0.001,0.01 seed=0,1   # a sweep, one directory per job
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from maml_cli.config import UserError, register_configs, validate

log = logging.getLogger("maml_cli.train")
register_configs()
# Orbax logs every save at INFO through absl; keep the terminal for our own messages.
for _name in ("absl", "jax._src.xla_bridge"):
    logging.getLogger(_name).setLevel(logging.WARNING)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


@hydra.main(version_base="1.3", config_path="pkg://maml_cli.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from maml_cli.execution import enable_compilation_cache
    from maml_cli.trainer import TrainingInterrupted, train_and_evaluate

    enable_compilation_cache()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(cfg)
        val = train_and_evaluate(cfg, run_dir)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        sys.exit(EXIT_INTERRUPTED)
    except UserError as e:
        log.error("%s", e)
        sys.exit(EXIT_USER_ERROR)
    log.info("run directory: %s", run_dir)
    # The value a sweeper optimises: the validation metric after the trained number of steps.
    return val.get("val/mse", val.get("val/accuracy"))


if __name__ == "__main__":
    main()
