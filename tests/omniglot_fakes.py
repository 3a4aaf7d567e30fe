"""Tiny Omniglot look-alikes in every source format, made inside the tests."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 105


def fake_sets(background=10, evaluation=8, drawers=4, seed=0):
    """{set name: bool [characters, drawers, 105, 105]} with True = white paper, each image unique."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, count in (("images_background", background), ("images_evaluation", evaluation)):
        paper = np.ones((count, drawers, SIZE, SIZE), bool)
        for c in range(count):
            for d in range(drawers):
                r, k = rng.randint(10, 80, size=2)
                paper[c, d, r : r + 15, k : k + 4 + c % 7] = False  # a stroke
                paper[c, d, 5 + d, 5:20] = False
        out[name] = paper
    return out


def write_npz(root: Path, sets) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, paper in sets.items():
        labels = np.repeat(np.arange(paper.shape[0])[:, None], paper.shape[1], 1)
        np.savez_compressed(root / f"{name}.npz", images=paper, labels=labels)
    return root


def write_png_tree(root: Path, sets, number_offset: int = 0) -> Path:
    """images_background/<alphabet>/characterXX/NNNN_DD.png, alphabets named against numeric
    order (so a reader that sorts by folder name gets the order wrong), drawers written last-first."""
    for name, paper in sets.items():
        first = 1 + number_offset + (0 if name == "images_background" else 5000)
        for c in range(paper.shape[0]):
            alphabet = "Zeta" if c < paper.shape[0] // 2 else "Alpha"
            folder = root / name / alphabet / f"character{c + 1:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for d in reversed(range(paper.shape[1])):
                Image.fromarray(paper[c, d]).save(folder / f"{first + c:04d}_{d + 1:02d}.png")
    return root


def write_zips(root: Path, sets) -> Path:
    tree = write_png_tree(root / "_tree", sets)
    for name in sets:
        with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
            for f in sorted((tree / name).rglob("*")):
                zf.write(f, f.relative_to(tree).as_posix())
    import shutil

    shutil.rmtree(tree)
    return root
