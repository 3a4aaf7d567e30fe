"""Algorithms, found by ``algorithm.name``: each a small module over the shared inner loop and
outer step (see ``base.py`` for what an algorithm supplies)."""

from __future__ import annotations

from maml_cli import plugins
from maml_cli.meta.algorithms.anil import ANIL
from maml_cli.meta.algorithms.base import Algorithm, GradientBased, Phase
from maml_cli.meta.algorithms.maml import MAML
from maml_cli.meta.algorithms.mamlpp import MAMLPlusPlus
from maml_cli.meta.algorithms.metasgd import MetaSGD
from maml_cli.meta.algorithms.reptile import Reptile

ALGORITHMS = {
    "maml": MAML,
    "fomaml": MAML,
    "anil": ANIL,
    "metasgd": MetaSGD,
    "mamlpp": MAMLPlusPlus,
    "reptile": Reptile,
}


def build_algorithm(cfg, task_loss, execution, train_cfg) -> Algorithm:
    """``cfg``: the algorithm.* config; ``train_cfg``: train.* (the outer optimizer's settings)."""
    cls = plugins.target("algorithm", cfg.name, ALGORITHMS)  # a built-in one, or a plugin's
    return cls(cfg, task_loss, execution, train_cfg)


__all__ = ["ALGORITHMS", "Algorithm", "GradientBased", "Phase", "build_algorithm"]
