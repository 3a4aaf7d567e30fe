"""Task samplers, found by ``dataset.name``.

A sampler has ``spec`` (a TaskSpec), ``data`` (a pytree of device arrays, or None) and
``sample(data, key, split, num_tasks, part=None) -> Episodes``, a pure function that runs inside
jit, so tasks are drawn on the device with no host round trip; ``part = (index, parts)`` returns
only that share of the same tasks, so each device of a sharded step draws only its own. ``data``
is passed as an argument rather than closed over so that datasets are not baked into compiled programs as constants.
Splits: "train", "val", "test".
"""

from __future__ import annotations

from maml_cli import plugins
from maml_cli.data.episodes import Episodes, TaskSpec
from maml_cli.data.function import FunctionTasks
from maml_cli.data.image_folder import ImageFolderTasks
from maml_cli.data.miniimagenet import MiniImageNetTasks
from maml_cli.data.omniglot import OmniglotTasks
from maml_cli.data.sinusoid import SinusoidTasks

SAMPLERS = {
    "sinusoid": SinusoidTasks,
    "omniglot": OmniglotTasks,
    "miniimagenet": MiniImageNetTasks,
    "image_folder": ImageFolderTasks,
    "function": FunctionTasks,
}


def build_sampler(dataset_cfg):
    """The sampler of ``dataset.name``: a built-in one, or a plugin's (``maml_cli.plugins``)."""
    return plugins.target("dataset", dataset_cfg.name, SAMPLERS)(dataset_cfg)


__all__ = ["Episodes", "TaskSpec", "build_sampler", "SAMPLERS"]
