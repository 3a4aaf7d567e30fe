"""Synthetic data in the real layouts, for tests, benchmarks and the docs' examples where the real
images are not at hand: the cost of a step depends on the shapes, not on the pixels, and a reader is
tested on the files' layout. Nothing here is data to learn from."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from maml_cli.data.miniimagenet import class_split


def synthetic_omniglot(folder: Path, seed: int = 0) -> Path:
    """Omniglot's two .npz files (964 and 659 classes of 20 drawings, 105x105) of random strokes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for name, classes in (("images_background", 964), ("images_evaluation", 659)):
        np.savez(folder / f"{name}.npz", images=rng.rand(classes, 20, 105, 105) > 0.1)
    return folder


def _striped_image(rng: np.random.RandomState, class_index: int, size: int) -> np.ndarray:
    base = np.random.RandomState(class_index)
    colour = base.randint(40, 216, size=3)
    period = 4 + class_index % 9
    angle = base.rand() * np.pi
    yy, xx = np.mgrid[:size, :size]
    shift = rng.randint(0, period)
    stripes = (((np.cos(angle) * xx + np.sin(angle) * yy + shift) // period) % 2)[..., None]
    img = colour * (0.6 + 0.4 * stripes) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_miniimagenet(
    out: Path, layout: str = "images", images_per_class: int = 600, size: int = 84, seed: int = 0
) -> Path:
    """100 classes with the real WordNet ids of Ravi & Larochelle's split; every class gets its own
    colour and stripe pattern, every image noise and a random shift, saved as JPEG. ``images``
    writes OUT/images/<wnid><8-digit index>.jpg plus train.csv/val.csv/test.csv as the original;
    ``folders`` writes OUT/{train,val,test}/<wnid>/<index>.jpg."""
    rng = np.random.RandomState(seed)
    out = Path(out)
    index = 0
    for split, wnids in class_split().items():
        rows = []
        for wnid in wnids:
            for i in range(images_per_class):
                img = Image.fromarray(_striped_image(rng, index, size))
                if layout == "images":
                    name = f"{wnid}{i + 1:08d}.jpg"
                    (out / "images").mkdir(parents=True, exist_ok=True)
                    img.save(out / "images" / name, quality=90)
                    rows.append((name, wnid))
                else:
                    folder = out / split / wnid
                    folder.mkdir(parents=True, exist_ok=True)
                    img.save(folder / f"{i:04d}.jpg", quality=90)
            index += 1
        if layout == "images":
            with open(out / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["filename", "label"])
                writer.writerows(rows)
    return out
