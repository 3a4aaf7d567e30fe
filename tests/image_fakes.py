"""Small class-per-folder image sets written as PNG, for dataset=image_folder and maml-adapt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def class_image(c: int, i: int, size: int, channels: int = 1) -> np.ndarray:
    """uint8 [size, size(, 3)]: class ``c`` is its brightness, image ``i`` a bright pixel's place,
    so a drawn image says which class and which file it came from."""
    img = np.full((size, size), 10 + 7 * c, np.uint8)
    img[i // size % size, i % size] = 255
    return np.repeat(img[..., None], 3, axis=-1) if channels == 3 else img


def write_classes(root: Path, counts: Sequence[int], size: int = 8, channels: int = 1, prefix: str = "class") -> Path:
    """``root/<prefix>NN/MM.png``: class NN with counts[NN] images."""
    for c, n in enumerate(counts):
        folder = Path(root) / f"{prefix}{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(class_image(c, i, size, channels)).save(folder / f"{i:02d}.png")
    return Path(root)


def write_splits(root: Path, classes: Sequence[int], per_class: int, size: int = 8) -> Path:
    """``root/{train,val,test}/classNN/``, with classes[i] classes in split i."""
    start = 0
    for split, n in zip(("train", "val", "test"), classes):
        for c in range(start, start + n):
            folder = Path(root) / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(class_image(c, i, size)).save(folder / f"{i:02d}.png")
        start += n
    return Path(root)


def write_bad_folders(root: Path) -> Path:
    """The broken folders of docs/reliability.md's image_folder rows."""
    root = Path(root)
    write_classes(root / "few", [3, 3, 1, 3, 3, 3])  # class02 holds one image
    write_classes(root / "empty_class", [3, 3, 3])
    (root / "empty_class" / "class03").mkdir()
    write_classes(root / "broken", [3, 3, 3, 3, 3, 3])
    (root / "broken" / "class01" / "03.png").write_bytes(b"this is not a png")
    write_classes(root / "mixed", [3, 3, 3, 3, 3])
    write_classes(root / "mixed_colour", [3], channels=3, prefix="colour")
    (root / "mixed_colour" / "colour00").rename(root / "mixed" / "colour05")
    (root / "mixed_colour").rmdir()
    return root
