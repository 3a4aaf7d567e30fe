"""Omniglot N-way K-shot tasks, as in the MAML paper: all 1623 characters pooled and split at
random (fixed seed) into meta-train (1200, of which 100 meta-validation) and meta-test (423);
every class of a task rotated by a random multiple of 90 degrees."""

from __future__ import annotations

import numpy as np

from maml_cli.data.episodes import ImageClassTasks
from maml_cli.data.omniglot_source import OmniglotArrays, load_omniglot
from maml_cli.errors import UserError, one_of

SPLIT_MODES = ("paper", "official")


def class_splits(
    arrays: OmniglotArrays, mode: str, seed: int, train_classes: int, val_classes: int
) -> dict[str, np.ndarray]:
    """Character indices of the train / val / test splits; disjoint, and fixed by ``seed``."""
    rng = np.random.RandomState(seed)
    ranges = arrays.set_ranges()
    if mode == "paper":
        total = sum(arrays.sets.values())
        if not 0 < val_classes < train_classes < total:
            raise UserError(
                f"the paper split needs 0 < dataset.val_classes ({val_classes}) < dataset.train_classes "
                f"({train_classes}) < characters in the source ({total})"
            )
        order = rng.permutation(total)
        meta_train = order[:train_classes]
        return {
            "train": meta_train[: train_classes - val_classes],
            "val": meta_train[train_classes - val_classes :],
            "test": order[train_classes:],
        }
    if mode == "official":
        if not {"images_background", "images_evaluation"} <= set(ranges):
            raise UserError(
                "dataset.split=official needs both images_background and images_evaluation; "
                f"the source holds {', '.join(ranges)}"
            )
        background = rng.permutation(ranges["images_background"])
        if not 0 < val_classes < len(background):
            raise UserError(f"dataset.val_classes must be in 1..{len(background) - 1} (got {val_classes})")
        return {
            "train": background[:-val_classes],
            "val": background[-val_classes:],
            "test": ranges["images_evaluation"],
        }
    raise UserError(one_of("dataset.split", mode, SPLIT_MODES))


class OmniglotTasks(ImageClassTasks):
    def __init__(self, cfg):
        arrays = load_omniglot(
            cfg.path, image_size=cfg.image_size, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir, resample=cfg.resample
        )
        splits = class_splits(arrays, cfg.split, cfg.split_seed, cfg.train_classes, cfg.val_classes)
        super().__init__(cfg, arrays.images, splits, rotate=cfg.rotate, what="Omniglot")
        self.source = arrays.source
