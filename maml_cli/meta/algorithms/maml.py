"""MAML (Finn et al. 2017): learn an initialisation from which a few SGD steps on a task's support
set give a low loss on its query set; the meta-gradient goes through the inner gradients (second
order). FOMAML is the same with ``algorithm.first_order=true``: the inner gradients are treated as
constants. Everything is the shared gradient-based machinery with a fixed inner step size."""

from __future__ import annotations

from maml_cli.meta.algorithms.base import GradientBased


class MAML(GradientBased):
    pass
